"""Client side of an AMQP 0-9-1 connection, sans-IO and batch-shaped: bytes in -> events out.

Built for load generation (``mailslot bench``) but a complete enough client for tools and tests:

* ``receive_data(data)`` parses the whole buffer in one loop and returns a list of events; a partial
  frame stays as the tail for the next call. The handshake (PLAIN) answers itself; so do the peer's
  connection.close and channel.close (close-ok is queued).
* Every call that sends something appends bytes to an output list; ``data_to_send()`` joins it once.
* The hot path is three things and none of them builds pamqp objects: basic.publish from a pre-encoded
  template (:meth:`ClientConnection.publish` / :meth:`ClientConnection.publish_stamped`), publisher
  confirms (basic.ack / basic.nack -> :class:`Confirm`), and basic.deliver + content
  (-> :class:`Delivery`, body as one ``bytes``). Everything else is decoded and encoded by pamqp.

It shares the server's codec (:mod:`.codec`): frame header struct, method/content/ack encoders and the
method-index constants. The client-only parts are the deliver/confirm argument decoders below; they
are checked against pamqp in tests/unit/protocol/test_client.py.

A server that breaks framing (bad frame-end octet, unknown method) is the peer's fault:
:class:`ClientProtocolError` is raised and the connection is no longer usable.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from pamqp import base, commands

from . import codec
from .codec import FRAME_END, FRAME_HEADER_STRUCT
from .events import ContentReceived, Event, MethodReceived
from .properties import encode_properties

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

_U32 = struct.Struct(">I")
_TAG_BIT = struct.Struct(">QB")  # delivery-tag u64 + bit octet (basic.deliver, basic.ack, basic.nack)
_HEADER_ARGS = struct.Struct(">HHQ")  # class id, weight, body size
_INDEX = commands.INDEX_MAPPING
_DELIVER = codec.DELIVER_INDEX
_ACK = codec.ACK_INDEX
_NACK = codec.NACK_INDEX
_CONTENT_METHODS = frozenset({commands.Basic.Return.index, commands.Basic.GetOk.index})
_START = commands.Connection.Start.index
_TUNE = commands.Connection.Tune.index
_OPEN_OK = commands.Connection.OpenOk.index
_CLOSE = commands.Connection.Close.index
_CLOSE_OK = commands.Connection.CloseOk.index
_CHANNEL_CLOSE = commands.Channel.Close.index
_new = object.__new__
#: publish method frames memoised per ClientConnection; bounded (cleared when full)
_PUBLISH_METHOD_CACHE_MAX = 1024

_ASM_METHOD, _ASM_HEADER, _ASM_BODY = 0, 1, 2


class ClientProtocolError(Exception):
    """The server sent something that cannot be parsed (framing lost); the connection is unusable."""


# ---------------------------------------------------------------------------------------------- events
class Connected(Event):
    """connection.open-ok arrived: channels can be opened. Holds the negotiated values."""

    __slots__ = ("channel_max", "frame_max", "heartbeat", "server_properties")

    def __init__(self, server_properties: dict[str, Any], frame_max: int, channel_max: int,
                 heartbeat: int) -> None:
        self.server_properties = server_properties
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = heartbeat


class Confirm(Event):
    """A publisher confirm: basic.ack (``ack=True``) or basic.nack from the server."""

    __slots__ = ("ack", "channel", "delivery_tag", "multiple")

    def __init__(self, channel: int, delivery_tag: int, multiple: bool, ack: bool) -> None:
        self.channel = channel
        self.delivery_tag = delivery_tag
        self.multiple = multiple
        self.ack = ack


class Delivery(Event):
    """basic.deliver + content header + body. ``properties`` is the raw property block
    (decode with :func:`.properties.decode_properties` if needed); ``body`` is bytes."""

    __slots__ = ("body", "channel", "consumer_tag", "delivery_tag", "exchange", "properties", "redelivered",
                 "routing_key")

    def __init__(self, channel: int, consumer_tag: str, delivery_tag: int, redelivered: bool, exchange: str,
                 routing_key: str, properties: bytes, body: bytes) -> None:
        self.channel = channel
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties
        self.body = body


class ChannelClosed(Event):
    """The server closed a channel (channel.close-ok is already queued)."""

    __slots__ = ("channel", "class_id", "method_id", "reply_code", "reply_text")

    def __init__(self, channel: int, reply_code: int, reply_text: str, class_id: int, method_id: int) -> None:
        self.channel = channel
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id


class ConnectionClosed(Event):
    """The connection is over: the server closed it (``by_peer``, close-ok queued) or answered our close."""

    __slots__ = ("by_peer", "reply_code", "reply_text")

    def __init__(self, reply_code: int, reply_text: str, by_peer: bool) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.by_peer = by_peer


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


class _Channel:
    __slots__ = ("asm", "deliver", "method", "parts", "props", "publish_seq", "remaining")

    def __init__(self) -> None:
        self.asm = _ASM_METHOD
        self.deliver: tuple[str, int, bool, str, str] | None = None
        self.method: Any = None
        self.props = b""
        self.remaining = 0
        self.parts: list[Any] = []
        self.publish_seq = 0  # publisher-confirm sequence: the delivery tag of the last publish


class ClientConnection:
    """One AMQP 0-9-1 client connection (sans-IO). Call :meth:`initiate` first, then feed
    ``receive_data`` with what the server sends and write ``data_to_send()`` after each call."""

    def __init__(self, username: str = "guest", password: str = "guest", vhost: str = "/", *,
                 frame_max: int = 131072, channel_max: int = 2047, heartbeat: int = 0,
                 client_properties: dict[str, Any] | None = None, negotiate_heartbeat: bool = False) -> None:
        # heartbeat 0 = off: a load generator must not be disconnected while the broker is saturated.
        # negotiate_heartbeat=True: answer connection.tune with the lower of ours and the server's (0 = the
        # other one), as RabbitMQ's clients do; False (the default) sends ``heartbeat`` unchanged.
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
        self._channels: dict[int, _Channel] = {}
        self._out: list[bytes] = []
        self._tail = b""
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
            self._chan(channel).publish_seq = 0

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
        return self._chan(channel).publish_seq

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
        """Parse everything in ``data`` (plus any kept tail); return the events, in order."""
        events: list[Event] = []
        if self._tail:
            data = self._tail + data
        elif type(data) is not bytes:
            data = bytes(data)
        unpack = FRAME_HEADER_STRUCT.unpack_from
        u32 = _U32.unpack_from
        tag_bit = _TAG_BIT.unpack_from
        channels = self._channels
        n = len(data)
        off = 0
        view: memoryview | None = None
        while n - off >= 8:
            ftype, ch, size = unpack(data, off)
            p = off + 7
            end = p + size
            if end >= n:
                break
            if data[end] != FRAME_END:
                raise ClientProtocolError(f"invalid frame end octet {data[end]:#x}")
            off = end + 1
            if ftype == 3:  # ------------------------------------------------ body frame
                chan = channels[ch]
                remaining = chan.remaining - size
                if remaining > 0:
                    if view is None:
                        view = memoryview(data)
                    chan.parts.append(view[p:end])
                    chan.remaining = remaining
                    continue
                if chan.parts:
                    if view is None:
                        view = memoryview(data)
                    chan.parts.append(view[p:end])
                    body = b"".join(chan.parts)
                    chan.parts = []
                else:
                    body = data[p:end]
                chan.asm = _ASM_METHOD
                self._content_done(events, ch, chan, chan.props, body)
                continue
            if ftype == 1:  # ------------------------------------------------ method frame
                index = u32(data, p)[0]
                if index == _DELIVER:
                    q = p + 5 + data[p + 4]
                    consumer_tag = data[p + 5:q].decode()
                    tag, bits = tag_bit(data, q)
                    q += 9
                    r = q + 1 + data[q]
                    s = r + 1 + data[r]
                    chan = channels[ch]
                    chan.deliver = (consumer_tag, tag, bool(bits & 1), data[q + 1:r].decode(),
                                    data[r + 1:s].decode())
                    chan.asm = _ASM_HEADER
                    continue
                if index == _ACK or index == _NACK:
                    tag, bits = tag_bit(data, p + 4)
                    events.append(Confirm(ch, tag, bool(bits & 1), index == _ACK))
                    continue
                self._method(events, ch, index, data, p, end)
                continue
            if ftype == 2:  # ------------------------------------------------ content header
                chan = channels[ch]
                body_size = _HEADER_ARGS.unpack_from(data, p)[2]
                props = data[p + 12:end]
                if body_size == 0:
                    chan.asm = _ASM_METHOD
                    self._content_done(events, ch, chan, props, b"")
                else:
                    chan.asm = _ASM_BODY
                    chan.props = props
                    chan.remaining = body_size
                continue
            if ftype == 8:
                continue  # heartbeat: the driver saw bytes arrive, which is all it means
            raise ClientProtocolError(f"unknown frame type {ftype}")
        self._tail = data[off:] if off < n else b""
        return events

    def _content_done(self, events: list[Event], ch: int, chan: _Channel, props: bytes, body: bytes) -> None:
        d = chan.deliver
        if d is not None:
            events.append(Delivery(ch, d[0], d[1], d[2], d[3], d[4], props, body))
            chan.deliver = None
        else:
            events.append(ContentReceived(ch, chan.method, props, body))
            chan.method = None

    def _chan(self, channel: int) -> _Channel:
        chan = self._channels.get(channel)
        if chan is None:
            chan = self._channels[channel] = _Channel()
        return chan

    def _method(self, events: list[Event], ch: int, index: int, data: bytes, p: int, end: int) -> None:
        cls = _INDEX.get(index)
        if cls is None:
            raise ClientProtocolError(f"unknown method id {index >> 16}.{index & 0xFFFF}")
        m: Any = _new(cls)
        try:
            m.unmarshal(data[p + 4:end])
        except Exception as exc:  # noqa: BLE001 - a server we cannot decode is a protocol error
            raise ClientProtocolError(f"cannot decode {cls.__name__}: {exc}") from None
        if index in _CONTENT_METHODS:
            chan = self._chan(ch)
            chan.method = m
            chan.asm = _ASM_HEADER
            return
        if ch == 0:
            if index == _START:
                self.server_properties = m.server_properties or {}
                self.send_method(0, commands.Connection.StartOk(
                    client_properties=self.client_properties, mechanism="PLAIN",
                    response=f"\0{self.username}\0{self.password}", locale="en_US"))
                return
            if index == _TUNE:
                self.frame_max = _negotiate(self.frame_max, m.frame_max)
                self.channel_max = _negotiate(self.channel_max, m.channel_max)
                if self.negotiate_heartbeat:
                    self.heartbeat = _negotiate(self.heartbeat, m.heartbeat)
                self.send_method(0, commands.Connection.TuneOk(channel_max=self.channel_max,
                                                               frame_max=self.frame_max,
                                                               heartbeat=self.heartbeat))
                self.send_method(0, commands.Connection.Open(virtual_host=self.vhost))
                return
            if index == _OPEN_OK:
                self.is_open = True
                events.append(Connected(self.server_properties, self.frame_max, self.channel_max,
                                        self.heartbeat))
                return
            if index == _CLOSE:
                self.send_method(0, commands.Connection.CloseOk())
                self._closed(events, m.reply_code, m.reply_text, True)
                return
            if index == _CLOSE_OK:
                self._closed(events, 200, "", False)
                return
        elif index == _CHANNEL_CLOSE:
            self.send_method(ch, commands.Channel.CloseOk())
            self._channels.pop(ch, None)
            events.append(ChannelClosed(ch, m.reply_code, m.reply_text, m.class_id, m.method_id))
            return
        events.append(MethodReceived(ch, m))

    def _closed(self, events: list[Event], code: int, text: str, by_peer: bool) -> None:
        self.is_open = False
        self.closed = True
        events.append(ConnectionClosed(code, text, by_peer))


def _negotiate(ours: int, theirs: int) -> int:
    """AMQP 0-9-1 section 1.4.2.6: the lower of the two, where 0 means "no limit"."""
    if not ours:
        return theirs
    if not theirs:
        return ours
    return min(ours, theirs)
