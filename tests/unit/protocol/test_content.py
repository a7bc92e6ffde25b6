from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import body, commands, header
from pamqp import frame as pframe

from mailslot.protocols.amqp091 import AckReceived, ContentReceived, MethodReceived, properties
from mailslot.protocols.amqp091.peer import ClientPeer, method

from .helpers import channel_close_of, close_of, frames, handshake, new_server


def _ready(**kw):
    server, client, _ = handshake(client=ClientPeer(**kw))
    server.receive_data(client.open_channel(1) + client.open_channel(2), 0)
    server.data_to_send()
    return server, client


def test_publish_single_frame() -> None:
    server, client = _ready()
    props = commands.Basic.Properties(content_type="text/plain", delivery_mode=2, headers={"a": 1})
    events = server.receive_data(client.publish(1, "ex", "rk", b"hello", props, mandatory=True), 0)
    assert len(events) == 1
    e = events[0]
    assert isinstance(e, ContentReceived) and e.channel == 1 and e.body == b"hello"
    assert isinstance(e.method, commands.Basic.Publish)
    assert (e.method.exchange, e.method.routing_key, e.method.mandatory, e.method.immediate) == ("ex", "rk", True, False)
    assert e.properties == props.marshal()
    assert properties.delivery_mode(e.properties) == 2
    assert type(e.body) is bytes


def test_publish_multi_frame_and_empty_body() -> None:
    server, client = _ready(frame_max=4096)
    big = bytes(range(256)) * 50
    events = server.receive_data(client.publish(1, "", "q", big) + client.publish(2, "", "q", b""), 0)
    assert [(e.channel, e.body) for e in events] == [(1, big), (2, b"")]
    assert type(events[0].body) is bytes


def test_ack_fast_path() -> None:
    server, client = _ready()
    events = server.receive_data(client.ack(1, 2**63 - 1, True) + client.ack(2, 5), 0)
    assert [(e.channel, e.delivery_tag, e.multiple) for e in events] == [(1, 2**63 - 1, True), (2, 5, False)]
    assert all(isinstance(e, AckReceived) for e in events)
    assert dict(events[0].method) == dict(commands.Basic.Ack(delivery_tag=2**63 - 1, multiple=True))


def test_interleaved_channels() -> None:
    server, client = _ready(frame_max=4096)
    a = client.publish(1, "", "a", b"A" * 10000)
    b = client.publish(2, "", "b", b"B" * 5000)
    fa, _ = _split_frames(a)
    fb, _ = _split_frames(b)
    stream = b"".join(x for pair in zip(fa, fb) for x in pair) + b"".join(fa[len(fb):]) + b"".join(fb[len(fa):])
    events = server.receive_data(stream, 0)
    assert sorted((e.channel, e.body) for e in events) == [(1, b"A" * 10000), (2, b"B" * 5000)]


def _split_frames(data: bytes):
    out = []
    while data:
        size = struct.unpack_from(">I", data, 3)[0]
        out.append(data[:size + 8])
        data = data[size + 8:]
    return out, data


def _stream(client: ClientPeer) -> bytes:
    parts = []
    for i in range(6):
        parts.append(client.publish(1 + i % 2, "ex", f"k{i}", bytes([i]) * (i * 3000),
                                    commands.Basic.Properties(delivery_mode=1 + i % 2)))
        parts.append(client.ack(1, i + 1))
    parts.append(method(1, commands.Basic.Qos(prefetch_count=10)))
    parts.append(b"\x08\x00\x00\x00\x00\x00\x00\xce")
    return b"".join(parts)


def _summary(events):
    out = []
    for e in events:
        if isinstance(e, ContentReceived):
            out.append(("c", e.channel, e.method.routing_key, e.properties, bytes(e.body)))
        elif isinstance(e, MethodReceived):
            out.append(("m", e.channel, type(e.method).__name__, tuple(e.method)))
        elif isinstance(e, AckReceived):
            out.append(("m", e.channel, "Ack", (e.delivery_tag, e.multiple)))
        else:
            out.append(("e", repr(e)))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40000), max_size=12))
def test_any_split_gives_same_events(cuts: list[int]) -> None:
    server, client = _ready(frame_max=4096)
    stream = _stream(client)
    reference = _summary(server.receive_data(stream, 0))
    assert len(reference) == 13
    server, client = _ready(frame_max=4096)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    events = []
    prev = 0
    for c in points + [len(stream)]:
        events += server.receive_data(stream[prev:c], 0)
        prev = c
    assert _summary(events) == reference


