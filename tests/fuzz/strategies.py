"""Hypothesis strategies for AMQP 0-9-1 client input: method frames with hostile field values, content
headers, bodies, random frame types and channels, and byte-level mutations of valid streams."""

from __future__ import annotations

import datetime
import struct
from typing import Any

from hypothesis import strategies as st
from pamqp import commands, encode

from .harness import content_header, frame_bytes, make_method, method_frame, publish_frames

# Every method a client may send (RabbitMQ's client-to-server set); server-only methods are sent too,
# less often, to reach the "unexpected method" paths.
CLIENT_METHODS = [
    commands.Channel.Open, commands.Channel.Flow, commands.Channel.FlowOk, commands.Channel.Close,
    commands.Channel.CloseOk,
    commands.Exchange.Declare, commands.Exchange.Delete, commands.Exchange.Bind, commands.Exchange.Unbind,
    commands.Queue.Declare, commands.Queue.Bind, commands.Queue.Unbind, commands.Queue.Purge, commands.Queue.Delete,
    commands.Basic.Qos, commands.Basic.Consume, commands.Basic.Cancel, commands.Basic.Publish, commands.Basic.Get,
    commands.Basic.Ack, commands.Basic.Reject, commands.Basic.RecoverAsync, commands.Basic.Recover,
    commands.Basic.Nack,
    commands.Tx.Select, commands.Tx.Commit, commands.Tx.Rollback, commands.Confirm.Select,
    commands.Connection.Close, commands.Connection.CloseOk, commands.Connection.UpdateSecret,
    commands.Connection.StartOk, commands.Connection.TuneOk, commands.Connection.Open,
    commands.Connection.SecureOk, commands.Connection.Blocked, commands.Connection.Unblocked,
]
SERVER_METHODS = [cls for cls in commands.INDEX_MAPPING.values() if cls not in CLIENT_METHODS]

# Names that make fuzzed methods interact with each other and with what the setup declared.
NAME_POOL = ["", "q1", "q2", "x1", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match",
             "amq.gen-x", "amq.rabbitmq.reply-to", "amq.rabbitmq.reply-to.abc", "amq.rabbitmq.trace", "#", "*",
             "a.b.c", "*.b.#", "#.#", "..", "ctag", "amq.ctag-1"]
EXCHANGE_TYPES = ["direct", "fanout", "topic", "headers", "x-consistent-hash", "x-delayed-message", "", "DIRECT"]
ARG_KEYS = ["x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-overflow",
            "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-max-priority", "x-queue-type",
            "x-queue-mode", "x-single-active-consumer", "x-max-in-memory-length", "x-max-in-memory-bytes",
            "x-match", "x-priority", "x-cancel-on-ha-failover", "alternate-exchange", "x-queue-master-locator",
            "x-delivery-limit", "x-stream-max-segment-size-bytes", "x-max-age", "x-consumer-timeout"]
ARG_STRINGS = ["all", "any", "all-with-x", "any-with-x", "drop-head", "reject-publish", "reject-publish-dlx",
               "classic", "quorum", "stream", "lazy", "default", "x1", "q1", "", "amq.direct"]

text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)
long_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=80, max_size=300)


def _fits_shortstr(s: str) -> bool:
    return len(s.encode()) <= 255


shortstr = st.one_of(st.sampled_from(NAME_POOL), text, long_text.filter(_fits_shortstr),
                     st.just("n" * 255), st.just("\u00e9" * 127), st.just("\U0001f600" * 63))

INT_EDGES = [0, 1, -1, 2**7 - 1, -2**7, 2**8 - 1, 2**15 - 1, -2**15, 2**16 - 1, 2**31 - 1, -2**31, 2**32 - 1,
             2**53 + 1, 2**63 - 1, -2**63]
table_ints = st.one_of(st.sampled_from(INT_EDGES), st.integers(-2**63, 2**63 - 1))

scalar_values = st.one_of(
    st.none(),
    st.booleans(),
    table_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-10**6, max_value=10**6),
    st.sampled_from(ARG_STRINGS),
    text,
    st.binary(max_size=20).map(bytearray),
    st.datetimes(min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(2100, 1, 1)),
)


def _tables(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.one_of(st.sampled_from(ARG_KEYS), text.filter(lambda s: len(s.encode()) <= 128)),
                           values, max_size=5)


field_values = st.recursive(scalar_values, lambda inner: st.one_of(st.lists(inner, max_size=4), _tables(inner)),
                            max_leaves=12)
tables = _tables(field_values)


def encodable_table(t: dict[str, Any]) -> bool:
    try:
        encode.field_table(t)
    except Exception:  # noqa: BLE001 - pamqp cannot encode it (e.g. Decimal exponent range): skip
        return False
    return True


tables = tables.filter(encodable_table)

