"""Property: what the broker delivers is exactly what was published.

Random publishes (names, pamqp Basic.Properties with random fields, bodies up to 300 KB) go through
AMQPConnection + core + memory store; the bytes of basic.deliver (send_deliver) and basic.get-ok
(send_content / send_get_ok) are decoded with pamqp, independently of the server's codec, and must give
back the published properties and body, with the exchange / routing key of the publish. Names stay
inside the characters pamqp's reply validators accept (see test_regressions.py bug 3 for the rest).
"""

from __future__ import annotations

import datetime
import string

from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands

from .harness import InternalErrors, Net, make_method, method_frame, publish_frames
from .profiles import FUZZ_SETTINGS
from .strategies import tables

SAFE = string.ascii_letters + string.digits + "-_.:@#,/+ "
names = st.text(alphabet=SAFE, min_size=1, max_size=40).filter(lambda s: not s.startswith("amq."))
short = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30).filter(
    lambda s: len(s.encode()) <= 255)


@st.composite
def basic_properties(draw) -> commands.Basic.Properties:
    p = commands.Basic.Properties()
    for attr in p.__slots__:
        if not draw(st.booleans()):
            continue
        if attr in ("delivery_mode",):
            value = draw(st.sampled_from([1, 2]))
        elif attr == "priority":
            value = draw(st.integers(0, 9))
        elif attr == "headers":
            value = draw(tables)
        elif attr == "timestamp":
            value = draw(st.datetimes(min_value=datetime.datetime(1970, 1, 2),
                                      max_value=datetime.datetime(2100, 1, 1), timezones=st.just(datetime.UTC))).replace(microsecond=0)
        elif attr == "expiration":
            value = draw(st.sampled_from(["60000", "3600000"]))  # long enough to be delivered
        elif attr == "user_id":
            value = "guest"  # RabbitMQ refuses any other user_id
        elif attr == "reply_to":
            value = draw(names)  # (direct reply-to is rewritten by design)
        else:
            value = draw(short)
        setattr(p, attr, value)
    return p


bodies = st.one_of(st.binary(max_size=2000), st.integers(0, 300 * 1024).map(lambda n: bytes(range(256)) * (n // 256)
                                                                            + b"\x00" * (n % 256)))


def _content(c, start: int, method_cls):
    """(method, props bytes, body) of the first ``method_cls`` delivered since frame ``start``."""
    frames = c.frames[start:]
    for i, f in enumerate(frames):
        if isinstance(f.method, method_cls):
            header = frames[i + 1]
            assert header.ftype == 2 and header.channel == f.channel
            body_size = int.from_bytes(header.payload[4:12], "big")
            body, j = b"", i + 2
            while len(body) < body_size:
                assert frames[j].ftype == 3 and frames[j].channel == f.channel
                assert len(frames[j].payload) <= c.net.frame_max - 8
                body += frames[j].payload
                j += 1
            assert len(body) == body_size
            return f.method, header.payload[12:], body
    raise AssertionError([f.name for f in frames])


def _decoded(raw: bytes) -> dict:
    p = commands.Basic.Properties()
    flags = int.from_bytes(raw[:2], "big")
    p.unmarshal(flags, raw[2:])
    return {k: v for k, v in p}


@FUZZ_SETTINGS
@given(props=basic_properties(), body=bodies, queue=names, routing_key=names,
       exchange=st.sampled_from(["", "x.fan", "amq.fanout"]), via=st.sampled_from(["consume", "get"]),
       frame_max=st.sampled_from([4096, 131072]))
def test_delivered_properties_and_body_round_trip(props, body, queue, routing_key, exchange, via, frame_max):
    raw = props.marshal()
    with InternalErrors() as errors:
        net = Net(frame_max=frame_max)
        c = net.connect()
        c.peer.frame_max = frame_max
        c.handshake()
        key = queue if exchange == "" else routing_key
        setup = method_frame(1, commands.Channel.Open()) + method_frame(1, make_method(commands.Queue.Declare,
                                                                                       queue=queue))
        if exchange:
            if exchange == "x.fan":
                setup += method_frame(1, make_method(commands.Exchange.Declare, exchange=exchange,
                                                     exchange_type="fanout"))
            setup += method_frame(1, make_method(commands.Queue.Bind, queue=queue, exchange=exchange))
        c.feed(setup)
        start = len(c.frames)
        c.feed(publish_frames(1, exchange, key, body, raw, frame_max=frame_max))
        if via == "consume":
            c.feed(method_frame(1, make_method(commands.Basic.Consume, queue=queue, consumer_tag="t", no_ack=True)))
            m, got_raw, got_body = _content(c, start, commands.Basic.Deliver)
        else:
            c.feed(method_frame(1, make_method(commands.Basic.Get, queue=queue, no_ack=True)))
            m, got_raw, got_body = _content(c, start, commands.Basic.GetOk)
        assert not c.connection_closes() and not c.channel_closes(), c.trace()
    assert not errors.records, errors.describe()
    assert got_body == body
    assert got_raw == raw  # forwarded untouched
    decoded = _decoded(got_raw)
    assert repr(decoded) == repr(_decoded(raw))  # repr: NaN in headers
    # pamqp leaves falsy values ("" / {} / 0) out of the block and encodes table floats as 32-bit;
    # every other field comes back as set
    assert ({k: v for k, v in decoded.items() if v and k != "headers"}
            == {k: v for k, v in props if v and k != "headers"})
    assert (m.exchange, m.routing_key, m.redelivered) == (exchange, key, False)