def test_oversized_body_refused_at_header() -> None:
    server, client, _ = handshake(server=None)
    from .helpers import new_server
    server, client, _ = handshake(server=new_server(max_message_size=1000))
    server.receive_data(client.open_channel(1), 0)
    server.data_to_send()
    pub = pframe.marshal(commands.Basic.Publish(routing_key="q"), 1)
    hdr = pframe.marshal(header.ContentHeader(0, 5000, commands.Basic.Properties()), 1)
    assert server.receive_data(pub + hdr, 0) == []
    ch, close = channel_close_of(server)
    assert ch == 1 and close.reply_code == 406
    assert close.reply_text == "PRECONDITION_FAILED - message size 5000 is larger than configured max size 1000"
    assert (close.class_id, close.method_id) == (60, 40)
    # body frames of the refused message are counted and dropped
    assert server.receive_data(pframe.marshal(body.ContentBody(b"x" * 5000), 1), 0) == []
    assert server.receive_data(method(1, commands.Channel.CloseOk()), 0) == []
    assert not server.closing


def test_method_instead_of_header_is_505() -> None:
    server, _client = _ready()
    pub = pframe.marshal(commands.Basic.Publish(routing_key="q"), 1)
    server.receive_data(pub + method(1, commands.Basic.Qos()), 0)
    close = close_of(server)
    assert close.reply_code == 505
    assert close.reply_text == ("UNEXPECTED_FRAME - expected content header for class 60, "
                                "got non content header frame instead")
    assert (close.class_id, close.method_id) == (60, 40)


def test_header_for_wrong_class_is_505() -> None:
    server, _client = _ready()
    pub = pframe.marshal(commands.Basic.Publish(routing_key="q"), 1)
    hdr = struct.pack(">BHIHHQ", 2, 1, 14, 50, 0, 3) + b"\x00\x00\xce"
    server.receive_data(pub + hdr, 0)
    assert close_of(server).reply_text == ("UNEXPECTED_FRAME - expected content header for class 60, "
                                           "got one for class 50 instead")


def test_method_instead_of_body_is_505() -> None:
    server, client = _ready()
    pub = pframe.marshal(commands.Basic.Publish(routing_key="q"), 1)
    hdr = pframe.marshal(header.ContentHeader(0, 10, commands.Basic.Properties()), 1)
    server.receive_data(pub + hdr + pframe.marshal(body.ContentBody(b"12345"), 1) + client.ack(1, 1), 0)
    close = close_of(server)
    assert (close.reply_code, close.reply_text) == (
        505, "UNEXPECTED_FRAME - expected content body, got non content body frame instead")


def test_body_longer_than_declared_is_505() -> None:
    server, _client = _ready()
    pub = pframe.marshal(commands.Basic.Publish(routing_key="q"), 1)
    hdr = pframe.marshal(header.ContentHeader(0, 3, commands.Basic.Properties()), 1)
    events = server.receive_data(pub + hdr + pframe.marshal(body.ContentBody(b"12345"), 1), 0)
    assert events == []
    assert close_of(server).reply_code == 505


def test_body_without_publish_is_505() -> None:
    server, _client = _ready()
    server.receive_data(pframe.marshal(body.ContentBody(b"12345"), 1), 0)
    close = close_of(server)
    assert (close.reply_code, close.reply_text) == (
        505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead")
    assert (close.class_id, close.method_id) == (0, 0)


def test_content_header_on_channel_zero_is_505() -> None:
    server, _client = _ready()
    server.receive_data(pframe.marshal(header.ContentHeader(0, 3, commands.Basic.Properties()), 0), 0)
    assert close_of(server).reply_code == 505


def test_server_sends_content_split_by_frame_max() -> None:
    server, _client = _ready(frame_max=4096)
    payload = b"p" * 10000
    props = commands.Basic.Properties(delivery_mode=2).marshal()
    server.send_content(1, commands.Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="", routing_key="q"),
                        props, payload)
    f = frames(server)
    assert isinstance(f[0][1], commands.Basic.Return)
    assert isinstance(f[1][1], header.ContentHeader) and f[1][1].body_size == 10000
    bodies = [x[1].value for x in f[2:]]
    assert [len(b) for b in bodies] == [4088, 4088, 1824]
    assert b"".join(bodies) == payload


def test_answer_in_order_stops_before_a_frame_this_layer_answers() -> None:
    # queue.declare then channel.close in one read: the host must answer the declare before this layer
    # writes close-ok, or declare-ok would follow close-ok on a closed channel (RabbitMQ answers in order).
    from pamqp import commands

    from mailslot.protocols.amqp091 import ChannelCloseReceived, MethodReceived
    from mailslot.protocols.amqp091.peer import method

    server, _client, _ = handshake(server=new_server(answer_in_order=True))
    server.receive_data(method(1, commands.Channel.Open()), 0)
    server.data_to_send()
    both = method(1, commands.Queue.Declare(queue="q")) + method(1, commands.Channel.Close(200, "bye", 0, 0))
    events = server.receive_data(both, 0)
    assert [type(e) for e in events] == [MethodReceived] and server.more_input
    assert server.data_to_send() == b""  # close-ok not written yet
    server.send_method(1, commands.Queue.DeclareOk(queue="q", message_count=0, consumer_count=0))
    events = server.receive_data(b"", 0)
    assert [type(e) for e in events] == [ChannelCloseReceived] and not server.more_input
    names = [type(f).__name__ for _, f in frames(server)]
    assert names == ["DeclareOk", "CloseOk"]
