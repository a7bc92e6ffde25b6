"""AMQP 0-9-1's PropertiesCodec (frontends/amqp091/properties.py): the byte-level behaviour the core relies
on (readers that never raise on a peer's bytes, rewrites that keep every other byte), and conversion to
and from the neutral Properties."""

from __future__ import annotations

import datetime

import pytest
from pamqp import commands

from mailslot.core.message import Message, Properties
from mailslot.frontends.amqp091 import AMQP_CODEC, AMQPPropertiesCodec
from mailslot.protocols.amqp091 import properties as props
from mailslot.testing.codec import JSON_CODEC


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"priority": 7},
        {"priority": 0, "delivery_mode": 2},
        {"priority": 255, "content_type": "text/plain", "content_encoding": "gzip", "headers": {"a": 1, "b": [1, "x"]}},
        {"priority": 4, "headers": {}, "delivery_mode": 1, "expiration": "100", "message_id": "m"},
        {"delivery_mode": 2, "headers": {"x": "y"}},
    ],
)
def test_priority_is_read_from_the_raw_block_as_pamqp_decodes_it(fields):
    raw = props.encode_properties(commands.Basic.Properties(**fields))
    assert props.priority(raw) == (props.decode_properties(raw).priority or 0)


@pytest.mark.parametrize("raw", [b"", b"\x08", b"\x08\x00", b"\x28\x00\x00\x00\x00\x09"])
def test_a_malformed_block_reads_as_priority_zero_in_the_codec(raw):
    with pytest.raises(ValueError):
        props.priority(raw)
    assert AMQPPropertiesCodec.priority(raw) == 0




@pytest.mark.parametrize(
    "headers",
    [
        {"x-deduplication-header": "k", "x-cache-ttl": 500},
        {"a": [1, 2], "b": {"c": 1.5}, "x-deduplication-header": 42, "d": None},
        {"x-deduplication-header": "caf\u00e9", "t": True},
        {"x-deduplication-header": 2.5},
        {"other": "v"},
    ],
)
def test_header_reader_agrees_with_the_full_decode(headers):
    raw = commands.Basic.Properties(content_type="text/plain", headers=headers, delivery_mode=2).marshal()
    full = AMQPPropertiesCodec.headers(raw) or {}
    for name in ("x-deduplication-header", "x-cache-ttl", "missing"):
        assert AMQPPropertiesCodec.header(raw, name) == full.get(name)


def test_header_reader_never_raises_on_a_truncated_block():
    raw = commands.Basic.Properties(headers={"x-deduplication-header": "key"}).marshal()
    for cut in range(len(raw)):
        AMQPPropertiesCodec.header(raw[:cut], "x-deduplication-header")  # None or a value, never an error
        AMQPPropertiesCodec.message_id(raw[:cut])



def _entry(key: bytes, type_and_value: bytes) -> bytes:
    return bytes([len(key)]) + key + type_and_value


def test_negating_x_delay_leaves_every_other_byte_alone() -> None:
    # A double ('d') and a long ('l') header would not survive a pamqp decode/encode round trip as they are.
    table = _entry(b"price", b"d" + b"\x40\x09\x21\xf9\xf0\x1b\x86\x6e") + _entry(b"x-delay", b"l" + (
        5000).to_bytes(8, "big")) + _entry(b"big", b"l" + (7).to_bytes(8, "big"))
    flags = props.FLAG_CONTENT_TYPE | props.FLAG_HEADERS | props.FLAG_DELIVERY_MODE
    raw = (flags.to_bytes(2, "big") + b"\x04text" + len(table).to_bytes(4, "big") + table + b"\x02")
    rewritten = AMQPPropertiesCodec.with_int_header(raw, "x-delay", -5000)
    kept = _entry(b"price", b"d" + b"\x40\x09\x21\xf9\xf0\x1b\x86\x6e") + _entry(b"big", b"l" + (7).to_bytes(8, "big"))
    new_table = kept + _entry(b"x-delay", b"I" + (-5000).to_bytes(4, "big", signed=True))
    assert rewritten == flags.to_bytes(2, "big") + b"\x04text" + len(new_table).to_bytes(4, "big") + new_table + b"\x02"
    decoded = props.decode_properties(rewritten)
    assert (decoded.content_type, decoded.delivery_mode, decoded.headers["x-delay"]) == ("text", 2, -5000)


