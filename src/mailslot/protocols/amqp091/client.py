"""Client side of an AMQP 0-9-1 connection, sans-IO and batch-shaped: bytes in -> events out.

Built for load generation (``mailslot bench``) and for :mod:`mailslot.client`:

* ``receive_data(data)`` parses the whole buffer in one call (the shared :class:`~.frames.FrameReader`
  loop, the same as the server's) and returns a list of events; a partial frame stays as the tail for the
  next call. The handshake (SASL PLAIN) answers itself; so do the peer's connection.close and channel.close
  (close-ok is queued).
* Every call that sends something appends bytes to an output list; ``data_to_send()`` joins it once.
* The hot path is three things and none of them builds pamqp objects: basic.publish from a pre-encoded
  template (:meth:`ClientConnection.publish` / :meth:`ClientConnection.publish_stamped`) or a memoised
  method frame (:meth:`ClientConnection.publish_batch`), publisher confirms (basic.ack / basic.nack ->
  :class:`~.events.Confirm`), and basic.deliver + content (-> :class:`~.events.Delivery`, body as one
  ``bytes``). Everything else is decoded and encoded by pamqp.

It shares the server's codec (:mod:`.codec`) and frame reader (:mod:`.frames`); the client-only part is
the basic.deliver decoder below, checked against pamqp in tests/unit/protocol/test_client.py.

A server that breaks the protocol (bad frame-end octet, unknown method or frame type, a frame on a
channel that is not open, content frames out of order) is the peer's fault: :class:`ClientProtocolError`
is raised and the connection is no longer usable.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from pamqp import base, commands

from . import codec
from .codec import FRAME_END, DecodeError
from .events import (
    ChannelCloseReceived,
    Confirm,
    Connected,
    ConnectionCloseReceived,
    ConnectionTerminated,
    Delivery,
    Event,
    MethodReceived,
)
from .frames import EXPECT_HEADER, EXPECT_METHOD, ChannelAssembly, FrameReader
from .properties import encode_properties
from .sasl import plain_response

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

_TAG_BIT = struct.Struct(">QB")  # delivery-tag u64 + bit octet (basic.deliver)
_INDEX = commands.INDEX_MAPPING
_CONTENT_METHODS = frozenset({commands.Basic.Return.index, commands.Basic.GetOk.index})
_new = object.__new__
#: publish method frames memoised per ClientConnection; bounded (cleared when full)
_PUBLISH_METHOD_CACHE_MAX = 1024


class ClientProtocolError(Exception):
    """The server broke the protocol (framing lost, unknown method or frame type, a frame on a channel
    that is not open, content out of order); the connection is unusable."""


def decode_deliver(data: bytes, p: int, end: int) -> Delivery:
    """basic.deliver arguments ``data[p:end]`` (after the method id) -> a :class:`Delivery` waiting for its
    channel, properties and body (the frame reader fills them in). DecodeError when they do not decode."""
    try:
        q = p + 1 + data[p]
        consumer_tag = data[p + 1:q].decode()
        tag, bits = _TAG_BIT.unpack_from(data, q)
        q += 9
        r = q + 1 + data[q]
        s = r + 1 + data[r]
        exchange = data[q + 1:r].decode()
        routing_key = data[r + 1:s].decode()
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise DecodeError(str(exc)) from None
    if s != end:
        raise DecodeError("basic.deliver arguments do not fill the frame")
    ev: Any = _new(Delivery)
    ev.consumer_tag = consumer_tag
    ev.delivery_tag = tag
    ev.redelivered = bits & 1 == 1
    ev.exchange = exchange
    ev.routing_key = routing_key
    return ev


# ---------------------------------------------------------------------------------------------- publish
class PublishTemplate:
    """The frames of one basic.publish (method + content header + body frames), encoded once.

    With ``stamp_size`` > 0 the first ``stamp_size`` octets of the body are replaced per message
    (:meth:`ClientConnection.publish_stamped`); everything around them is pre-encoded as ``prefix`` and
    ``suffix`` (the stamp is inside the first body frame, so any body size and frame_max work).
    """

    __slots__ = ("body_size", "channel", "prefix", "separator", "stamp_size", "suffix", "whole")

    def __init__(self, channel: int, whole: bytes, stamp_offset: int, stamp_size: int, body_size: int) -> None:
        self.channel = channel
        self.whole = whole
        self.body_size = body_size
        self.stamp_size = stamp_size
        self.prefix = whole[:stamp_offset]
        self.suffix = whole[stamp_offset + stamp_size:]
        # b"".join-friendly: prefix + (suffix + prefix).join(stamps) + suffix encodes all messages at once.
        self.separator = self.suffix + self.prefix


class _Channel(ChannelAssembly):
    __slots__ = ("publish_seq",)

    def __init__(self) -> None:
        super().__init__()
        self.publish_seq = 0  # publisher-confirm sequence: the delivery tag of the last publish


class ClientConnection(FrameReader[_Channel]):
    """One AMQP 0-9-1 client connection (sans-IO). Call :meth:`initiate` first, then feed
    ``receive_data`` with what the server sends and write ``data_to_send()`` after each call.

    A channel exists from :meth:`open_channel` until its channel.close-ok arrives (we closed it) or
    the server's channel.close (close-ok queued); a frame for any other channel is a protocol error.
    """

    HOT_CONTENT = codec.DELIVER_INDEX
    HOT_CONTENT_IS_EVENT = True
    HOT_ACKS = frozenset({codec.ACK_INDEX, codec.NACK_INDEX})
    ACK_EVENT = Confirm
    NACK_INDEX = codec.NACK_INDEX
    _decode_hot_content = staticmethod(decode_deliver)

    def __init__(self, username: str = "guest", password: str = "guest", vhost: str = "/", *,
                 frame_max: int = 131072, channel_max: int = 2047, heartbeat: int = 0,
                 client_properties: dict[str, Any] | None = None, negotiate_heartbeat: bool = False) -> None:
        # heartbeat 0 = off: a load generator must not be disconnected while the broker is saturated.
        # negotiate_heartbeat=True: answer connection.tune with the lower of ours and the server's (0 = the
        # other one), as RabbitMQ's clients do; False (the default) sends ``heartbeat`` unchanged.
        super().__init__()
        self._fast = True  # the frame reader's hot path serves every open channel
        self.negotiate_heartbeat = negotiate_heartbeat
        self.username = username
        self.password = password
        self.vhost = vhost
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = heartbeat
        self.client_properties: Any = client_properties if client_properties is not None else {
            "product": "mailslot-client",
            "capabilities": {"publisher_confirms": True, "basic.nack": True, "consumer_cancel_notify": True,
                             "connection.blocked": True, "authentication_failure_close": True},
        }
        self.server_properties: dict[str, Any] = {}
        self.is_open = False
        self.closed = False
        self._out: list[bytes] = []
        # publish_raw/publish_batch: (channel, exchange, routing key, mandatory) -> encoded method frame
        self._publish_methods: dict[tuple[int, str, str, bool], bytes] = {}
        self._content_structs: dict[int, struct.Struct] = {}

    # ------------------------------------------------------------------ output
    def initiate(self) -> None:
        self._out.append(PROTOCOL_HEADER)

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def send_method(self, channel: int, method: base.Frame) -> None:
        """Any method without content, via pamqp (setup and teardown; not the hot path)."""
        self._out.append(codec.encode_method(channel, method))
        if channel and isinstance(method, commands.Confirm.Select):
            chan = self._channels.get(channel)
            if chan is not None:
                chan.publish_seq = 0

    def open_channel(self, channel: int) -> None:
        self._channels[channel] = _Channel()
        self.send_method(channel, commands.Channel.Open())

    def close_channel(self, channel: int, code: int = 200, text: str = "Goodbye") -> None:
        self.send_method(channel, commands.Channel.Close(reply_code=code, reply_text=text, class_id=0,
                                                         method_id=0))

    def confirm_select(self, channel: int) -> None:
        self.send_method(channel, commands.Confirm.Select())

    def basic_qos(self, channel: int, prefetch_count: int, global_: bool = False) -> None:
        self.send_method(channel, commands.Basic.Qos(prefetch_count=prefetch_count, global_=global_))

    def queue_declare(self, channel: int, queue: str, *, durable: bool = True, exclusive: bool = False,
                      auto_delete: bool = False, passive: bool = False,
                      arguments: dict[str, Any] | None = None) -> None:
        self.send_method(channel, commands.Queue.Declare(queue=queue, durable=durable, exclusive=exclusive,
                                                         auto_delete=auto_delete, passive=passive,
                                                         arguments=arguments))

    def queue_delete(self, channel: int, queue: str) -> None:
        self.send_method(channel, commands.Queue.Delete(queue=queue))

    def basic_consume(self, channel: int, queue: str, consumer_tag: str = "", *, no_ack: bool = False,
                      exclusive: bool = False, arguments: dict[str, Any] | None = None) -> None:
        self.send_method(channel, commands.Basic.Consume(queue=queue, consumer_tag=consumer_tag, no_ack=no_ack,
                                                         exclusive=exclusive, arguments=arguments))

    def basic_cancel(self, channel: int, consumer_tag: str) -> None:
        self.send_method(channel, commands.Basic.Cancel(consumer_tag=consumer_tag))

    def basic_ack(self, channel: int, delivery_tag: int, multiple: bool = False) -> None:
        self._out.append(codec.encode_ack(channel, delivery_tag, multiple))

    def basic_nack(self, channel: int, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self._out.append(codec.encode_nack(channel, delivery_tag, multiple, requeue))

    def send_heartbeat(self) -> None:
        self._out.append(codec.HEARTBEAT_FRAME)

    def close(self, code: int = 200, text: str = "Goodbye") -> None:
        self.send_method(0, commands.Connection.Close(reply_code=code, reply_text=text, class_id=0,
                                                      method_id=0))

    # ------------------------------------------------------------------ publish (hot path)
    def publish_template(self, channel: int, exchange: str, routing_key: str, body: bytes, *,
                         properties: bytes | commands.Basic.Properties | None = None, mandatory: bool = False,
                         stamp_size: int = 0) -> PublishTemplate:
        """Encode a message once. ``properties`` is a pamqp Properties or a raw property block."""
        if stamp_size > len(body):
            raise ValueError(f"stamp_size {stamp_size} > body size {len(body)}")
        if properties is None:
            raw = b"\x00\x00"
        elif isinstance(properties, bytes):
            raw = properties
        else:
            raw = encode_properties(properties)
        method = codec.encode_method(channel, commands.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                                     mandatory=mandatory))
        out = [method]
        codec.encode_content(out, channel, raw, body, self.frame_max)
        # method frame, content header frame (7 + 12 + props + 1), then the first body frame's 7-octet head.
        stamp_offset = len(method) + 7 + 12 + len(raw) + 1 + 7
        return PublishTemplate(channel, b"".join(out), stamp_offset, stamp_size, len(body))

    def publish(self, template: PublishTemplate, count: int = 1) -> int:
        """Send ``count`` copies of the template; returns the confirm sequence number of the last one."""
        self._out.append(template.whole * count if count != 1 else template.whole)
        chan = self._channels[template.channel]
        chan.publish_seq += count
        return chan.publish_seq

    def publish_stamped(self, template: PublishTemplate, stamps: list[bytes]) -> int:
        """Send one message per stamp (each exactly ``template.stamp_size`` octets, placed at the start
        of the body); returns the confirm sequence number of the last one."""
        if not stamps:
            return self._channels[template.channel].publish_seq
        self._out.append(template.prefix + template.separator.join(stamps) + template.suffix)
        chan = self._channels[template.channel]
        chan.publish_seq += len(stamps)
        return chan.publish_seq

    def publish_seq(self, channel: int) -> int:
        chan = self._channels.get(channel)
        return chan.publish_seq if chan is not None else 0

    def _publish_method(self, channel: int, exchange: str, routing_key: str, mandatory: bool) -> bytes:
        key = (channel, exchange, routing_key, mandatory)
        method = self._publish_methods.get(key)
        if method is None:
            if len(self._publish_methods) >= _PUBLISH_METHOD_CACHE_MAX:
                self._publish_methods.clear()  # a publisher cycling names only loses the memo
            method = self._publish_methods[key] = codec.encode_method(
                channel, commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory))
        return method

    def publish_raw(self, channel: int, exchange: str, routing_key: str, properties: bytes, body: bytes,
                    mandatory: bool = False) -> int:
        """One basic.publish with a raw property block (:mod:`.properties`); returns its confirm sequence
        number. The method frame is memoised per (channel, exchange, routing key, mandatory)."""
        return self.publish_batch(channel, ((exchange, routing_key, body),), properties, mandatory)

    def publish_batch(self, channel: int, messages: Iterable[tuple[str, str, bytes]], properties: bytes,
                      mandatory: bool = False) -> int:
        """One basic.publish per ``(exchange, routing_key, body)``, all with the same raw property block,
        appended as one output chunk; returns the confirm sequence number of the last one.

        Bodies up to frame_max - 8 octets cost one struct pack each (content header + property block +
        body frame header at once; byte-identical to :func:`.codec.encode_content`, checked in tests)."""
        chan = self._channels[channel]
        out: list[bytes] = []
        append = out.append
        plen = len(properties)
        st = self._content_structs.get(plen)
        if st is None:
            # content header (type, channel, size, class, weight, body size), properties, frame end,
            # then the body frame header (type, channel, size)
            st = self._content_structs[plen] = struct.Struct(f">BHIHHQ{plen}sBBHI")
        pack = st.pack
        hsize = 12 + plen
        chunk = self.frame_max - codec.FRAME_OVERHEAD if self.frame_max else 0
        methods = self._publish_methods
        end = codec.FRAME_END_BYTE
        n = 0
        for exchange, routing_key, body in messages:
            method = methods.get((channel, exchange, routing_key, mandatory))
            if method is None:
                method = self._publish_method(channel, exchange, routing_key, mandatory)
            append(method)
            size = len(body)
            if size and (not chunk or size <= chunk):
                append(pack(2, channel, hsize, 60, 0, size, properties, FRAME_END, 3, channel, size))
                append(body)
                append(end)
            else:
                codec.encode_content(out, channel, properties, body, self.frame_max)
            n += 1
        if out:
            self._out.append(b"".join(out))
        chan.publish_seq += n
        return chan.publish_seq

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes) -> list[Event]:
        """Parse everything in ``data`` (plus any kept tail); return the events, in order. Raises
        :class:`ClientProtocolError` when the server breaks the protocol."""
        events: list[Event] = []
        if self._halted:
            return events
        if self._tail:
            data = self._tail + data
        elif type(data) is not bytes:
            data = bytes(data)
        self._tail = b""
        self._read(data, events)
        return events

    def _framing_lost(self, events: list[Event], ftype: int, ch: int, payload: bytes, error: str) -> None:
        raise ClientProtocolError(f"framing lost (frame type {ftype}, channel {ch}): {error}")

    def _unexpected(self, events: list[Event], detail: str, index: int) -> None:
        raise ClientProtocolError(f"{detail} (method {index >> 16}.{index & 0xFFFF})")

    def _frame(self, events: list[Event], ftype: int, ch: int, data: bytes, p: int, end: int) -> None:
        if ftype == 8:
            return  # heartbeat: the driver saw bytes arrive, which is all it means
        if ftype not in (1, 2, 3):
            raise ClientProtocolError(f"unknown frame type {ftype}")
        if ch == 0:
            if ftype != 1:
                raise ClientProtocolError(f"content frame (type {ftype}) on channel 0")
            self._method0(events, self._method(data, p, end))
            return
        chan = self._channels.get(ch)
        if chan is None:
            raise ClientProtocolError(f"frame (type {ftype}) on channel {ch}, which is not open")
        if chan.expect != EXPECT_METHOD:
            if ftype == 2 and end - p < 12:
                raise ClientProtocolError(f"content header of {end - p} octets on channel {ch}")
            self._assemble(events, ftype, ch, chan, data, p, end)
            return
        if ftype != 1:
            raise ClientProtocolError(f"expected a method frame on channel {ch}, got type {ftype}")
        m = self._method(data, p, end)
        index = m.index
        if index in _CONTENT_METHODS:
            chan.method = m
            chan.expect = EXPECT_HEADER
        elif index == codec.DELIVER_INDEX:
            raise ClientProtocolError(f"cannot decode basic.deliver {codec.erlang_binary_w(data[p + 4:end])}")
        elif index == commands.Channel.Close.index:
            self.send_method(ch, commands.Channel.CloseOk())
            del self._channels[ch]
            events.append(ChannelCloseReceived(ch, m.reply_code or 0, m.reply_text or "", m.class_id or 0, m.method_id or 0))
        else:
            if index == commands.Channel.CloseOk.index:
                del self._channels[ch]  # the close we asked for is done
            events.append(MethodReceived(ch, m))

    @staticmethod
    def _method(data: bytes, p: int, end: int) -> Any:
        if end - p < 4:
            raise ClientProtocolError(f"method frame of {end - p} octets")
        index = int.from_bytes(data[p:p + 4], "big")
        cls = _INDEX.get(index)
        if cls is None:
            raise ClientProtocolError(f"unknown method id {index >> 16}.{index & 0xFFFF}")
        m: Any = _new(cls)
        try:
            m.unmarshal(data[p + 4:end])
        except Exception as exc:  # noqa: BLE001 - a server we cannot decode is a protocol error
            raise ClientProtocolError(f"cannot decode {cls.__name__}: {exc}") from None
        return m

    # ------------------------------------------------------------------ channel 0
    def _method0(self, events: list[Event], m: Any) -> None:
        handler = self._CHANNEL0.get(type(m))
        if handler is None:
            events.append(MethodReceived(0, m))  # connection.blocked / unblocked, update-secret-ok
        else:
            handler(self, events, m)

    def _on_start(self, events: list[Event], m: commands.Connection.Start) -> None:
        self.server_properties = m.server_properties or {}
        self.send_method(0, commands.Connection.StartOk(
            client_properties=self.client_properties, mechanism="PLAIN",
            response=plain_response(self.username, self.password), locale="en_US"))

    def _on_tune(self, events: list[Event], m: commands.Connection.Tune) -> None:
        self.frame_max = _negotiate(self.frame_max, m.frame_max)
        self.channel_max = _negotiate(self.channel_max, m.channel_max)
        if self.negotiate_heartbeat:
            self.heartbeat = _negotiate(self.heartbeat, m.heartbeat)
        self.send_method(0, commands.Connection.TuneOk(channel_max=self.channel_max, frame_max=self.frame_max,
                                                       heartbeat=self.heartbeat))
        self.send_method(0, commands.Connection.Open(virtual_host=self.vhost))

    def _on_open_ok(self, events: list[Event], m: commands.Connection.OpenOk) -> None:
        self.is_open = True
        events.append(Connected(self.server_properties, self.frame_max, self.channel_max, self.heartbeat))

    def _on_close(self, events: list[Event], m: commands.Connection.Close) -> None:
        self.send_method(0, commands.Connection.CloseOk())
        events.append(ConnectionCloseReceived.of(m))
        self._terminate(events, "closed by the server")

    def _on_close_ok(self, events: list[Event], m: commands.Connection.CloseOk) -> None:
        self._terminate(events, "closed")

    def _terminate(self, events: list[Event], reason: str) -> None:
        self.is_open = False
        self.closed = True
        self._halted = True
        events.append(ConnectionTerminated(reason))

    #: channel 0 methods the client answers itself; any other arrives as MethodReceived(0, method)
    _CHANNEL0: ClassVar[dict[type, Callable[[ClientConnection, list[Event], Any], None]]] = {
        commands.Connection.Start: _on_start,
        commands.Connection.Tune: _on_tune,
        commands.Connection.OpenOk: _on_open_ok,
        commands.Connection.Close: _on_close,
        commands.Connection.CloseOk: _on_close_ok,
    }


def _negotiate(ours: int, theirs: int) -> int:
    """AMQP 0-9-1 section 1.4.2.6: the lower of the two, where 0 means "no limit"."""
    if not ours:
        return theirs
    if not theirs:
        return ours
    return min(ours, theirs)
