"""Frame reading and content assembly, one loop for both sides of a connection.

:class:`FrameReader` turns a byte stream into events: it splits frames (``struct.unpack_from`` on the
7-octet header; a partial frame stays as the tail for the next call), checks the frame size and the
frame-end octet, and assembles content per channel (method frame -> content header -> body frames ->
one event, the body joined once from slices of the input). :class:`~.connection.ServerConnection` and
:class:`~.client.ClientConnection` are its two subclasses; they differ in data, not in this loop:

* the *hot content method* (server: basic.publish, decoded through a memo into a shared pamqp
  ``Basic.Publish``; client: basic.deliver, decoded into a :class:`~.events.Delivery` that the loop then
  completes with properties and body), and the *hot acks* (server: basic.ack -> ``AckReceived``;
  client: basic.ack / basic.nack -> ``Confirm``), both handled inside the loop without a call;
* everything else goes to the subclass's ``_frame`` (the slow path: channel 0, channel open/close, other
  methods, errors), which may use the shared slow-path assembler :meth:`FrameReader._assemble`.

The hot path must stay as fast as it was when each side had its own loop (benchmarks/protocol_bench.py):
one loop iteration takes a whole message (method + header + one body frame) when it is all in the buffer,
and builds one object per event.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Generic, TypeVar

from .codec import FRAME_HEADER_STRUCT, FRAME_OVERHEAD, DecodeError
from .events import ContentReceived, Event

#: What a channel expects next (rabbit_command_assembler's states).
EXPECT_METHOD, EXPECT_HEADER, EXPECT_BODY = 0, 1, 2

_HEADER_ARGS = struct.Struct(">HHQ")  # class id, weight, body size
_HEADER_FRAME = struct.Struct(">BHIHHQ")  # frame header + class, weight, body size (21 octets)
_ACK_METHOD = struct.Struct(">IQB")  # method index + delivery tag + bits: a 13-octet basic.ack/nack frame
_METHOD_ID = struct.Struct(">I")
_new = object.__new__


class ChannelAssembly:
    """Per channel: what frame comes next and the content being assembled.

    ``method`` is the content method waiting for its content (a pamqp frame), or None when the content
    belongs to ``delivery``, an event the hot path built already (client side: basic.deliver).
    ``closing``: we sent channel.close; its frames are still assembled (to keep framing) but dropped.
    """

    __slots__ = ("closing", "delivery", "expect", "method", "parts", "props", "remaining")

    def __init__(self) -> None:
        self.closing = False
        self.expect = EXPECT_METHOD
        self.method: Any = None
        self.delivery: Any = None
        self.props = b""
        self.remaining = 0
        self.parts: list[Any] = []


_C = TypeVar("_C", bound=ChannelAssembly)


class FrameReader(Generic[_C]):
    """The frame loop shared by the server and the client connection (see the module docstring).

    Subclasses set the class-level role data and implement ``_frame``, ``_framing_lost`` and
    ``_unexpected``; they keep these attributes current (the loop re-reads them after each slow-path frame):

    * ``_fast``: channel frames may take the hot path (the connection is running);
    * ``_frame_limit``: the largest frame payload accepted (0: no check); ``_max_body``: the largest body;
    * ``_halted``: stop reading for good (drop the tail); ``_paused``: stop, keep the tail for later;
    * ``_in_order``: stop before a slow-path frame when events are pending (the host answers them first),
      setting ``_more``.
    """

    #: index of the content method the hot path decodes; 0: none
    HOT_CONTENT: ClassVar[int] = 0
    #: memo of its raw arguments -> decoded method (shared instances), or None
    HOT_CONTENT_MEMO: ClassVar[dict[bytes, Any] | None] = None
    #: True when ``_decode_hot_content`` returns the event itself (to be completed with the content)
    HOT_CONTENT_IS_EVENT: ClassVar[bool] = False
    #: method indexes of 13-octet ack-like frames decoded by the hot path into ``ACK_EVENT``
    HOT_ACKS: ClassVar[frozenset[int]] = frozenset()
    ACK_EVENT: ClassVar[type[Event]] = Event
    #: when set, the ack event gets ``ack = index != NACK_INDEX`` (client confirms)
    NACK_INDEX: ClassVar[int] = 0

    def __init__(self) -> None:
        self._channels: dict[int, _C] = {}
        self._tail = b""
        self._fast = False
        self._frame_limit = 0
        self._max_body = 1 << 64
        self._halted = False
        self._paused = False
        self._in_order = False
        self._more = False

    # ------------------------------------------------------------------ subclass hooks
    @staticmethod
    def _decode_hot_content(data: bytes, p: int, end: int) -> Any:
        """Decode the hot content method's arguments ``data[p:end]``; DecodeError when they do not."""
        raise DecodeError("no hot content method")

    def _frame(self, events: list[Event], ftype: int, ch: int, data: bytes, p: int, end: int) -> None:
        """A frame the hot path did not take (payload ``data[p:end]``)."""
        raise NotImplementedError

    def _framing_lost(self, events: list[Event], ftype: int, ch: int, payload: bytes, error: str) -> None:
        """The frame is too large or its end octet is wrong: framing is lost. Must halt or raise."""
        raise NotImplementedError

    def _unexpected(self, events: list[Event], detail: str, index: int) -> None:
        """A content frame out of order (``index``: the content method's). Must not return normally."""
        raise NotImplementedError

    def _body_too_large(self, events: list[Event], ch: int, chan: _C, body_size: int,
                        index: int) -> None:
        """A content header announces more than ``_max_body`` octets (the body is counted, not kept)."""

    # ------------------------------------------------------------------ the loop
    def _read(self, data: bytes, events: list[Event]) -> None:
        """Parse ``data`` (the kept tail already in front of it) and append the events."""
        unpack = FRAME_HEADER_STRUCT.unpack_from
        unpack_header = _HEADER_FRAME.unpack_from
        unpack_header_args = _HEADER_ARGS.unpack_from
        unpack_id = _METHOD_ID.unpack_from
        unpack_ack = _ACK_METHOD.unpack_from
        cls = type(self)
        hot_content = cls.HOT_CONTENT
        memo = cls.HOT_CONTENT_MEMO
        memo_get = memo.get if memo is not None else None
        decode_content = self._decode_hot_content
        content_is_event = cls.HOT_CONTENT_IS_EVENT
        hot_acks = cls.HOT_ACKS
        ack_event = cls.ACK_EVENT
        nack_index = cls.NACK_INDEX
        channels = self._channels
        append = events.append
        new = _new
        content_received = ContentReceived
        in_order = self._in_order
        n = len(data)
        off = 0
        view: memoryview | None = None
        ev: Any
        # Locals for the loop; only the slow path (_frame) changes them, so they are re-read after it.
        limit = self._frame_limit
        max_size = self._max_body
        fast = self._fast
        while n - off >= 7:
            ftype, ch, size = unpack(data, off)
            # rabbit_reader: PayloadSize > FrameMax - ?EMPTY_FRAME_SIZE + ?FRAME_SIZE_FUDGE, i.e. > FrameMax.
            if limit and size > limit:
                if events and in_order:  # answer what came before it first (see ``more_input``)
                    self._more = True
                    break
                self._framing_lost(events, ftype, ch, b"", f"{{frame_too_large,{size},{limit - FRAME_OVERHEAD}}}")
                return
            p = off + 7
            end = p + size
            if end >= n:
                break
            if data[end] != 0xCE:  # FRAME_END
                if events and in_order:
                    self._more = True
                    break
                self._framing_lost(events, ftype, ch, data[p:end], f"{{invalid_frame_end_marker,{data[end]}}}")
                return
            off = end + 1
            chan = channels.get(ch) if fast and ch else None
            if chan is not None and not chan.closing:
                # ---- hot path: the hot content method, acks, content on an open channel ----------------
                expect = chan.expect
                if ftype == 1:
                    if expect == EXPECT_METHOD:
                        if size == 13:
                            index, tag, bits = unpack_ack(data, p)
                            if index in hot_acks:
                                ev = new(ack_event)
                                ev.channel = ch
                                ev.delivery_tag = tag
                                ev.multiple = bits & 1 == 1
                                if nack_index:
                                    ev.ack = index != nack_index
                                append(ev)
                                continue
                        elif size >= 4:
                            index = unpack_id(data, p)[0]
                        else:
                            index = 0
                        if index == hot_content:
                            m = memo_get(data[p + 4:end]) if memo_get is not None else None
                            if m is None:
                                try:
                                    m = decode_content(data, p + 4, end)
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
                                            if content_is_event:
                                                ev = m
                                            else:
                                                ev = new(content_received)
                                                ev.method = m
                                            ev.channel = ch
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
                                                if content_is_event:
                                                    ev = m
                                                else:
                                                    ev = new(content_received)
                                                    ev.method = m
                                                ev.channel = ch
                                                ev.properties = props
                                                ev.body = data[b + 7:bend]
                                                append(ev)
                                                off = bend + 1
                                                continue
                                        if content_is_event:
                                            chan.delivery = m
                                        else:
                                            chan.method = m
                                        chan.props = props
                                        chan.remaining = body_size
                                        chan.expect = EXPECT_BODY
                                        off = b
                                        continue
                                if content_is_event:
                                    chan.delivery = m
                                else:
                                    chan.method = m
                                chan.expect = EXPECT_HEADER
                                continue
                elif ftype == 3 and expect == EXPECT_BODY:
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
                        chan.expect = EXPECT_METHOD
                        ev = chan.delivery
                        if ev is None:
                            ev = new(content_received)
                            ev.method = chan.method
                            chan.method = None
                        else:
                            chan.delivery = None
                        ev.channel = ch
                        ev.properties = chan.props
                        ev.body = body
                        append(ev)
                        continue
                elif ftype == 2 and expect == EXPECT_HEADER and size >= 14:
                    class_id, weight, body_size = unpack_header_args(data, p)
                    if class_id == 60 and weight == 0 and body_size <= max_size:
                        props = data[p + 12:end]
                        if body_size == 0:
                            self._complete(events, ch, chan, props, b"")
                        else:
                            chan.expect = EXPECT_BODY
                            chan.props = props
                            chan.remaining = body_size
                        continue
            # ---- everything else ---------------------------------------------------------------
            if events and in_order:
                # This frame may make us write (close-ok, an error): the host must answer the events
                # before it first, so replies leave in the order their requests arrived.
                off = p - 7
                self._more = True
                break
            self._frame(events, ftype, ch, data, p, end)
            if self._halted:
                return
            if self._paused:
                break
            fast = self._fast
            limit = self._frame_limit
            max_size = self._max_body
        self._tail = data[off:] if off < n else b""

    # ------------------------------------------------------------------ slow-path assembly
    def _assemble(self, events: list[Event], ftype: int, ch: int, chan: _C, data: bytes, p: int,
                  end: int) -> None:
        """A frame for a channel that expects a content header or body (rabbit_command_assembler). A
        header frame must be at least 12 octets (the caller checks). Frames of a closing channel are
        counted and dropped."""
        index = chan.method.index if chan.method is not None else type(self).HOT_CONTENT
        if chan.expect == EXPECT_HEADER:
            if ftype != 2:
                self._unexpected(events, "expected content header for class 60, got non content header frame "
                                         "instead", index)
            class_id, weight, body_size = _HEADER_ARGS.unpack_from(data, p)
            if class_id != 60:
                self._unexpected(events, f"expected content header for class 60, got one for class {class_id} "
                                         f"instead", index)
            if weight != 0:
                self._unexpected(events, "expected content header for class 60, got non content header frame "
                                         "instead", index)
            if body_size == 0:
                self._complete(events, ch, chan, data[p + 12:end], b"")
                return
            chan.expect = EXPECT_BODY
            chan.remaining = body_size
            chan.parts = []
            chan.props = data[p + 12:end]
            if body_size > self._max_body and not chan.closing:
                self._body_too_large(events, ch, chan, body_size, index)
            return
        if ftype != 3:
            self._unexpected(events, "expected content body, got non content body frame instead", index)
        remaining = chan.remaining - (end - p)
        if remaining < 0:
            # RabbitMQ 3.10 lets the remaining size go negative and never completes the message;
            # we refuse at once (see docs/amqp091.md).
            self._unexpected(events, f"content body frame exceeds the declared body size by {-remaining} "
                                     f"octets", index)
        chan.remaining = remaining
        if not chan.closing:
            chan.parts.append(memoryview(data)[p:end])
        if remaining == 0:
            self._complete(events, ch, chan, chan.props, b"".join(chan.parts))

    @staticmethod
    def _complete(events: list[Event], ch: int, chan: ChannelAssembly, props: bytes, body: bytes) -> None:
        """The content is whole: one event (none on a closing channel); the channel expects a method."""
        chan.expect = EXPECT_METHOD
        chan.parts = []
        if not chan.closing:
            ev = chan.delivery
            if ev is None:
                ev = ContentReceived(ch, chan.method, props, body)
            else:
                ev.channel = ch
                ev.properties = props
                ev.body = body
            events.append(ev)
        chan.method = None
        chan.delivery = None
