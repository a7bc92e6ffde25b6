"""Server side of an AMQP 0-9-1 connection, sans-IO: bytes in -> events out; calls in -> bytes out.

Rules of this module (everything that affects the connection state machine lives here):

* Frames are read by the shared :class:`~.frames.FrameReader` loop; what it does not take on its hot
  path comes to ``_frame`` here. Nothing a peer sends raises: every bad input becomes what RabbitMQ 3.10
  does for it (rabbit_reader.erl, rabbit_command_assembler.erl, rabbit_channel.erl): a connection.close /
  channel.close with its code, or a silent close during the handshake ("we don't trust the client at
  this point").
* The connection's states are :class:`State`; channel 0 is the table ``_CHANNEL0`` of (state, method)
  -> (handler, next state), and the host's two decisions are ``_DECISIONS`` (h11's ``_state.py`` shape).
* Time is an input (``now``); timers are ``next_timer()`` / ``handle_timer(now)`` (aioquic style).
* Output is a list of byte strings joined once in ``data_to_send``.
* While the front end decides a login (after ConnectionStartOk) or a vhost (after ConnectionOpen)
  parsing pauses, as RabbitMQ's reader does by deciding synchronously; bytes received meanwhile are kept
  and parsed by the next ``receive_data`` call (``receive_data(b"", now)`` is fine).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from enum import IntEnum
from typing import Any, ClassVar, NoReturn

from pamqp import base, commands

from . import codec
from .codec import FRAME_END, FRAME_END_BYTE, DecodeError
from .errors import AMQPError, ChannelError, ReplyCode, is_hard
from .events import (
    AckReceived,
    ChannelCloseReceived,
    ChannelOpened,
    ConnectionCloseReceived,
    ConnectionOpen,
    ConnectionStartOk,
    ConnectionTerminated,
    Event,
    MethodReceived,
)
from .frames import EXPECT_HEADER, EXPECT_METHOD, ChannelAssembly, FrameReader
from .sasl import DEFAULT_MECHANISMS, Mechanism

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

#: rabbit.handshake_timeout default: the handshake must complete (connection.open-ok) within 10 s.
HANDSHAKE_TIMEOUT = 10.0
#: rabbit_reader ?CLOSING_TIMEOUT: after we send connection.close we wait this long for close-ok.
CLOSING_TIMEOUT = 30.0
#: rabbit_channel ?MAX_MSG_SIZE: when max_message_size equals it RabbitMQ words the error differently.
RABBIT_MAX_MSG_SIZE = 536870912
#: send_deliver's memo of codec.deliver_packer results, per connection; cleared when full.
_DELIVER_PACKERS_MAX = 256


class State(IntEnum):
    """Connection states, as rabbit_reader names them in "unexpected method in connection state ~w"."""

    HEADER = 0  # waiting for the protocol header
    STARTING = 1  # connection.start sent, waiting for start-ok
    SECURING = 2  # start-ok decoded: the host decides the login (parsing paused)
    TUNING = 3  # connection.tune sent, waiting for tune-ok
    OPENING = 4  # waiting for connection.open
    OPEN_PENDING = 5  # connection.open arrived: the host decides the vhost (parsing paused)
    RUNNING = 6
    CLOSING = 7  # we sent connection.close: only close / close-ok matter now
    TERMINATED = 8

    @property
    def rabbit_name(self) -> str:
        return "opening" if self is State.OPEN_PENDING else self.name.lower()


#: The host decides: parsing waits until it calls accept_* / refuse_* / close_connection.
_PAUSED = frozenset({State.SECURING, State.OPEN_PENDING})
#: RabbitMQ closes silently on any error in these states (rabbit_reader:handle_exception/3 last clause);
#: the one exception is a failed tune negotiation (not_allowed while tuning), which is answered.
_SILENT = frozenset({State.STARTING, State.SECURING, State.TUNING})

_INDEX = commands.INDEX_MAPPING
_PUBLISH = codec.PUBLISH_INDEX
_ACK = codec.ACK_INDEX
_CONTENT_METHODS = frozenset({commands.Basic.Publish.index, commands.Basic.Return.index,
                              commands.Basic.Deliver.index, commands.Basic.GetOk.index})
_CHANNEL_OPEN = commands.Channel.Open.index
_METHOD_ID = struct.Struct(">I")
_new = object.__new__


def _ids(index: int) -> tuple[int, int]:
    return index >> 16, index & 0xFFFF


def _truncate(text: str) -> str:
    raw = text.encode()
    if len(raw) <= 255:
        return text
    return raw[:255].decode(errors="ignore")


_Handler = Callable[["ServerConnection", list[Event], Any], None]


class _Halt(Exception):
    """Internal: a hard error was handled; stop processing the current frame."""


class ServerConnection(FrameReader[ChannelAssembly]):
    """One AMQP 0-9-1 server connection. See docs/amqp091.md."""

    HOT_CONTENT = _PUBLISH
    HOT_CONTENT_MEMO = codec.PUBLISH_CACHE
    HOT_ACKS = frozenset({_ACK})
    ACK_EVENT = AckReceived
    _decode_hot_content = staticmethod(codec.decode_publish_cached)

    def __init__(self, *, server_properties: dict[str, Any], frame_max: int = 131072, channel_max: int = 2047,
                 heartbeat: int = 60, max_message_size: int = 16 * 1024 * 1024, now: float = 0.0,
                 answer_in_order: bool = False, mechanisms: Iterable[Mechanism] = DEFAULT_MECHANISMS) -> None:
        # answer_in_order: a host that answers events (the broker's front end) sets it, so that parsing
        # stops before a frame this layer would answer itself until the events before it are answered
        # (see ``more_input``); replies then leave in the order their requests arrived, as RabbitMQ's.
        # Bounds: frame_max 131072 and channel_max 2047 are RabbitMQ 3.10's defaults; heartbeat 60 s too.
        # max_message_size 16 MiB is ours (RabbitMQ 3.10: 128 MiB): bodies are buffered in memory.
        # mechanisms: the SASL mechanisms offered in connection.start, in order (see .sasl).
        super().__init__()
        self.server_properties = server_properties
        self._server_frame_max = frame_max
        self._server_channel_max = channel_max
        self._server_heartbeat = heartbeat
        self.max_message_size = max_message_size
        self._mechanisms = {m.name: m for m in mechanisms}
        # Negotiated values; before tune-ok RabbitMQ enforces frame-min-size (4096).
        self.frame_max = codec.FRAME_MIN_SIZE
        self.channel_max = channel_max
        self.heartbeat = 0
        self.client_properties: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self.mechanism = ""
        self.virtual_host = ""
        self.open_channels: set[int] = set()
        self._state = State.HEADER
        self._frame_limit = self.frame_max
        self._max_body = max_message_size
        self._in_order = answer_in_order
        self._out: list[bytes] = []
        self._now = now
        self._last_recv = now
        self._sent_flag = False
        self._hb_send_at: float | None = None
        self._handshake_deadline: float | None = now + HANDSHAKE_TIMEOUT
        self._closing_deadline: float | None = None
        self._receive_check_suspended = False
        self._deliver_packers: dict[tuple[int, str, str, str, int], tuple[Any, bytes, bytes]] = {}
        self._deliver_seen: set[tuple[int, str, str, str, int]] = set()

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> State:
        return self._state

    @property
    def terminated(self) -> bool:
        return self._state == State.TERMINATED

    @property
    def closing(self) -> bool:
        """True once we have sent connection.close (waiting for close-ok)."""
        return self._state == State.CLOSING

    @property
    def is_open(self) -> bool:
        """True after accept_open() until the connection starts closing."""
        return self._state == State.RUNNING

    def _set_state(self, state: State) -> None:
        """Every state change goes through here; it keeps the frame reader's flags in step."""
        self._state = state
        self._fast = state == State.RUNNING
        self._paused = state in _PAUSED
        if state == State.TERMINATED:
            self._halted = True
            self._tail = b""
            self._channels.clear()
            self.open_channels.clear()

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Parse everything in ``data`` (plus any kept tail); return the events, in order."""
        events: list[Event] = []
        self._now = now
        self._more = False
        if self._state == State.TERMINATED:
            return events
        if data:
            self._last_recv = now
            if type(data) is not bytes:
                data = bytes(data)  # never keep views into a caller's mutable buffer
            if self._tail:
                data = self._tail + data
        else:
            data = self._tail
        self._tail = b""
        if self._state == State.HEADER:
            if len(data) < 8:
                self._tail = data
                return events
            if data[:8] != PROTOCOL_HEADER and data[:8] != b"AMQP\x01\x01\x00\x09":
                # rabbit_reader:refuse_connection: answer with the version we speak, then close.
                self._out.append(PROTOCOL_HEADER)
                self._terminate(events, "bad protocol header")
                return events
            self._set_state(State.STARTING)
            self._queue_method(0, commands.Connection.Start(
                version_major=0, version_minor=9, server_properties=self.server_properties,
                mechanisms=" ".join(self._mechanisms), locales="en_US"))
            data = data[8:]
        if self._paused:
            self._tail = data
            return events
        self._read(data, events)
        return events

    def _frame(self, events: list[Event], ftype: int, ch: int, data: bytes, p: int, end: int) -> None:
        try:
            self._slow_frame(events, ftype, ch, data, p, end)
        except _Halt:
            pass

    def _slow_frame(self, events: list[Event], ftype: int, ch: int, data: bytes, p: int, end: int) -> None:
        state = self._state
        size = end - p
        if state == State.CLOSING:
            self._closing_frame(events, ftype, ch, data, p, end)
            return
        if ch != 0 and state != State.RUNNING:
            self._unexpected_frame(events, ftype, data[p:end])
        # rabbit_command_assembler:analyze_frame
        index = 0
        if ftype == 1 and size >= 4:
            index = _METHOD_ID.unpack_from(data, p)[0]
            if index not in _INDEX:
                # lookup_method_name exits {unknown_method_id, Id}: the reader crashes, no close is sent.
                self._terminate(events, f"unknown method id {_ids(index)}")
                raise _Halt
        elif ftype == 8 and size == 0:
            if ch == 0:
                return  # heartbeat: receiving it already refreshed last-received
            self._unexpected_frame(events, ftype, b"")
        elif not ((ftype == 2 and size >= 12) or ftype == 3):
            self._hard_error(events, ReplyCode.FRAME_ERROR, "type {}, {} octets = {}: unknown_frame".format(
                ftype, *self._snippet(data[p:end])))
        if ch == 0:
            if ftype != 1:
                self._unexpected_frame(events, ftype, data[p:end])
            self._method0(events, index, data, p, end)
        else:
            self._channel_frame(events, ftype, ch, data, p, end)

    def _closing_frame(self, events: list[Event], ftype: int, ch: int, data: bytes, p: int, end: int) -> None:
        """rabbit_reader, connection_state closing/closed: only connection.close / close-ok matter."""
        if ch != 0 or ftype != 1 or end - p < 4:
            return
        index = _METHOD_ID.unpack_from(data, p)[0]
        if index == commands.Connection.CloseOk.index:
            self._terminate(events, "connection closed")
        elif index == commands.Connection.Close.index:
            self._queue_method(0, commands.Connection.CloseOk())
            try:
                m = self._decode(index, data, p, end)
                events.append(ConnectionCloseReceived.of(m))
            except DecodeError:
                pass
            self._terminate(events, "connection closed")

    # ------------------------------------------------------------------ channel 0: the handshake table
    def _method0(self, events: list[Event], index: int, data: bytes, p: int, end: int) -> None:
        state = self._state
        try:
            m = self._decode(index, data, p, end)
        except DecodeError:
            # rabbit_reader:handle_method0 catches the frame_error exit as a non-AMQP reason.
            self._hard_error(events, ReplyCode.INTERNAL_ERROR, None)
        step = self._CHANNEL0.get((state, index))
        if step is None:
            self._hard_error(events, ReplyCode.CHANNEL_ERROR,
                             f"unexpected method in connection state {state.rabbit_name}", index)
        handler, next_state = step
        handler(self, events, m)  # raises _Halt (state unchanged) when it refuses the method
        if self._state == state:
            self._set_state(next_state)

    def _on_start_ok(self, events: list[Event], m: commands.Connection.StartOk) -> None:
        mechanism = self._mechanisms.get(m.mechanism)
        if mechanism is None:
            # command_invalid "unknown authentication mechanism" while starting: silent close.
            self._terminate(events, f"unknown authentication mechanism {m.mechanism!r}")
            raise _Halt
        response = m.response
        raw = response.encode() if isinstance(response, str) else bytes(response or b"")
        credentials = mechanism.decode(raw)
        if credentials is None:
            # syntax_error from the auth mechanism while securing: silent close.
            self._terminate(events, f"{m.mechanism} response invalid")
            raise _Halt
        props = m.client_properties or {}
        self.client_properties = props
        caps = props.get("capabilities")
        self.capabilities = caps if isinstance(caps, dict) else {}
        self.mechanism = m.mechanism
        events.append(ConnectionStartOk(m.mechanism, credentials.username, credentials.password, props,
                                        m.locale))

    def _on_tune_ok(self, events: list[Event], m: commands.Connection.TuneOk) -> None:
        for field, value, server, minimum in (
                ("frame_max", m.frame_max, self._server_frame_max, codec.FRAME_MIN_SIZE),
                ("channel_max", m.channel_max, self._server_channel_max, 1)):
            # rabbit_reader:validate_negotiated_integer_value/3
            if value != 0 and value < minimum:
                bound, word, limit = "lower", "minimum", minimum
            elif server != 0 and (value == 0 or value > server):
                bound, word, limit = "higher", "maximum", server
            else:
                continue
            detail = " (no limit)" if field == "channel_max" and value == 0 else ""
            self._hard_error(events, ReplyCode.NOT_ALLOWED,
                             f"negotiated {field} = {value}{detail} is {bound} than the {word} allowed "
                             f"value ({limit})", commands.Connection.Tune.index)
        self.frame_max = self._frame_limit = m.frame_max
        self.channel_max = m.channel_max
        # RabbitMQ uses the client's heartbeat as is (timeout_sec = ClientHeartbeat).
        self.heartbeat = m.heartbeat
        if self.heartbeat:
            self._sent_flag = False
            self._hb_send_at = self._now + self.heartbeat / 2

    def _on_open(self, events: list[Event], m: commands.Connection.Open) -> None:
        self.virtual_host = m.virtual_host
        events.append(ConnectionOpen(m.virtual_host))

    def _on_close(self, events: list[Event], m: commands.Connection.Close) -> None:
        self._queue_method(0, commands.Connection.CloseOk())
        events.append(ConnectionCloseReceived.of(m))
        self._terminate(events, "closed by peer")

    def _on_update_secret(self, events: list[Event], m: commands.Connection.UpdateSecret) -> None:
        events.append(MethodReceived(0, m))

    #: channel 0 before closing: (state, method index) -> (handler, state after it). Anything else is
    #: 504 "unexpected method in connection state ~w" (silently closed before tune-ok, see _SILENT).
    _CHANNEL0: ClassVar[dict[tuple[State, int], tuple[_Handler, State]]] = {
        (State.STARTING, commands.Connection.StartOk.index): (_on_start_ok, State.SECURING),
        (State.TUNING, commands.Connection.TuneOk.index): (_on_tune_ok, State.OPENING),
        (State.OPENING, commands.Connection.Open.index): (_on_open, State.OPEN_PENDING),
        (State.RUNNING, commands.Connection.Close.index): (_on_close, State.TERMINATED),
        (State.RUNNING, commands.Connection.UpdateSecret.index): (_on_update_secret, State.RUNNING),
    }
    #: the host's decisions on a paused handshake: method -> (state it answers, state after it)
    _DECISIONS: ClassVar[dict[str, tuple[State, State]]] = {
        "accept_login": (State.SECURING, State.TUNING),
        "accept_open": (State.OPEN_PENDING, State.RUNNING),
    }

    def _decide(self, decision: str) -> None:
        expected, next_state = self._DECISIONS[decision]
        if self._state != expected:
            raise RuntimeError(f"{decision}() in state {self._state.rabbit_name}, not {expected.rabbit_name}")
        self._set_state(next_state)

    # ------------------------------------------------------------------ channels
    def _channel_frame(self, events: list[Event], ftype: int, ch: int, data: bytes, p: int, end: int) -> None:
        chan = self._channels.get(ch)
        if chan is None:
            self._open_channel(events, ftype, ch, data, p, end)
            return
        if chan.expect != EXPECT_METHOD:
            self._assemble(events, ftype, ch, chan, data, p, end)
            return
        if ftype != 1:
            self._unexpected(events, "expected method frame, got non method frame instead", 0)
        index = _METHOD_ID.unpack_from(data, p)[0]
        m = self._decode_or_error(events, index, data, p, end)
        if index in _CONTENT_METHODS:
            if index != _PUBLISH and not chan.closing:
                self._hard_error(events, ReplyCode.COMMAND_INVALID, "unimplemented method", index)
            chan.method = m
            chan.expect = EXPECT_HEADER
            return
        self._channel_method(events, ch, chan, index, m)

    def _open_channel(self, events: list[Event], ftype: int, ch: int, data: bytes, p: int, end: int) -> None:
        if self.channel_max and len(self._channels) >= self.channel_max:
            self._hard_error(events, ReplyCode.NOT_ALLOWED,
                             f"number of channels opened ({len(self._channels)}) has reached the "
                             f"negotiated channel_max ({self.channel_max})")
        if ftype != 1:
            self._unexpected(events, "expected method frame, got non method frame instead", 0)
        index = _METHOD_ID.unpack_from(data, p)[0]
        self._decode_or_error(events, index, data, p, end)
        if index != _CHANNEL_OPEN:
            self._hard_error(events, ReplyCode.CHANNEL_ERROR, "expected 'channel.open'", index)
        self._channels[ch] = ChannelAssembly()
        self.open_channels.add(ch)
        self._queue_method(ch, commands.Channel.OpenOk())
        events.append(ChannelOpened(ch))

    def _body_too_large(self, events: list[Event], ch: int, chan: ChannelAssembly, body_size: int,
                        index: int) -> None:
        # rabbit_channel:check_msg_size, but checked when the header arrives so the body is never
        # buffered; its body frames are then counted and dropped (the channel is closing).
        word = "" if self.max_message_size == RABBIT_MAX_MSG_SIZE else "configured "
        code = ReplyCode.PRECONDITION_FAILED
        self.close_channel(ch, code, code.text(f"message size {body_size} is larger than {word}max size "
                                               f"{self.max_message_size}"), *_ids(index))

    def _channel_method(self, events: list[Event], ch: int, chan: ChannelAssembly, index: int, m: Any) -> None:
        if chan.closing:
            # rabbit_channel in state closing: answer close, finish on close-ok, ignore the rest.
            if index == commands.Channel.Close.index:
                self._queue_method(ch, commands.Channel.CloseOk())
            elif index == commands.Channel.CloseOk.index:
                del self._channels[ch]
            return
        if index == commands.Channel.Close.index:
            self._queue_method(ch, commands.Channel.CloseOk())
            del self._channels[ch]
            self.open_channels.discard(ch)
            events.append(ChannelCloseReceived(ch, m.reply_code or 0, m.reply_text or "", m.class_id or 0, m.method_id or 0))
        elif index == _CHANNEL_OPEN:
            self._hard_error(events, ReplyCode.CHANNEL_ERROR, "second 'channel.open' seen", index)
        elif index == commands.Channel.Flow.index:
            if not m.active:
                self._hard_error(events, ReplyCode.NOT_IMPLEMENTED, "active=false", index)
            self._queue_method(ch, commands.Channel.FlowOk(active=True))
            events.append(MethodReceived(ch, m))
        elif index == commands.Channel.CloseOk.index:
            self._hard_error(events, ReplyCode.COMMAND_INVALID, "unimplemented method", index)
        elif index == _ACK:
            events.append(AckReceived(ch, m.delivery_tag, m.multiple))
        else:
            events.append(MethodReceived(ch, m))

    # ------------------------------------------------------------------ decoding helpers
    @staticmethod
    def _decode(index: int, data: bytes, p: int, end: int) -> Any:
        if index == _PUBLISH:
            return codec.decode_publish(data, p + 4, end)
        if index == _ACK:
            return codec.decode_ack(data, p + 4, end)
        m: Any = _new(_INDEX[index])
        try:
            m.unmarshal(data[p + 4:end])
        except Exception as exc:  # noqa: BLE001 - peer input must never raise out of receive_data
            raise DecodeError(str(exc)) from None
        return m

    def _decode_or_error(self, events: list[Event], index: int, data: bytes, p: int, end: int) -> Any:
        if index not in _INDEX:
            self._terminate(events, f"unknown method id {_ids(index)}")
            raise _Halt
        try:
            return self._decode(index, data, p, end)
        except DecodeError:
            # rabbit_misc:frame_error/2: "cannot decode ~w"
            self._hard_error(events, ReplyCode.FRAME_ERROR,
                             f"cannot decode {codec.erlang_binary_w(data[p + 4:end])}", index)

    # ------------------------------------------------------------------ errors
    @staticmethod
    def _snippet(payload: bytes) -> tuple[str, str]:
        if len(payload) <= 16:
            return "all", codec.erlang_binary(payload)
        return "first 16", codec.erlang_binary(payload[:16])

    def _unexpected_frame(self, events: list[Event], ftype: int, payload: bytes) -> NoReturn:
        self._hard_error(events, ReplyCode.UNEXPECTED_FRAME,
                         "type {}, {} octets = {}".format(ftype, *self._snippet(payload)))

    def _unexpected(self, events: list[Event], detail: str, index: int) -> NoReturn:
        self._hard_error(events, ReplyCode.UNEXPECTED_FRAME, detail, index)

    def _framing_lost(self, events: list[Event], ftype: int, ch: int, payload: bytes, error: str) -> None:
        """Bad frame end or frame too large: report, then stop reading (terminate)."""
        try:
            self._hard_error(events, ReplyCode.FRAME_ERROR, "type {}, {} octets = {}: {}".format(
                ftype, *self._snippet(payload), error))
        except _Halt:
            pass
        if self._state != State.TERMINATED:
            self._terminate(events, "fatal frame error")

    def _hard_error(self, events: list[Event], code: ReplyCode, detail: str | None, index: int = 0) -> NoReturn:
        """A connection error detected while parsing; always raises _Halt."""
        state = self._state
        text = code.text(detail) if detail is not None else code.name
        if state in _SILENT and not (state == State.TUNING and code == ReplyCode.NOT_ALLOWED):
            self._terminate(events, f"handshake error: {text}")
        elif state not in (State.CLOSING, State.TERMINATED):
            self.close_connection(code, text, *_ids(index))
        raise _Halt

    def _terminate(self, events: list[Event], reason: str) -> None:
        self._set_state(State.TERMINATED)
        events.append(ConnectionTerminated(reason))

    # ------------------------------------------------------------------ the host's decisions
    def accept_login(self) -> None:
        """After ConnectionStartOk: queue connection.tune with our limits."""
        self._decide("accept_login")
        self._queue_method(0, commands.Connection.Tune(channel_max=self._server_channel_max,
                                                       frame_max=self._server_frame_max,
                                                       heartbeat=self._server_heartbeat))

    def refuse_login(self, mechanism: str | None = None) -> list[Event]:
        """After ConnectionStartOk: refuse the credentials as RabbitMQ does (rabbit_reader:auth_fail).

        A client announcing the ``authentication_failure_close`` capability gets connection.close 403
        first; others are simply disconnected. Either way the connection terminates now (RabbitMQ waits
        3 s before closing the socket; the transport may do the same).
        """
        events: list[Event] = []
        if self._state == State.TERMINATED:
            return events
        name = mechanism or self.mechanism or "PLAIN"
        if self.capabilities.get("authentication_failure_close") is True:
            code = ReplyCode.ACCESS_REFUSED
            self._queue_method(0, commands.Connection.Close(
                reply_code=code, reply_text=code.text(f"Login was refused using authentication mechanism "
                                                      f"{name}. For details see the broker logfile."),
                class_id=0, method_id=0))
        self._terminate(events, "login refused")
        return events

    def accept_open(self) -> None:
        """After ConnectionOpen: queue connection.open-ok; the connection is running."""
        self._decide("accept_open")
        self._queue_method(0, commands.Connection.OpenOk())
        self._handshake_deadline = None

    def close_connection(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        """Queue connection.close (``text`` is the full reply text, see reply_text()) and wait for
        close-ok; everything else the peer sends meanwhile is ignored."""
        if self._state in (State.CLOSING, State.TERMINATED):
            return
        self._queue_method(0, commands.Connection.Close(reply_code=code, reply_text=_truncate(text),
                                                        class_id=class_id, method_id=method_id))
        self._set_state(State.CLOSING)
        self._handshake_deadline = None
        self._closing_deadline = self._now + CLOSING_TIMEOUT

    def close_channel(self, channel: int, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        """Queue channel.close; the channel ignores everything but close/close-ok until close-ok."""
        chan = self._channels.get(channel)
        if chan is None or chan.closing or self._state != State.RUNNING:
            return
        self._queue_method(channel, commands.Channel.Close(reply_code=code, reply_text=_truncate(text),
                                                           class_id=class_id, method_id=method_id))
        chan.closing = True
        chan.parts = []
        self.open_channels.discard(channel)

    def send_error(self, channel: int, error: AMQPError) -> None:
        """ChannelError -> close the channel; AMQPConnectionError -> close the connection; a plain AMQPError
        is routed by its code (soft codes on a non-zero channel close the channel)."""
        if isinstance(error, ChannelError) or (
                type(error) is AMQPError and channel and not is_hard(error.code)):
            self.close_channel(channel, error.code, error.text, error.class_id, error.method_id)
        else:
            self.close_connection(error.code, error.text, error.class_id, error.method_id)

    # ------------------------------------------------------------------ output
    def _queue_method(self, channel: int, method: base.Frame) -> None:
        self._out.append(codec.encode_method(channel, method))

    def data_to_send(self) -> bytes:
        """Everything queued so far (then cleared)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        self._sent_flag = True
        return b"".join(out)

    def send_method(self, channel: int, method: base.Frame) -> None:
        self._out.append(codec.encode_method(channel, method))

    def send_content(self, channel: int, method: base.Frame, properties: bytes, body: bytes) -> None:
        """Method frame + content header + body frames split by the negotiated frame_max."""
        out = self._out
        out.append(codec.encode_method(channel, method))
        codec.encode_content(out, channel, properties, body, self.frame_max)

    def send_deliver(self, channel: int, consumer_tag: str, delivery_tag: int, redelivered: bool, exchange: str,
                     routing_key: str, properties: bytes, body: bytes) -> None:
        """basic.deliver + content, hand-encoded.

        A body that fits one frame is encoded by one cached ``struct`` pack (codec.deliver_packer) and
        queued as three items (method + header + body-frame header, body, frame end).
        """
        size = len(body)
        frame_max = self.frame_max
        if size and (size <= frame_max - 8 or not frame_max):
            lp = len(properties)
            key = (channel, consumer_tag, exchange, routing_key, lp)
            packer = self._deliver_packers.get(key)
            if packer is None:
                # A packer costs more than one general encode: build it the second time a key is seen,
                # so deliveries that rarely repeat a key (e.g. a topic with unique routing keys) do not pay.
                seen = self._deliver_seen
                if key in seen:
                    packers = self._deliver_packers
                    if len(packers) >= _DELIVER_PACKERS_MAX:
                        packers.clear()
                    packer = packers[key] = codec.deliver_packer(channel, consumer_tag, exchange, routing_key,
                                                                 lp)
                else:
                    if len(seen) >= _DELIVER_PACKERS_MAX:
                        seen.clear()
                    seen.add(key)
            if packer is not None:
                pack, prefix, mid = packer
                try:
                    head = pack(prefix, delivery_tag, redelivered, mid, 12 + lp, 60, 0, size, properties,
                                FRAME_END, 3, channel, size)
                except struct.error:
                    pass  # e.g. a delivery tag out of range: the general encoder raises what it raises
                else:
                    self._out += (head, body, FRAME_END_BYTE)
                    return
        out = self._out
        out.append(codec.encode_deliver_method(channel, consumer_tag, delivery_tag, redelivered, exchange,
                                               routing_key))
        codec.encode_content(out, channel, properties, body, frame_max)

    def send_get_ok(self, channel: int, delivery_tag: int, redelivered: bool, exchange: str, routing_key: str,
                    message_count: int, properties: bytes, body: bytes) -> None:
        """basic.get-ok + content."""
        out = self._out
        out.append(codec.encode_get_ok_method(channel, delivery_tag, redelivered, exchange, routing_key,
                                              message_count))
        codec.encode_content(out, channel, properties, body, self.frame_max)

    def send_ack(self, channel: int, delivery_tag: int, multiple: bool) -> None:
        """Publisher confirm: basic.ack, hand-encoded."""
        self._out.append(codec.encode_ack(channel, delivery_tag, multiple))

    def send_nack(self, channel: int, delivery_tag: int, multiple: bool) -> None:
        """Publisher confirm: basic.nack (requeue=false, as RabbitMQ)."""
        self._out.append(codec.encode_nack(channel, delivery_tag, multiple))

    def send_heartbeat(self) -> None:
        self._out.append(codec.HEARTBEAT_FRAME)

    def send_blocked(self, reason: str) -> None:
        """connection.blocked (only for clients with the connection.blocked capability)."""
        self._queue_method(0, commands.Connection.Blocked(reason=reason))

    def send_unblocked(self) -> None:
        self._queue_method(0, commands.Connection.Unblocked())

    # ------------------------------------------------------------------ timers
    @property
    def more_input(self) -> bool:
        """Parsing stopped early, before a frame that may make this layer write, so that the host can
        answer the events returned first: call ``receive_data(b"", now)`` again after handling them."""
        return self._more

    def suspend_receive_check(self) -> None:
        """The host stopped reading this peer on purpose (a resource alarm blocked it): its heartbeats
        wait unread in the socket, so silence is not its fault. RabbitMQ pauses the same check."""
        self._receive_check_suspended = True

    def resume_receive_check(self, now: float) -> None:
        self._receive_check_suspended = False
        self._last_recv = max(self._last_recv, now)

    def next_timer(self) -> float | None:
        """Absolute time of the next deadline, or None."""
        if self._state == State.TERMINATED:
            return None
        deadlines = [t for t in (self._handshake_deadline, self._closing_deadline, self._hb_send_at) if t is not None]
        if self.heartbeat and self._hb_send_at is not None and not self._receive_check_suspended:
            deadlines.append(self._last_recv + 2 * self.heartbeat)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> list[Event]:
        """Fire every deadline that is due at ``now``."""
        events: list[Event] = []
        self._now = now
        if self._state == State.TERMINATED:
            return events
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            # rabbit_reader handshake_timeout: the socket is closed, nothing is sent.
            self._terminate(events, "handshake timeout")
            return events
        if self._closing_deadline is not None and now >= self._closing_deadline:
            self._terminate(events, "connection.close-ok not received")
            return events
        hb = self.heartbeat
        if hb and self._hb_send_at is not None:
            if now >= self._last_recv + 2 * hb and not self._receive_check_suspended:
                # rabbit_heartbeat receiver: the socket is closed, nothing is sent.
                self._terminate(events, "missed heartbeats")
                return events
            if now >= self._hb_send_at:
                # rabbit_heartbeat sender: every hb/2, send a heartbeat if nothing was sent meanwhile.
                if not self._sent_flag and not self._out:
                    self._out.append(codec.HEARTBEAT_FRAME)
                self._sent_flag = False
                self._hb_send_at = now + hb / 2
        return events
