"""The per-message fast paths of ServerConnection, byte for byte against pamqp and the general paths.

* publish parse: the whole-message path (method + header + body in one buffer), the publish-arguments
  memo and the ack path must give exactly the events and output of feeding the same frames one at a
  time (which takes the per-frame paths), for valid and broken input alike;
* deliver encode: the one-``struct.pack`` path of ``send_deliver`` must equal pamqp's frames and the
  general encoder (``encode_deliver_method`` + ``encode_content``), and raise what it raises.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import body as pbody
from pamqp import commands, header
from pamqp import frame as pframe

from mailslot.protocols.amqp091 import AckReceived, ContentReceived, MethodReceived, codec
from mailslot.protocols.amqp091.peer import ClientPeer, method

from .helpers import new_server

# pamqp validates exchange names on marshal: this alphabet is what it accepts.
pamqp_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_.:", max_size=60)
# On the wire anything UTF-8 up to 255 octets is a short string (RabbitMQ accepts it on publish).
wire_names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80).filter(
    lambda s: len(s.encode()) <= 255)
tags = st.integers(min_value=0, max_value=2**64 - 1)
# pamqp decodes a longlong as signed; below 2**63 it agrees with the (unsigned, as the spec says) fast path.
pamqp_tags = st.integers(min_value=0, max_value=2**63 - 1)
prop_blocks = st.sampled_from([
    commands.Basic.Properties().marshal(),
    commands.Basic.Properties(delivery_mode=1).marshal(),
    commands.Basic.Properties(content_type="application/json", delivery_mode=2, headers={"x": 1},
                              message_id="m-1", priority=3).marshal(),
])


def _ready(frame_max: int = 131072, max_message_size: int = 16 * 1024 * 1024):
    from .helpers import handshake
    server, client, _ = handshake(server=new_server(max_message_size=max_message_size),
                                  client=ClientPeer(frame_max=frame_max))
    server.receive_data(client.open_channel(1) + client.open_channel(2), 0)
    server.data_to_send()
    return server, client


def _frame(ftype: int, ch: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", ftype, ch, len(payload)) + payload + bytes((end,))


def _publish_args(exchange: bytes, routing_key: bytes, bits: int = 0, ticket: int = 0) -> bytes:
    return (struct.pack(">IH", codec.PUBLISH_INDEX, ticket) + bytes((len(exchange),)) + exchange
            + bytes((len(routing_key),)) + routing_key + bytes((bits,)))


def _header(body_size: int, props: bytes, class_id: int = 60, weight: int = 0) -> bytes:
    return struct.pack(">HHQ", class_id, weight, body_size) + props


# ---------------------------------------------------------------------------------------------- publish


@settings(max_examples=200, deadline=None)
@given(wire_names, wire_names, st.integers(0, 3), st.integers(0, 65535), prop_blocks,
       st.binary(max_size=600), st.integers(0, 2))
def test_publish_matches_pamqp_decode(ex: str, rk: str, bits: int, ticket: int, props: bytes, body: bytes,
                                      repeat: int) -> None:
    server, _ = _ready()
    args = _publish_args(ex.encode(), rk.encode(), bits, ticket)
    one = _frame(1, 1, args) + _frame(2, 1, _header(len(body), props)) + (_frame(3, 1, body) if body else b"")
    events = server.receive_data(one * (1 + repeat), 0)
    theirs = pframe.unmarshal(_frame(1, 1, args))[2]
    assert len(events) == 1 + repeat
    for e in events:
        assert type(e) is ContentReceived and e.channel == 1
        assert type(e.method) is commands.Basic.Publish and dict(e.method) == dict(theirs)
        assert type(e.method.mandatory) is bool and type(e.method.immediate) is bool
        assert e.properties == props and type(e.properties) is bytes
        assert e.body == body and type(e.body) is bytes
    # one decoded instance is shared by every publish with the same arguments
    assert all(e.method is events[0].method for e in events)


def test_publish_memo_is_bounded_and_distinguishes_arguments() -> None:
    server, client = _ready()
    codec.PUBLISH_CACHE.clear()
    stream = b"".join(client.publish(1, "ex", f"rk{i}", b"x", mandatory=bool(i % 2))
                      for i in range(codec.PUBLISH_CACHE_MAX + 10))
    events = server.receive_data(stream, 0)
    assert [(e.method.routing_key, e.method.mandatory) for e in events] == [
        (f"rk{i}", bool(i % 2)) for i in range(codec.PUBLISH_CACHE_MAX + 10)]
    assert len(codec.PUBLISH_CACHE) <= codec.PUBLISH_CACHE_MAX


def test_thirteen_octet_methods_that_are_not_ack() -> None:
    # basic.publish with 4 octets of names, basic.nack and basic.reject are 13-octet method frames too.
    server, client = _ready()
    stream = (client.publish(1, "ab", "cd", b"body")
              + method(1, commands.Basic.Nack(delivery_tag=7, multiple=True, requeue=False))
              + method(1, commands.Basic.Reject(delivery_tag=8, requeue=True))
              + client.ack(1, 9))
    assert _frame(1, 1, _publish_args(b"ab", b"cd"))[3:7] == b"\x00\x00\x00\x0d"
    events = server.receive_data(stream, 0)
    assert type(events[0]) is ContentReceived and events[0].method.exchange == "ab" and events[0].body == b"body"
    assert [type(e.method).__name__ for e in events[1:]] == ["Nack", "Reject", "Ack"]
    assert [type(e) for e in events[1:]] == [MethodReceived, MethodReceived, AckReceived]
    assert (events[1].method.delivery_tag, events[1].method.multiple, events[1].method.requeue) == (7, True, False)
    assert (events[3].delivery_tag, events[3].multiple) == (9, False)


def test_whole_buffer_body_in_several_frames() -> None:
    # The whole-message path takes one body frame only; a body split in frames is assembled as before.
    server, _ = _ready()
    args = _publish_args(b"", b"q")
    stream = (_frame(1, 1, args) + _frame(2, 1, _header(6, b"\x00\x00")) + _frame(3, 1, b"abc")
              + _frame(3, 1, b"def") + _frame(1, 1, args) + _frame(2, 1, _header(1, b"\x00\x00"))
              + _frame(3, 1, b"g"))
    events = server.receive_data(stream, 0)
    assert [(type(e), e.body) for e in events] == [(ContentReceived, b"abcdef"), (ContentReceived, b"g")]
    assert server.data_to_send() == b""


@settings(max_examples=100, deadline=None)
@given(pamqp_tags, st.integers(0, 255))
def test_ack_matches_pamqp_decode(tag: int, bits: int) -> None:
    server, _ = _ready()
    raw = _frame(1, 2, struct.pack(">IQB", codec.ACK_INDEX, tag, bits))
    (e,) = server.receive_data(raw, 0)
    theirs = pframe.unmarshal(raw)[2]
    assert type(e) is AckReceived and e.channel == 2
    assert {"delivery_tag": e.delivery_tag, "multiple": e.multiple} == dict(theirs)
    assert type(e.multiple) is bool


def _broken(frame_max: int) -> list[list[bytes]]:
    """Broken frame sequences: each must give the same error (code, text, or silent close) either way."""
    return [
        [_frame(1, 1, _publish_args(b"\xff", b"rk"))],  # not UTF-8: 501 cannot decode
        [_frame(1, 1, _publish_args(b"ex", b"rk") + b"\x00")],  # arguments do not fill the frame
        [_frame(1, 1, _publish_args(b"ex", b"rk")[:-1])],  # ... or are cut short
        [_frame(1, 1, _publish_args(b"ex", b"rk")), _frame(2, 1, _header(3, b"\x00\x00", class_id=61))],
        [_frame(1, 1, _publish_args(b"ex", b"rk")), _frame(2, 1, _header(3, b"\x00\x00", weight=1))],
        [_frame(1, 1, _publish_args(b"ex", b"rk")), _frame(2, 1, _header(3, b"\x00\x00")), _frame(3, 1, b"abcd")],
        [_frame(1, 1, _publish_args(b"ex", b"rk")), _frame(2, 1, _header(3, b"\x00\x00")), _frame(3, 2, b"abc")],
        [_frame(1, 1, _publish_args(b"ex", b"rk")), _frame(2, 2, _header(3, b"\x00\x00")), _frame(3, 1, b"abc")],
        [_frame(1, 1, _publish_args(b"ex", b"rk")), _frame(2, 1, _header(3, b"\x00\x00")),
         _frame(3, 1, b"abc", end=0)],  # bad frame end in the body frame
        [_frame(1, 1, _publish_args(b"ex", b"rk")), _frame(2, 1, _header(3, b"\x00\x00"), end=0x00),
         _frame(3, 1, b"abc")],  # ... in the header frame
        [_frame(1, 1, _publish_args(b"ex", b"rk")), _frame(2, 1, _header(frame_max + 1, b"\x00\x00")),
         _frame(3, 1, b"x" * (frame_max + 1))],  # body frame larger than frame_max
        [_frame(1, 1, _publish_args(b"ex", b"rk")), _frame(2, 1, _header(2, b"\x00\x00" + b"p" * frame_max)),
         _frame(3, 1, b"xx")],  # header frame larger than frame_max
        [_frame(1, 1, _publish_args(b"ex", b"rk")), _frame(2, 1, _header(5000, b"\x00\x00"))],  # > max size
        [_frame(1, 1, _publish_args(b"ex", b"rk")), _frame(2, 1, b"\x00\x3c\x00\x00")],  # header too short
        [_frame(1, 1, _publish_args(b"ex", b"rk")), _frame(1, 1, _publish_args(b"ex", b"rk"))],
        [_frame(1, 1, _publish_args(b"ex", b"rk")), _frame(2, 1, _header(3, b"\x00\x00")),
         _frame(1, 1, struct.pack(">IQB", codec.ACK_INDEX, 1, 0))],  # method instead of body
        [_frame(2, 1, _header(3, b"\x00\x00"))],  # header without publish
        [_frame(1, 1, struct.pack(">IQ", codec.ACK_INDEX, 1))],  # ack one octet short
        [_frame(1, 1, struct.pack(">IQBB", codec.ACK_INDEX, 1, 0, 0))],  # ack one octet long
        [_frame(1, 1, b"\x00\x3c")],  # method frame shorter than a method id
        [_frame(1, 1, struct.pack(">IQB", codec.NACK_INDEX, 1, 0))],
        [method(1, commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))],
        [_frame(3, 1, b"stray")],
        [_frame(9, 1, b"x")],
    ]


# Frames a peer might send after the handshake (channels 1 and 2 open, 3 not), valid and broken. Each
# entry is a list of frames; the differential test below feeds them whole and one frame at a time.
def _ops(frame_max: int):
    body = st.binary(max_size=3 * frame_max)
    name = st.sampled_from([b"", b"amq.direct", b"q", "é".encode(), b"ab"])
    ch = st.sampled_from([1, 1, 1, 2, 3])

    def publish(c, ex, rk, b, props, split):
        chunk = frame_max - 8
        frames = [_frame(1, c, _publish_args(ex, rk)), _frame(2, c, _header(len(b), props))]
        if split and len(b) > 1:
            cut = max(1, min(len(b) - 1, split))
            frames += [_frame(3, c, b[:cut]), _frame(3, c, b[cut:])]
        else:
            frames += [_frame(3, c, b[i:i + chunk]) for i in range(0, len(b), chunk)]
        return frames

    valid = st.builds(publish, ch, name, name, body, prop_blocks, st.integers(0, 3 * frame_max))
    ack = st.builds(lambda c, t, m: [_frame(1, c, struct.pack(">IQB", codec.ACK_INDEX, t, m))], ch, tags,
                    st.integers(0, 3))
    qos = st.builds(lambda c: [method(c, commands.Basic.Qos(prefetch_count=5))], ch)
    heartbeat = st.just([codec.HEARTBEAT_FRAME])
    broken = st.sampled_from(_broken(frame_max))
    return st.one_of(valid, valid, ack, qos, heartbeat, broken)


def _run(frame_max: int, chunks: list[bytes]):
    server, _ = _ready(frame_max=frame_max, max_message_size=1000 + 3 * frame_max)
    events = []
    for chunk in chunks:
        events += server.receive_data(chunk, 0)
    return events, server.data_to_send()


@pytest.mark.parametrize("frame_max", [4096, 131072])
@pytest.mark.parametrize("case", range(len(_broken(4096))))
def test_broken_input_whole_buffer_equals_frame_by_frame(frame_max: int, case: int) -> None:
    _, client = _ready()
    good = client.publish(1, "ex", "rk", b"before")
    frames = [good, *_broken(frame_max)[case], good]
    reference = _run(frame_max, frames)
    assert reference[0][0].body == b"before"
    assert reference != _run(frame_max, [good, good])  # the case is noticed (mostly as an error)
    assert _run(frame_max, [b"".join(frames)]) == reference
    assert _run(frame_max, [frames[0] + frames[1], b"".join(frames[2:])]) == reference


@pytest.mark.parametrize("frame_max", [4096, 131072])
def test_whole_buffer_equals_frame_by_frame(frame_max: int) -> None:
    @settings(max_examples=150, deadline=None)
    @given(st.lists(_ops(frame_max), max_size=12), st.lists(st.integers(0, 10**6), max_size=6))
    def check(ops: list[list[bytes]], cuts: list[int]) -> None:
        frames = [f for op in ops for f in op]
        stream = b"".join(frames)
        reference = _run(frame_max, frames)  # one frame per call: the whole-message path never applies
        assert _run(frame_max, [stream]) == reference
        points = sorted({c % (len(stream) + 1) for c in cuts}) + [len(stream)]
        assert _run(frame_max, [stream[a:b] for a, b in zip([0] + points, points)]) == reference

    check()


# ---------------------------------------------------------------------------------------------- deliver


def _pamqp_delivery(ch: int, ctag: str, tag: int, redelivered: bool, ex: str, rk: str,
                    props: commands.Basic.Properties, body: bytes, frame_max: int) -> bytes:
    out = [pframe.marshal(commands.Basic.Deliver(consumer_tag=ctag, delivery_tag=tag, redelivered=redelivered,
                                                 exchange=ex, routing_key=rk), ch),
           pframe.marshal(header.ContentHeader(0, len(body), props), ch)]
    chunk = frame_max - 8 if frame_max else max(len(body), 1)
    out += [pframe.marshal(pbody.ContentBody(body[i:i + chunk]), ch) for i in range(0, len(body), chunk)]
    return b"".join(out)


_pamqp_props = st.sampled_from([
    commands.Basic.Properties(),
    commands.Basic.Properties(delivery_mode=2),
    commands.Basic.Properties(content_type="text/plain", headers={"k": "v"}, correlation_id="c" * 40),
])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 65535), pamqp_names, st.integers(0, 2**63 - 2), st.booleans(), pamqp_names, pamqp_names,
       _pamqp_props, st.binary(max_size=10000), st.sampled_from([4096, 8192, 131072]))
def test_send_deliver_matches_pamqp(ch: int, ctag: str, tag: int, redelivered: bool, ex: str, rk: str,
                                    props: commands.Basic.Properties, body: bytes, frame_max: int) -> None:
    server, _ = _ready(frame_max=frame_max)
    server.send_deliver(ch, ctag, tag, redelivered, ex, rk, props.marshal(), body)
    server.send_deliver(ch, ctag, tag + 1, not redelivered, ex, rk, props.marshal(), body)  # memo hit
    assert server.data_to_send() == (_pamqp_delivery(ch, ctag, tag, redelivered, ex, rk, props, body, frame_max)
                                     + _pamqp_delivery(ch, ctag, tag + 1, not redelivered, ex, rk, props, body,
                                                       frame_max))


def _general(ch: int, ctag: str, tag: int, redelivered: bool, ex: str, rk: str, props: bytes, body: bytes,
             frame_max: int) -> bytes:
    out = [codec.encode_deliver_method(ch, ctag, tag, redelivered, ex, rk)]
    codec.encode_content(out, ch, props, body, frame_max)
    return b"".join(out)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), wire_names, tags, st.booleans(), wire_names, wire_names,
                          st.binary(min_size=2, max_size=40), st.integers(0, 9000)), min_size=1, max_size=8),
       st.sampled_from([0, 4096, 131072]))
def test_send_deliver_matches_general_encoder(deliveries, frame_max: int) -> None:
    server, _ = _ready()
    server.frame_max = frame_max  # 0 (no limit) is negotiable when the server's own limit is 0
    expected = []
    for ch, ctag, tag, redelivered, ex, rk, props, size in deliveries:
        body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        for _ in range(3):  # the first sighting of a key takes the general path, later ones the packer
            server.send_deliver(ch, ctag, tag, redelivered, ex, rk, props, body)
            expected.append(_general(ch, ctag, tag, redelivered, ex, rk, props, body, frame_max))
    assert server.data_to_send() == b"".join(expected)


@pytest.mark.parametrize(("ctag", "tag", "exc"), [
    ("t" * 256, 1, ValueError),  # short string over 255 octets
    ("é" * 128, 1, ValueError),
    ("ctag", -1, OverflowError),
    ("ctag", 2**64, OverflowError),
])
def test_send_deliver_errors_as_general_encoder(ctag: str, tag: int, exc: type[Exception]) -> None:
    server, _ = _ready()
    for _ in range(2):  # a packer for ("ctag", "", "q")
        server.send_deliver(1, "ctag", 1, False, "", "q", b"\x00\x00", b"ok")
    server.data_to_send()
    with pytest.raises(exc):
        _general(1, ctag, tag, False, "", "q", b"\x00\x00", b"body", 131072)
    for _ in range(2):  # the second time through the packer
        with pytest.raises(exc):
            server.send_deliver(1, ctag, tag, False, "", "q", b"\x00\x00", b"body")
    assert server.data_to_send() == b""  # nothing half-queued


def test_send_deliver_memo_is_bounded() -> None:
    server, _ = _ready()
    for i in range(2000):
        server.send_deliver(1, f"ctag{i // 2}", i, False, "", "q", b"\x00\x00", b"b")
    assert len(server._deliver_packers) <= 256 and len(server._deliver_seen) <= 256
    assert server.data_to_send() == b"".join(
        _general(1, f"ctag{i // 2}", i, False, "", "q", b"\x00\x00", b"b", server.frame_max) for i in range(2000))


def test_send_deliver_accepts_buffers() -> None:
    # bytearray / memoryview properties and bodies (as a store may hand them over) encode the same.
    server, _ = _ready()
    server.send_deliver(1, "c", 0, True, "e", "r", b"\x00\x00", b"body")  # the key is seen
    server.data_to_send()
    server.send_deliver(1, "c", 1, True, "e", "r", memoryview(b"\x00\x00"), bytearray(b"body"))
    server.send_deliver(1, "c", 2, True, "e", "r", bytearray(b"\x00\x00"), memoryview(b"body"))
    assert server.data_to_send() == (_general(1, "c", 1, True, "e", "r", b"\x00\x00", b"body", server.frame_max)
                                     + _general(1, "c", 2, True, "e", "r", b"\x00\x00", b"body", server.frame_max))