TYPE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "bit": st.booleans(),
    "octet": st.one_of(st.sampled_from([0, 1, 2, 255]), st.integers(0, 255)),
    "short": st.one_of(st.sampled_from([0, 1, 200, 320, 404, 406, 541, 65535]), st.integers(0, 65535)),
    "long": st.one_of(st.sampled_from([0, 1, 4095, 4096, 131072, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1)),
    "longlong": st.one_of(st.sampled_from([0, 1, 2, 3, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1)),
    "shortstr": shortstr,
    "longstr": st.one_of(text, st.just("\x00guest\x00guest")),
    "table": tables,
    "timestamp": st.just(0),
}


@st.composite
def methods(draw: Any, classes: list[type] | None = None) -> Any:
    """A pamqp method object with hostile field values (built without pamqp's validator)."""
    if classes is None:
        cls = draw(st.one_of(st.sampled_from(CLIENT_METHODS), st.sampled_from(SERVER_METHODS)) if draw(
            st.integers(0, 9)) == 0 else st.sampled_from(CLIENT_METHODS))
    else:
        cls = draw(st.sampled_from(classes))
    fields: dict[str, Any] = {}
    for attr in cls.__slots__:
        kind = cls.amqp_type(attr)
        if attr == "exchange_type":
            fields[attr] = draw(st.one_of(st.sampled_from(EXCHANGE_TYPES), shortstr))
        else:
            fields[attr] = draw(TYPE_VALUES[kind])
    return make_method(cls, **fields)


@st.composite
def property_blocks(draw: Any) -> bytes:
    """A content-header property block: mostly pamqp-encoded Basic.Properties, sometimes raw bytes."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=40))
    if kind == 1:  # flag words claiming fields that are missing or truncated
        flags = draw(st.integers(0, 0xFFFF))
        return struct.pack(">H", flags) + draw(st.binary(max_size=12))
    props = commands.Basic.Properties()
    for attr in props.__slots__:
        if not draw(st.booleans()):
            continue
        kind_ = props.amqp_type(attr)
        if attr == "delivery_mode":
            value = draw(st.sampled_from([0, 1, 2, 3, 255]))
        elif attr == "reply_to":
            value = draw(st.sampled_from(["amq.rabbitmq.reply-to", "q1", ""]))
        elif attr == "user_id":
            value = draw(st.sampled_from(["guest", "other", ""]))
        elif attr == "expiration":
            value = draw(st.sampled_from(["0", "1000", "-1", "abc", "", "99999999999999999999", "1.5"]))
        elif kind_ == "timestamp":
            value = draw(st.datetimes(min_value=datetime.datetime(1970, 1, 2),
                                      max_value=datetime.datetime(2100, 1, 1)))
        elif kind_ == "table":
            value = draw(tables)
        else:
            value = draw(TYPE_VALUES[kind_])
        setattr(props, attr, value)
    try:
        return props.marshal()
    except Exception:  # noqa: BLE001 - pamqp refused a value; send the empty block
        return b"\x00\x00"


@st.composite
def fuzz_frames(draw: Any, channel: int = 1, max_message_size: int = 1024 * 1024) -> bytes:
    """One structurally valid frame (or a publish triple) with random contents, channel and type."""
    ch = draw(st.one_of(st.just(channel), st.just(channel), st.just(channel), st.sampled_from([0, 2, 3, 65535]),
                        st.integers(0, 65535)))
    kind = draw(st.integers(0, 15))
    if kind <= 7:
        return method_frame(ch, draw(methods()))
    if kind <= 9:  # a publish with a well-formed content triple, random props/body
        body = draw(st.binary(max_size=600))
        m = make_method(commands.Basic.Publish, exchange=draw(shortstr), routing_key=draw(shortstr),
                        mandatory=draw(st.booleans()), immediate=draw(st.integers(0, 5)) == 0)
        frame_max = draw(st.sampled_from([131072, 4096, 100, 9]))
        out = [method_frame(ch, m), content_header(ch, len(body), draw(property_blocks()))]
        chunk = frame_max - 8
        for i in range(0, len(body), chunk):
            out.append(frame_bytes(3, ch, body[i:i + chunk]))
        return b"".join(out)
    if kind == 10:  # content header alone, any declared size (incl. over max_message_size)
        size = draw(st.one_of(st.integers(0, 600), st.sampled_from(
            [max_message_size, max_message_size + 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1)))
        return content_header(ch, size, draw(property_blocks()), class_id=draw(st.sampled_from([60, 60, 60, 0, 10, 70])),
                              weight=draw(st.sampled_from([0, 0, 0, 1])))
    if kind == 11:
        return frame_bytes(3, ch, draw(st.binary(max_size=300)))
    if kind == 12:
        return frame_bytes(8, ch, draw(st.sampled_from([b"", b"", b"\x00"])))
    if kind == 13:  # random frame type, random payload
        return frame_bytes(draw(st.integers(0, 255)), ch, draw(st.binary(max_size=40)))
    if kind == 14:  # a method frame with a valid id and random argument bytes
        cls = draw(st.sampled_from(CLIENT_METHODS))
        return frame_bytes(1, ch, struct.pack(">I", cls.index) + draw(st.binary(max_size=40)))
    return frame_bytes(1, ch, draw(st.binary(max_size=12)))  # random method id


# ------------------------------------------------------------------------------------------ valid sessions

def _m(cls: type, **kw: Any) -> Any:
    return make_method(cls, **kw)


@st.composite
def valid_step(draw: Any, ch: int = 1) -> bytes:
    """One plausible client action on channel ``ch`` (well-formed frames; may still be refused)."""
    q = draw(st.sampled_from(["q1", "q2", "q3"]))
    x = draw(st.sampled_from(["x1", "amq.direct", "amq.topic", "amq.headers", "amq.fanout", ""]))
    tag = draw(st.integers(1, 6))
    step = draw(st.integers(0, 17))
    if step == 0:
        return method_frame(ch, _m(commands.Queue.Declare, queue=q, durable=draw(st.booleans()),
                                   arguments=draw(st.sampled_from([{}, {"x-max-length": 1},
                                                                   {"x-message-ttl": 0},
                                                                   {"x-dead-letter-exchange": "x1"},
                                                                   {"x-max-priority": 5}]))))
    if step == 1:
        return method_frame(ch, _m(commands.Exchange.Declare, exchange="x1",
                                   exchange_type=draw(st.sampled_from(["direct", "topic", "headers", "fanout"]))))
    if step == 2:
        return method_frame(ch, _m(commands.Queue.Bind, queue=q, exchange=x, routing_key=q,
                                   arguments=draw(st.sampled_from([{}, {"x-match": "any", "k": 1}]))))
    if step in (3, 4, 5):
        props = draw(property_blocks())
        return publish_frames(ch, x if step == 3 else "", q, draw(st.binary(max_size=300)), props,
                              frame_max=draw(st.sampled_from([131072, 64])), mandatory=draw(st.booleans()))
    if step == 6:
        return method_frame(ch, _m(commands.Basic.Consume, queue=q, consumer_tag=f"c{tag}",
                                   no_ack=draw(st.booleans())))
    if step == 7:
        return method_frame(ch, _m(commands.Basic.Cancel, consumer_tag=f"c{tag}"))
    if step == 8:
        return method_frame(ch, _m(commands.Basic.Get, queue=q, no_ack=draw(st.booleans())))
    if step == 9:
        return method_frame(ch, _m(commands.Basic.Ack, delivery_tag=tag, multiple=draw(st.booleans())))
    if step == 10:
        return method_frame(ch, _m(commands.Basic.Nack, delivery_tag=tag, multiple=draw(st.booleans()),
                                   requeue=draw(st.booleans())))
    if step == 11:
        return method_frame(ch, _m(commands.Basic.Reject, delivery_tag=tag, requeue=draw(st.booleans())))
    if step == 12:
        return method_frame(ch, _m(draw(st.sampled_from([commands.Tx.Select, commands.Tx.Commit,
                                                           commands.Tx.Rollback, commands.Confirm.Select]))))
    if step == 13:
        return method_frame(ch, _m(commands.Basic.Qos, prefetch_count=draw(st.integers(0, 3)),
                                   global_=draw(st.booleans())))
    if step == 14:
        return method_frame(ch, _m(commands.Basic.Recover, requeue=draw(st.booleans())))
    if step == 15:
        return method_frame(ch, _m(commands.Queue.Purge, queue=q))
    if step == 16:
        return method_frame(ch, _m(commands.Queue.Delete, queue=q, if_unused=draw(st.booleans()),
                                   if_empty=draw(st.booleans())))
    return method_frame(ch, _m(commands.Exchange.Bind, destination="x1", source=x, routing_key=q))


@st.composite
def valid_stream(draw: Any) -> bytes:
    """Channel opens and a short plausible session on channels 1..2."""
    parts = [method_frame(2, _m(commands.Channel.Open))] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 10))):
        parts.append(draw(valid_step(draw(st.sampled_from([1, 1, 2])) if parts else 1)))
    return b"".join(parts)


@st.composite
def mutated(draw: Any, data: bytes) -> bytes:
    """Byte flips, truncation, duplication, deletion and insertion applied to ``data``."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            break
        op = draw(st.integers(0, 5))
        i = draw(st.integers(0, len(buf) - 1))
        if op == 0:
            buf[i] = draw(st.integers(0, 255))
        elif op == 1:
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 2:
            del buf[draw(st.integers(i, len(buf))):]  # truncate
        elif op == 3:
            j = draw(st.integers(i, min(len(buf), i + 64)))
            buf[j:j] = buf[i:j]  # duplicate a slice
        elif op == 4:
            del buf[i:draw(st.integers(i, min(len(buf), i + 16)))]
        else:
            buf[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(buf)


@st.composite
def splits(draw: Any, data: bytes) -> list[bytes]:
    """``data`` cut into random receive() chunks (possibly mid-frame, possibly 1-byte pieces)."""
    if not data:
        return [data]
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=12))))
    out, prev = [], 0
    for c in cuts + [len(data)]:
        out.append(data[prev:c])
        prev = c
    return out
