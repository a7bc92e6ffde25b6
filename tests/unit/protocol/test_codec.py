"""Hand-written fast paths, byte for byte against pamqp."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, header
from pamqp import frame as pframe

from mailslot.protocols.amqp091 import codec
from mailslot.protocols.amqp091.peer import parse_frames

from .helpers import frames, handshake

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_.:", max_size=60)
tags = st.integers(min_value=0, max_value=2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 65535), names, tags, st.booleans(), names, names)
def test_deliver_matches_pamqp(ch: int, ctag: str, tag: int, redelivered: bool, ex: str, rk: str) -> None:
    ours = codec.encode_deliver_method(ch, ctag, tag, redelivered, ex, rk)
    theirs = pframe.marshal(commands.Basic.Deliver(consumer_tag=ctag, delivery_tag=tag, redelivered=redelivered,
                                                   exchange=ex, routing_key=rk), ch)
    assert ours == theirs


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 65535), tags, st.booleans(), names, names, st.integers(0, 2**32 - 1))
def test_get_ok_matches_pamqp(ch: int, tag: int, redelivered: bool, ex: str, rk: str, count: int) -> None:
    ours = codec.encode_get_ok_method(ch, tag, redelivered, ex, rk, count)
    theirs = pframe.marshal(commands.Basic.GetOk(delivery_tag=tag, redelivered=redelivered, exchange=ex,
                                                 routing_key=rk, message_count=count), ch)
    assert ours == theirs


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 65535), tags, st.booleans())
def test_ack_nack_match_pamqp(ch: int, tag: int, multiple: bool) -> None:
    assert codec.encode_ack(ch, tag, multiple) == pframe.marshal(commands.Basic.Ack(tag, multiple), ch)
    assert codec.encode_nack(ch, tag, multiple) == pframe.marshal(
        commands.Basic.Nack(tag, multiple, requeue=False), ch)


@settings(max_examples=200, deadline=None)
@given(names, names, st.booleans(), st.booleans())
def test_publish_decode_matches_pamqp(ex: str, rk: str, mandatory: bool, immediate: bool) -> None:
    m = commands.Basic.Publish(exchange=ex, routing_key=rk, mandatory=mandatory, immediate=immediate)
    raw = pframe.marshal(m, 1)
    ours = codec.decode_publish(raw, 11, len(raw) - 1)
    _, _, theirs = pframe.unmarshal(raw)
    assert type(ours) is type(theirs)
    assert dict(ours) == dict(theirs)


@settings(max_examples=100, deadline=None)
@given(tags, st.booleans())
def test_ack_decode_matches_pamqp(tag: int, multiple: bool) -> None:
    raw = pframe.marshal(commands.Basic.Ack(tag, multiple), 1)
    ours = codec.decode_ack(raw, 11, len(raw) - 1)
    _, _, theirs = pframe.unmarshal(raw)
    assert dict(ours) == dict(theirs)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=20000), st.sampled_from([4096, 8192, 131072]))
def test_send_deliver_content_matches_pamqp(body: bytes, frame_max: int) -> None:
    props = commands.Basic.Properties(content_type="application/json", delivery_mode=2, headers={"x": 1})
    out: list[bytes] = []
    codec.encode_content(out, 3, props.marshal(), body, frame_max)
    ours = b"".join(out)
    expected = [pframe.marshal(header.ContentHeader(0, len(body), props), 3)]
    chunk = frame_max - 8
    from pamqp import body as pbody
    for i in range(0, len(body), chunk):
        expected.append(pframe.marshal(pbody.ContentBody(body[i:i + chunk]), 3))
    assert ours == b"".join(expected)


def test_send_deliver_end_to_end() -> None:
    server, _client, _ = handshake()
    props = commands.Basic.Properties(delivery_mode=2).marshal()
    server.send_deliver(1, "ctag", 7, True, "ex", "rk", props, b"body")
    server.send_get_ok(1, 8, False, "ex", "rk", 3, props, b"")
    server.send_ack(1, 9, True)
    server.send_nack(1, 10, False)
    server.send_heartbeat()
    f = frames(server)
    kinds = [type(x[1]).__name__ for x in f]
    assert kinds == ["Deliver", "ContentHeader", "ContentBody", "GetOk", "ContentHeader", "Ack", "Nack", "Heartbeat"]
    assert f[0][1].consumer_tag == "ctag" and f[0][1].redelivered is True
    assert f[2][1].value == b"body"
    assert f[3][1].message_count == 3


def test_erlang_binary_format() -> None:
    assert codec.erlang_binary(b"") == "<<>>"
    assert codec.erlang_binary(b"abc") == '<<"abc">>'
    assert codec.erlang_binary(b"\x00\x01") == "<<0,1>>"
    assert parse_frames(b"")[0] == []