def test_x_delay_header_is_added_to_a_block_without_headers() -> None:
    raw = props.encode_properties(commands.Basic.Properties(content_type="a/b", delivery_mode=2, priority=3))
    decoded = props.decode_properties(AMQPPropertiesCodec.with_int_header(raw, "x-delay", -(2**32 - 1)))
    assert (decoded.headers, decoded.content_type, decoded.delivery_mode, decoded.priority) == (
        {"x-delay": -(2**32 - 1)}, "a/b", 2, 3)
    headers_flag = props.FLAG_HEADERS.to_bytes(2, "big")
    for malformed in (headers_flag + b"\x00\x00\x00\x64abc", headers_flag + b"\x00\x00\x00\x03\x05ab"):
        with pytest.raises(ValueError):  # the caller routes such a message at once
            AMQPPropertiesCodec.with_int_header(malformed, "x-delay", 1)


def test_delivery_count_header_keeps_every_other_byte_and_survives_malformed_properties():
    from mailslot.core.message import Entry
    from mailslot.core.redelivery import DELIVERY_COUNT_HEADER, delivery_properties

    def delivered_with_count(raw: bytes, count: int) -> bytes:
        entry = Entry(1, Message("", "q", raw, b"", True, AMQP_CODEC), True, False)
        entry.requeues = count
        return delivery_properties(entry, AMQP_CODEC)

    raw = props.encode_properties(commands.Basic.Properties(
        headers={"a": 1, "d": 0.5}, expiration="5000", content_type="text/plain", delivery_mode=2, priority=3))
    out = props.decode_properties(delivered_with_count(raw, 4))
    assert (out.headers, out.expiration, out.content_type, out.delivery_mode, out.priority) == (
        {"a": 1, "d": 0.5, DELIVERY_COUNT_HEADER: 4}, "5000", "text/plain", 2, 3)
    assert props.decode_properties(delivered_with_count(b"\x00\x00", 1)).headers == {DELIVERY_COUNT_HEADER: 1}
    malformed = b"\x20\x00\x00\x00\x00\x09"  # headers flag, table length 9, nothing after it
    assert delivered_with_count(malformed, 1) == malformed


# ---- conversion: the container API another protocol's front end would use ----------------------------


def test_amqp_properties_read_through_the_container() -> None:
    stamp = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
    raw = props.encode_properties(commands.Basic.Properties(
        content_type="application/json", content_encoding="gzip", headers={"k": "v", "n": 7}, delivery_mode=2,
        priority=4, correlation_id="c-1", reply_to="replies", expiration="60000", message_id="m-1",
        timestamp=stamp, message_type="order", user_id="guest", app_id="shop"))
    message = Message("ex", "rk", raw, b"{}", True, AMQP_CODEC)
    assert (message.headers, message.priority, message.expiration, message.message_id) == (
        {"k": "v", "n": 7}, 4, "60000", "m-1")
    assert (message.content_type, message.correlation_id, message.reply_to) == ("application/json", "c-1", "replies")
    assert message.decoded() == Properties(
        content_type="application/json", content_encoding="gzip", headers={"k": "v", "n": 7}, priority=4,
        correlation_id="c-1", reply_to="replies", expiration="60000", message_id="m-1", timestamp=stamp,
        type="order", user_id="guest", app_id="shop")
    assert message.properties_for(AMQP_CODEC) is raw  # AMQP to AMQP: the bytes as they came, no decode
    assert message.properties_for(AMQPPropertiesCodec()) is raw  # the same codec by name


def test_a_message_from_another_protocol_is_delivered_over_amqp_with_its_properties() -> None:
    raw = JSON_CODEC.block(content_type="text/plain", headers={"k": "v"}, message_id="m-2", correlation_id="c",
                           expiration="1000", priority=2)
    persistent = Message("", "q", raw, b"x", True, JSON_CODEC)
    decoded = props.decode_properties(persistent.properties_for(AMQP_CODEC))
    assert (decoded.content_type, decoded.headers, decoded.message_id, decoded.correlation_id) == (
        "text/plain", {"k": "v"}, "m-2", "c")
    assert (decoded.expiration, decoded.priority, decoded.delivery_mode) == ("1000", 2, 2)
    transient = Message("", "q", raw, b"x", False, JSON_CODEC)
    assert props.decode_properties(transient.properties_for(AMQP_CODEC)).delivery_mode == 1
    # and back: an AMQP message read by the other codec keeps what both can say
    back = Message("", "q", persistent.properties_for(AMQP_CODEC), b"x", True, AMQP_CODEC)
    assert JSON_CODEC.decode(back.properties_for(JSON_CODEC)) == JSON_CODEC.decode(raw)


@pytest.mark.parametrize("raw", [b"", b"\x08", b"\xff\xff\xff", b"\x20\x00\x00\x00\x00\x09"])
def test_readers_never_raise_on_a_peers_bytes(raw: bytes) -> None:
    codec = AMQP_CODEC
    assert codec.headers(raw) is None and codec.header(raw, "x") is None
    assert codec.priority(raw) == 0 and codec.message_id(raw) is None and codec.expiration(raw) is None
    assert codec.decode(raw) == Properties()
