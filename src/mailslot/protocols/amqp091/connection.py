"""Server side of an AMQP 0-9-1 connection, sans-IO: bytes in -> events out; calls in -> bytes out.

Rules of this module (everything that affects the connection state machine lives here):

* ``receive_data`` parses the whole buffer in one loop (``struct.unpack_from`` on the 7-octet frame
  header); a partial frame stays as the tail for the next call. Nothing a peer sends raises: every bad
  input becomes what RabbitMQ 3.10 does for it (rabbit_reader.erl, rabbit_command_assembler.erl,
  rabbit_channel.erl): a connection.close / channel.close with its code, or a silent close during the
  handshake ("we don't trust the client at this point").
* Time is an input (``now``); timers are ``next_timer()`` / ``handle_timer(now)`` (aioquic style).
* Output is a list of byte strings joined once in ``data_to_send``.
* While the front end decides a login (after ConnectionStartOk) or a vhost (after ConnectionOpen)
  parsing pauses, as RabbitMQ's reader does by deciding synchronously; bytes received meanwhile are kept
  and parsed by the next ``receive_data`` call (``receive_data(b"", now)`` is fine).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pamqp import base, commands, decode

from . import codec
from .codec import FRAME_END, FRAME_END_BYTE, FRAME_HEADER_STRUCT, DecodeError
from .errors import (
    ACCESS_REFUSED,
    CHANNEL_ERROR,
    COMMAND_INVALID,
    FRAME_ERROR,
    INTERNAL_ERROR,
    NOT_ALLOWED,
    NOT_IMPLEMENTED,
    PRECONDITION_FAILED,
    UNEXPECTED_FRAME,
    AMQPError,
    ChannelError,
    is_hard,
    reply_text,
)
from .events import (
    ChannelCloseReceived,
    ChannelOpened,
    ConnectionCloseReceived,
    ConnectionOpen,
    ConnectionStartOk,
    ConnectionTerminated,
    ContentReceived,
    Event,
    MethodReceived,
)

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

#: rabbit.handshake_timeout default: the handshake must complete (connection.open-ok) within 10 s.
HANDSHAKE_TIMEOUT = 10.0
#: rabbit_reader ?CLOSING_TIMEOUT: after we send connection.close we wait this long for close-ok.
CLOSING_TIMEOUT = 30.0
#: rabbit_channel ?MAX_MSG_SIZE: when max_message_size equals it RabbitMQ words the error differently.
RABBIT_MAX_MSG_SIZE = 536870912

# Connection states; names as RabbitMQ uses them in "unexpected method in connection state ~w".
_HEADER, _STARTING, _SECURING, _TUNING, _OPENING, _OPEN_PENDING, _RUNNING, _CLOSING, _TERMINATED = range(9)
_STATE_NAMES = {_STARTING: "starting", _SECURING: "securing", _TUNING: "tuning", _OPENING: "opening",
                _OPEN_PENDING: "opening", _RUNNING: "running", _CLOSING: "closing"}
_PAUSED = (_SECURING, _OPEN_PENDING)
# In these states RabbitMQ closes silently on any error (rabbit_reader:handle_exception/3 last clause);
# the one exception is a failed tune negotiation (not_allowed while tuning), which is answered.
_SILENT = (_STARTING, _SECURING, _TUNING)

# Assembler states per channel (rabbit_command_assembler).
_ASM_METHOD, _ASM_HEADER, _ASM_BODY = 0, 1, 2

_INDEX = commands.INDEX_MAPPING
_PUBLISH = codec.PUBLISH_INDEX
_ACK = codec.ACK_INDEX
_CONTENT_METHODS = frozenset({commands.Basic.Publish.index, commands.Basic.Return.index,
                              commands.Basic.Deliver.index, commands.Basic.GetOk.index})
_CHANNEL_OPEN = commands.Channel.Open.index
_HEADER_ARGS = struct.Struct(">HHQ")
_HEADER_FRAME = struct.Struct(">BHIHHQ")  # frame header + class, weight, body size (21 octets)
_ACK_METHOD = struct.Struct(">IQB")  # method index + basic.ack arguments (a 13-octet method frame)
_PUBLISH_CACHE = codec.PUBLISH_CACHE
_Ack = commands.Basic.Ack
#: send_deliver's memo of codec.deliver_packer results, per connection; cleared when full.
_DELIVER_PACKERS_MAX = 256
_METHOD_ID = struct.Struct(">I")
_U32 = struct.Struct(">I")
_MECHANISMS = ("PLAIN", "AMQPLAIN")
#: SASL EXTERNAL: the identity is the TLS client certificate's; the response carries nothing we read
#: (rabbit_auth_mechanism_ssl ignores it). Offered only when the host adds it to ``mechanisms``.
EXTERNAL = "EXTERNAL"
_new = object.__new__


def _ids(index: int) -> tuple[int, int]:
    return index >> 16, index & 0xFFFF


def _truncate(text: str) -> str:
    raw = text.encode()
    if len(raw) <= 255:
        return text
    return raw[:255].decode(errors="ignore")


class _Channel:
    __slots__ = ("asm", "closing", "discard", "method", "parts", "props", "remaining")

    def __init__(self) -> None:
        self.closing = False
        self.asm = _ASM_METHOD
        self.method: Any = None
        self.props = b""
        self.remaining = 0
        self.parts: list[Any] = []
        self.discard = False


class _Halt(Exception):
    """Internal: a hard error was handled; stop processing the current frame."""


class ServerConnection:
    """One AMQP 0-9-1 server connection. See docs/amqp091.md."""

    def __init__(self, *, server_properties: dict[str, Any], frame_max: int = 131072, channel_max: int = 2047,
                 heartbeat: int = 60, max_message_size: int = 16 * 1024 * 1024, now: float = 0.0,
                 answer_in_order: bool = False, handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        # answer_in_order: a host that answers events (the broker's front end) sets it, so that parsing
        # stops before a frame this layer would answer itself until the events before it are answered
        # (see ``more_input``); replies then leave in the order their requests arrived, as RabbitMQ's.
        # Bounds: frame_max 131072 and channel_max 2047 are RabbitMQ 3.10's defaults; heartbeat 60 s too.
        # max_message_size 16 MiB is ours (RabbitMQ 3.10: 128 MiB): bodies are buffered in memory.
        self.server_properties = server_properties
        self._server_frame_max = frame_max
        self._server_channel_max = channel_max
        self._server_heartbeat = heartbeat
        self.max_message_size = max_message_size
        # Negotiated values; before tune-ok RabbitMQ enforces frame-min-size (4096).
        self.frame_max = codec.FRAME_MIN_SIZE
        self.channel_max = channel_max
        self.heartbeat = 0
        self.client_properties: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self.mechanism = ""
        self.virtual_host = ""
        self.open_channels: set[int] = set()
        self._channels: dict[int, _Channel] = {}
        self._state = _HEADER
        self._out: list[bytes] = []
        self._tail = b""
        self._now = now
        self._last_recv = now
        self._sent_flag = False
        self._hb_send_at: float | None = None
        self._handshake_deadline: float | None = now + handshake_timeout
        # SASL mechanisms offered in connection.start (read when the protocol header arrives, so a host may
        # add EXTERNAL once it knows the peer is a TLS client with a certificate).
        self.mechanisms: tuple[str, ...] = _MECHANISMS
        # Asked before a channel is opened: None, or the text of a 530 NOT_ALLOWED that closes the
        # connection instead (a user's max-channels limit, as rabbit_reader:create_channel).
        self.channel_refusal: Callable[[], str | None] | None = None
        self._closing_deadline: float | None = None
        self._receive_check_suspended = False
        self._in_order = answer_in_order
        self._more = False
        self._opened = False
        self._deliver_packers: dict[tuple[int, str, str, str, int], tuple[Any, bytes, bytes]] = {}
        self._deliver_seen: set[tuple[int, str, str, str, int]] = set()

    # ------------------------------------------------------------------ state the front end reads
    @property
    def terminated(self) -> bool:
        return self._state == _TERMINATED

    @property
    def closing(self) -> bool:
        """True once we have sent connection.close (waiting for close-ok)."""
        return self._state == _CLOSING

    @property
    def is_open(self) -> bool:
        """True after accept_open() until the connection starts closing."""
        return self._state == _RUNNING

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Parse everything in ``data`` (plus any kept tail); return the events, in order."""
        events: list[Event] = []
        self._now = now
        self._more = False
        if self._state == _TERMINATED:
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
        if self._state == _HEADER:
            if len(data) < 8:
                self._tail = data
                return events
            if data[:8] != PROTOCOL_HEADER and data[:8] != b"AMQP\x01\x01\x00\x09":
                # rabbit_reader:refuse_connection: answer with the version we speak, then close.
                self._out.append(PROTOCOL_HEADER)
                self._terminate(events, "bad protocol header")
                return events
            self._state = _STARTING
            self._queue_method(0, commands.Connection.Start(
                version_major=0, version_minor=9, server_properties=self.server_properties,
                mechanisms=" ".join(self.mechanisms), locales="en_US"))
            data = data[8:]
        if self._state in _PAUSED:
            self._tail = data
            return events
        self._parse(data, events)
        return events

    def _parse(self, data: bytes, events: list[Event]) -> None:
        unpack = FRAME_HEADER_STRUCT.unpack_from
        unpack_header = _HEADER_FRAME.unpack_from
        unpack_id = _METHOD_ID.unpack_from
        unpack_ack = _ACK_METHOD.unpack_from
        pub_get = _PUBLISH_CACHE.get
        channels = self._channels
        append = events.append
        new = _new
        content_received = ContentReceived
        method_received = MethodReceived
        ack_cls = _Ack
        publish_index = _PUBLISH
        ack_index = _ACK
        n = len(data)
        off = 0
        view: memoryview | None = None
        # Locals for the loop; only the slow path (_frame) changes them, so they are re-read after it.
        limit = self.frame_max
        max_size = self.max_message_size
        running = self._state == _RUNNING
        while n - off >= 7:
            ftype, ch, size = unpack(data, off)
            # rabbit_reader: PayloadSize > FrameMax - ?EMPTY_FRAME_SIZE + ?FRAME_SIZE_FUDGE, i.e. > FrameMax.
            if limit and size > limit:
                if events and self._in_order:  # answer what came before it first (see ``more_input``)
                    self._more = True
                    break
                self._fatal_frame_error(events, ftype, ch, b"",
                                        f"{{frame_too_large,{size},{limit - codec.FRAME_OVERHEAD}}}")
                return
            p = off + 7
            end = p + size
            if end >= n:
                break
            if data[end] != 0xCE:  # FRAME_END
                if events and self._in_order:
                    self._more = True
                    break
                self._fatal_frame_error(events, ftype, ch, data[p:end],
                                        f"{{invalid_frame_end_marker,{data[end]}}}")
                return
            off = end + 1
            chan = channels.get(ch) if running and ch else None
            if chan is not None and not chan.closing:
                # ---- hot path: publish / ack / content on an open channel -------------------------
                asm = chan.asm
                if ftype == 1:
                    if asm == _ASM_METHOD:
                        if size == 13:
                            index, tag, bits = unpack_ack(data, p)
                            if index == ack_index:
                                ack = new(ack_cls)
                                ack.delivery_tag = tag
                                ack.multiple = bits & 1 == 1
                                received = new(method_received)
                                received.channel = ch
                                received.method = ack
                                append(received)
                                continue
                        elif size >= 4:
                            index = unpack_id(data, p)[0]
                        else:
                            index = 0
                        if index == publish_index:
                            m = pub_get(data[p + 4:end])
                            if m is None:
                                try:
                                    m = codec.decode_publish_cached(data, p + 4, end)
                                except DecodeError:
                                    m = None  # the slow path reports it
                            if m is not None:
                                # Whole message in this buffer (header + one body frame, same channel)?
                                # Anything unusual is left to the per-frame paths below, frame by frame.
                                if n - off >= 21:
                                    htype, hch, hsize, class_id, weight, body_size = unpack_header(data, off)
                                    hend = off + 7 + hsize
                                    if (htype == 2 and hch == ch and hsize >= 14 and hend < n
                                            and data[hend] == 0xCE and (not limit or hsize <= limit)
                                            and class_id == 60 and weight == 0 and body_size <= max_size):
                                        props = data[off + 19:hend]
                                        b = hend + 1
                                        if body_size == 0:
                                            ev = new(content_received)
                                            ev.channel = ch
                                            ev.method = m
                                            ev.properties = props
                                            ev.body = b""
                                            append(ev)
                                            off = b
                                            continue
                                        if n - b >= 7:
                                            btype, bch, bsize = unpack(data, b)
                                            bend = b + 7 + bsize
                                            if (btype == 3 and bch == ch and bsize == body_size and bend < n
                                                    and data[bend] == 0xCE and (not limit or bsize <= limit)):
                                                ev = new(content_received)
                                                ev.channel = ch
                                                ev.method = m
                                                ev.properties = props
                                                ev.body = data[b + 7:bend]
                                                append(ev)
                                                off = bend + 1
                                                continue
                                        chan.method = m
                                        chan.props = props
                                        chan.remaining = body_size
                                        chan.asm = _ASM_BODY
                                        off = b
                                        continue
                                chan.method = m
                                chan.asm = _ASM_HEADER
                                continue
                elif ftype == 3 and asm == _ASM_BODY:
                    remaining = chan.remaining - size
                    if remaining > 0:
                        if view is None:
                            view = memoryview(data)
                        chan.parts.append(view[p:end])
                        chan.remaining = remaining
                        continue
                    if remaining == 0:
                        parts = chan.parts
                        if parts:
                            if view is None:
                                view = memoryview(data)
                            parts.append(view[p:end])
                            body = b"".join(parts)
                            chan.parts = []
                        else:
                            body = data[p:end]
                        chan.asm = _ASM_METHOD
                        ev = new(content_received)
                        ev.channel = ch
                        ev.method = chan.method
                        ev.properties = chan.props
                        ev.body = body
                        append(ev)
                        chan.method = None
                        continue
                elif ftype == 2 and asm == _ASM_HEADER and size >= 14:
                    class_id, weight, body_size = _HEADER_ARGS.unpack_from(data, p)
                    if class_id == 60 and weight == 0 and body_size <= max_size:
                        props = data[p + 12:end]
                        if body_size == 0:
                            chan.asm = _ASM_METHOD
                            append(ContentReceived(ch, chan.method, props, b""))
                            chan.method = None
                        else:
                            chan.asm = _ASM_BODY
                            chan.props = props
                            chan.remaining = body_size
                        continue
            # ---- everything else ---------------------------------------------------------------
            if events and self._in_order:
                # This frame may make us write (close-ok, an error): the front end must answer the
                # events before it first, so replies leave in the order their requests arrived.
                off = p - 7
                self._more = True
                break
            try:
                self._frame(events, ftype, ch, data, p, end)
            except _Halt:
                pass
            state = self._state
            if state == _TERMINATED:
                return
            if state in _PAUSED:
                break
            running = state == _RUNNING
            limit = self.frame_max
        self._tail = data[off:] if off < n else b""

    def _frame(self, events: list[Event], ftype: int, ch: int, data: bytes, p: int, end: int) -> None:
        state = self._state
        size = end - p
        if state == _CLOSING:
            # rabbit_reader, connection_state closing/closed: only connection.close / close-ok matter.
            if ch == 0 and ftype == 1 and size >= 4:
                index = _METHOD_ID.unpack_from(data, p)[0]
                if index == commands.Connection.CloseOk.index:
                    self._terminate(events, "connection closed")
                elif index == commands.Connection.Close.index:
                    self._queue_method(0, commands.Connection.CloseOk())
                    try:
                        m = self._decode(index, data, p, end)
                        events.append(ConnectionCloseReceived(m.reply_code, m.reply_text))
                    except DecodeError:
                        pass
                    self._terminate(events, "connection closed")
            return
        if ch != 0 and state != _RUNNING:
            self._unexpected_frame(events, ftype, ch, data[p:end])
        # rabbit_command_assembler:analyze_frame
        if ftype == 1 and size >= 4:
            index = _METHOD_ID.unpack_from(data, p)[0]
            if index not in _INDEX:
                # lookup_method_name exits {unknown_method_id, Id}: the reader crashes, no close is sent.
                self._terminate(events, f"unknown method id {_ids(index)}")
                raise _Halt
        elif ftype == 8 and size == 0:
            if ch == 0:
                return  # heartbeat: receiving it already refreshed last-received
            self._unexpected_frame(events, ftype, ch, b"")
        elif not ((ftype == 2 and size >= 12) or ftype == 3):
            self._hard_error(events, FRAME_ERROR, "type {}, {} octets = {}: unknown_frame".format(
                ftype, *self._snippet(data[p:end])))
        if ch == 0:
            if ftype != 1:
                self._unexpected_frame(events, ftype, ch, data[p:end])
            self._method0(events, index, data, p, end)
        else:
            self._channel_frame(events, ftype, ch, data, p, end)

    # ------------------------------------------------------------------ channel 0
    def _method0(self, events: list[Event], index: int, data: bytes, p: int, end: int) -> None:
        state = self._state
        try:
            m = self._decode(index, data, p, end)
        except DecodeError:
            # rabbit_reader:handle_method0 catches the frame_error exit as a non-AMQP reason.
            self._hard_error(events, INTERNAL_ERROR, None)
        if state == _STARTING and index == commands.Connection.StartOk.index:
            self._start_ok(events, m)
        elif state == _TUNING and index == commands.Connection.TuneOk.index:
            self._tune_ok(events, m)
        elif state == _OPENING and index == commands.Connection.Open.index:
            self.virtual_host = m.virtual_host
            self._state = _OPEN_PENDING
            events.append(ConnectionOpen(m.virtual_host))
        elif state == _RUNNING and index == commands.Connection.Close.index:
            self._queue_method(0, commands.Connection.CloseOk())
            events.append(ConnectionCloseReceived(m.reply_code, m.reply_text))
            self._terminate(events, "closed by peer")
        elif state == _RUNNING and index == commands.Connection.UpdateSecret.index:
            events.append(MethodReceived(0, m))
        else:
            self._hard_error(events, CHANNEL_ERROR,
                             f"unexpected method in connection state {_STATE_NAMES[state]}", index)

    def _start_ok(self, events: list[Event], m: commands.Connection.StartOk) -> None:
        mechanism = m.mechanism
        if mechanism not in self.mechanisms:
            # command_invalid "unknown authentication mechanism" while starting: silent close.
            self._terminate(events, f"unknown authentication mechanism {mechanism!r}")
            raise _Halt
        response = m.response
        raw = response.encode() if isinstance(response, str) else bytes(response or b"")
        creds = ("", "") if mechanism == EXTERNAL else _plain(raw) if mechanism == "PLAIN" else _amqplain(raw)
        if creds is None:
            # syntax_error from the auth mechanism while securing: silent close.
            self._terminate(events, f"{mechanism} response invalid")
            raise _Halt
        props = m.client_properties or {}
        self.client_properties = props
        caps = props.get("capabilities")
        self.capabilities = caps if isinstance(caps, dict) else {}
        self.mechanism = mechanism
        self._state = _SECURING
        events.append(ConnectionStartOk(mechanism, creds[0], creds[1], props, m.locale))

    def _tune_ok(self, events: list[Event], m: commands.Connection.TuneOk) -> None:
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
            self._hard_error(events, NOT_ALLOWED,
                             f"negotiated {field} = {value}{detail} is {bound} than the {word} allowed "
                             f"value ({limit})", commands.Connection.Tune.index)
        self.frame_max = m.frame_max
        self.channel_max = m.channel_max
        # RabbitMQ uses the client's heartbeat as is (timeout_sec = ClientHeartbeat).
        self.heartbeat = m.heartbeat
        self._state = _OPENING
        if self.heartbeat:
            self._sent_flag = False
            self._hb_send_at = self._now + self.heartbeat / 2

    # ------------------------------------------------------------------ channels
    def _channel_frame(self, events: list[Event], ftype: int, ch: int, data: bytes, p: int, end: int) -> None:
        chan = self._channels.get(ch)
        if chan is None:
            if self.channel_max and len(self._channels) >= self.channel_max:
                self._hard_error(events, NOT_ALLOWED,
                                 f"number of channels opened ({len(self._channels)}) has reached the "
                                 f"negotiated channel_max ({self.channel_max})")
            if ftype != 1:
                self._unexpected(events, "expected method frame, got non method frame instead", 0)
            index = _METHOD_ID.unpack_from(data, p)[0]
            self._decode_or_error(events, index, data, p, end)
            if index != _CHANNEL_OPEN:
                self._hard_error(events, CHANNEL_ERROR, "expected 'channel.open'", index)
            refusal = self.channel_refusal() if self.channel_refusal is not None else None
            if refusal is not None:
                self._hard_error(events, NOT_ALLOWED, refusal)  # method "none", as RabbitMQ
            chan = self._channels[ch] = _Channel()
            self.open_channels.add(ch)
            self._queue_method(ch, commands.Channel.OpenOk())
            events.append(ChannelOpened(ch))
            return
        asm = chan.asm
        if asm == _ASM_METHOD:
            if ftype != 1:
                self._unexpected(events, "expected method frame, got non method frame instead", 0)
            index = _METHOD_ID.unpack_from(data, p)[0]
            m = self._decode_or_error(events, index, data, p, end)
            if index in _CONTENT_METHODS:
                if index != _PUBLISH and not chan.closing:
                    self._hard_error(events, COMMAND_INVALID, "unimplemented method", index)
                chan.method = m
                chan.asm = _ASM_HEADER
                return
            self._channel_method(events, ch, chan, index, m)
        elif asm == _ASM_HEADER:
            index = chan.method.index
            if ftype != 2:
                self._unexpected(events, "expected content header for class 60, got non content header "
                                         "frame instead", index)
            class_id, weight, body_size = _HEADER_ARGS.unpack_from(data, p)
            if class_id != 60:
                self._unexpected(events, f"expected content header for class 60, got one for class "
                                         f"{class_id} instead", index)
            if weight != 0:
                self._unexpected(events, "expected content header for class 60, got non content header "
                                         "frame instead", index)
            if body_size == 0:
                chan.asm = _ASM_METHOD
                if not chan.closing:
                    events.append(ContentReceived(ch, chan.method, data[p + 12:end], b""))
                chan.method = None
                return
            chan.asm = _ASM_BODY
            chan.remaining = body_size
            chan.parts = []
            chan.props = data[p + 12:end]
            if body_size > self.max_message_size and not chan.closing:
                # rabbit_channel:check_msg_size, but checked when the header arrives so the body is
                # never buffered; its body frames are then counted and dropped.
                word = "" if self.max_message_size == RABBIT_MAX_MSG_SIZE else "configured "
                self.close_channel(ch, PRECONDITION_FAILED,
                                   reply_text(PRECONDITION_FAILED, f"message size {body_size} is larger than "
                                                                   f"{word}max size {self.max_message_size}"),
                                   *_ids(index))
        else:  # _ASM_BODY
            index = chan.method.index
            if ftype != 3:
                self._unexpected(events, "expected content body, got non content body frame instead", index)
            remaining = chan.remaining - (end - p)
            if remaining < 0:
                # RabbitMQ 3.10 lets the remaining size go negative and never completes the message;
                # we refuse at once (see docs/amqp091.md).
                self._unexpected(events, f"content body frame exceeds the declared body size by "
                                         f"{-remaining} octets", index)
            chan.remaining = remaining
            if not chan.closing:
                chan.parts.append(memoryview(data)[p:end])
            if remaining == 0:
                chan.asm = _ASM_METHOD
                if not chan.closing:
                    events.append(ContentReceived(ch, chan.method, chan.props, b"".join(chan.parts)))
                chan.parts = []
                chan.method = None

    def _channel_method(self, events: list[Event], ch: int, chan: _Channel, index: int, m: Any) -> None:
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
            events.append(ChannelCloseReceived(ch, m.reply_code, m.reply_text))
        elif index == _CHANNEL_OPEN:
            self._hard_error(events, CHANNEL_ERROR, "second 'channel.open' seen", index)
        elif index == commands.Channel.Flow.index:
            if not m.active:
                self._hard_error(events, NOT_IMPLEMENTED, "active=false", index)
            self._queue_method(ch, commands.Channel.FlowOk(active=True))
            events.append(MethodReceived(ch, m))
        elif index == commands.Channel.CloseOk.index:
            self._hard_error(events, COMMAND_INVALID, "unimplemented method", index)
        else:
            events.append(MethodReceived(ch, m))

    # ------------------------------------------------------------------ decoding helpers
    @staticmethod
    def _decode(index: int, data: bytes, p: int, end: int) -> Any:
        if index == _PUBLISH:
            return codec.decode_publish(data, p + 4, end)
        if index == _ACK:
            return codec.decode_ack(data, p + 4, end)
        cls = _INDEX[index]
        m: Any = _new(cls)
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
            self._hard_error(events, FRAME_ERROR, f"cannot decode {codec.erlang_binary_w(data[p + 4:end])}",
                             index)

    # ------------------------------------------------------------------ errors
    @staticmethod
    def _snippet(payload: bytes) -> tuple[str, str]:
        if len(payload) <= 16:
            return "all", codec.erlang_binary(payload)
        return "first 16", codec.erlang_binary(payload[:16])

    def _unexpected_frame(self, events: list[Event], ftype: int, ch: int, payload: bytes) -> None:
        self._hard_error(events, UNEXPECTED_FRAME, "type {}, {} octets = {}".format(ftype, *self._snippet(payload)))

    def _unexpected(self, events: list[Event], detail: str, index: int) -> None:
        self._hard_error(events, UNEXPECTED_FRAME, detail, index)

    def _fatal_frame_error(self, events: list[Event], ftype: int, ch: int, payload: bytes, error: str) -> None:
        """Framing is lost (bad frame end, frame too large): report, then stop reading (terminate)."""
        try:
            self._hard_error(events, FRAME_ERROR, "type {}, {} octets = {}: {}".format(
                ftype, *self._snippet(payload), error))
        except _Halt:
            pass
        if self._state != _TERMINATED:
            self._terminate(events, "fatal frame error")

    def _hard_error(self, events: list[Event], code: int, detail: str | None, index: int = 0) -> None:
        """A connection error detected while parsing; always raises _Halt."""
        state = self._state
        text = reply_text(code, detail) if detail is not None else "INTERNAL_ERROR"
        if state in _SILENT and not (state == _TUNING and code == NOT_ALLOWED):
            self._terminate(events, f"handshake error: {text}")
        elif state not in (_CLOSING, _TERMINATED):
            self.close_connection(code, text, *_ids(index))
        raise _Halt

    def _terminate(self, events: list[Event], reason: str) -> None:
        self._state = _TERMINATED
        self._tail = b""
        self._channels.clear()
        self.open_channels.clear()
        events.append(ConnectionTerminated(reason))

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

    def accept_login(self) -> None:
        """After ConnectionStartOk: queue connection.tune with our limits."""
        if self._state != _SECURING:
            raise RuntimeError("accept_login() outside the login step")
        self._queue_method(0, commands.Connection.Tune(channel_max=self._server_channel_max,
                                                       frame_max=self._server_frame_max,
                                                       heartbeat=self._server_heartbeat))
        self._state = _TUNING

    def refuse_login(self, mechanism: str | None = None) -> list[Event]:
        """After ConnectionStartOk: refuse the credentials as RabbitMQ does (rabbit_reader:auth_fail).

        A client announcing the ``authentication_failure_close`` capability gets connection.close 403
        first; others are simply disconnected. Either way the connection terminates now (RabbitMQ waits
        3 s before closing the socket; the transport may do the same).
        """
        events: list[Event] = []
        if self._state == _TERMINATED:
            return events
        name = mechanism or self.mechanism or "PLAIN"
        if self.capabilities.get("authentication_failure_close") is True:
            self._queue_method(0, commands.Connection.Close(
                reply_code=ACCESS_REFUSED,
                reply_text=reply_text(ACCESS_REFUSED, f"Login was refused using authentication mechanism "
                                                      f"{name}. For details see the broker logfile."),
                class_id=0, method_id=0))
        self._terminate(events, "login refused")
        return events

    def accept_open(self) -> None:
        """After ConnectionOpen: queue connection.open-ok; the connection is running."""
        if self._state != _OPEN_PENDING:
            raise RuntimeError("accept_open() outside the open step")
        self._queue_method(0, commands.Connection.OpenOk())
        self._state = _RUNNING
        self._handshake_deadline = None

    def close_connection(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        """Queue connection.close (``text`` is the full reply text, see reply_text()) and wait for
        close-ok; everything else the peer sends meanwhile is ignored."""
        if self._state in (_CLOSING, _TERMINATED):
            return
        self._queue_method(0, commands.Connection.Close(reply_code=code, reply_text=_truncate(text),
                                                        class_id=class_id, method_id=method_id))
        self._state = _CLOSING
        self._handshake_deadline = None
        self._closing_deadline = self._now + CLOSING_TIMEOUT

    def close_channel(self, channel: int, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        """Queue channel.close; the channel ignores everything but close/close-ok until close-ok."""
        chan = self._channels.get(channel)
        if chan is None or chan.closing or self._state != _RUNNING:
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
        if self._state == _TERMINATED:
            return None
        deadlines = [t for t in (self._handshake_deadline, self._closing_deadline, self._hb_send_at) if t is not None]
        if self.heartbeat and self._hb_send_at is not None and not self._receive_check_suspended:
            deadlines.append(self._last_recv + 2 * self.heartbeat)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> list[Event]:
        """Fire every deadline that is due at ``now``."""
        events: list[Event] = []
        self._now = now
        if self._state == _TERMINATED:
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


def _plain(raw: bytes) -> tuple[str, str] | None:
    """SASL PLAIN as rabbit_auth_mechanism_plain: exactly ``\\0user\\0pass``."""
    parts = raw.split(b"\x00")
    if len(parts) != 3 or parts[0]:
        return None
    try:
        return parts[1].decode(), parts[2].decode()
    except UnicodeDecodeError:
        return None


def _amqplain(raw: bytes) -> tuple[str, str] | None:
    """AMQPLAIN: a field table without its length prefix holding LOGIN and PASSWORD long strings."""
    try:
        _, table = decode.field_table(_U32.pack(len(raw)) + raw)
    except Exception:  # noqa: BLE001 - peer input must never raise out of receive_data
        return None
    login, password = table.get("LOGIN"), table.get("PASSWORD")
    if isinstance(login, bytes):
        login = login.decode(errors="replace")
    if isinstance(password, bytes):
        password = password.decode(errors="replace")
    if not isinstance(login, str) or not isinstance(password, str):
        return None
    return login, password
