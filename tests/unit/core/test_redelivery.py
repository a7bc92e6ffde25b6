"""Delivery limit, delivery count, retry delays and consumer timeouts, through core sessions and a FakeClock."""

from __future__ import annotations

from typing import Any

import pytest
from pamqp import commands

from mailslot.core.errors import PreconditionFailed
from mailslot.core.message import Entry, Message
from mailslot.core.redelivery import DELIVERY_COUNT_HEADER, delivery_properties, retry_delay_ms
from mailslot.core.session import Session
from mailslot.frontends.amqp091 import AMQPPropertiesCodec
from mailslot.protocols.amqp091 import properties as props
from mailslot.testing import CoreHarness, Delivery, RecordingSink

CODEC = AMQPPropertiesCodec()


def encoded(**kwargs: Any) -> bytes:
    return props.encode_properties(commands.Basic.Properties(**kwargs))


def nack_last(session: Session, sink: RecordingSink) -> None:
    session.nack(sink.last_tag(), multiple=False, requeue=True)


# ---- delivery limit and delivery count ---------------------------------------------------------------


def test_delivery_limit_dead_letters_after_limit_plus_one_deliveries_with_the_count_on_each():
    w = CoreHarness()
    w.declare("dlq")
    w.declare("work", {"x-delivery-limit": 2, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    s, sink = w.open()
    w.publish("work", b"poison", encoded(headers={"app": "x"}, expiration="60000"), session=s)
    s.consume("work", "c", no_ack=False, exclusive=False, arguments={})
    for _ in range(3):
        w.broker.flush()
        nack_last(s, sink)
    w.broker.flush()
    assert [d.requeues for d in sink.deliveries] == [0, 1, 2]  # RabbitMQ quorum queue, x-delivery-limit 2
    first, second, third = (CODEC.headers(sent(d)) for d in sink.deliveries)
    assert first == {"app": "x"}  # never requeued: sent as published
    assert second == {"app": "x", DELIVERY_COUNT_HEADER: 1}
    assert third == {"app": "x", DELIVERY_COUNT_HEADER: 2}
    assert CODEC.expiration(sent(sink.deliveries[2])) == "60000"  # the copy keeps everything else
    assert w.vhost.queue("work").message_count == 0
    got = s.get("dlq", no_ack=True)
    assert got is not None
    headers = CODEC.headers(got[1].message.properties) or {}
    death = headers["x-death"][0]
    assert (death["reason"], death["queue"], death["count"]) == ("delivery_limit", "work", 1)
    assert headers["x-first-death-reason"] == "delivery_limit"
    assert DELIVERY_COUNT_HEADER not in headers  # as RabbitMQ: the count is not carried into the DLQ


def test_delivery_limit_without_dead_letter_exchange_drops_and_forgets_the_stored_row():
    w = CoreHarness()
    w.declare("work", {"x-delivery-limit": 0})
    s, _ = w.open()
    w.publish("work", b"m", session=s)
    w.broker.flush()
    tag, entry, _ = s.get("work", no_ack=False)
    assert entry.requeues == 0
    s.nack(tag, multiple=False, requeue=True)
    w.broker.flush()
    assert w.vhost.queue("work").message_count == 0
    assert s.get("work", no_ack=True) is None
    assert w.log.read("/\x00work", 0, 10) == []


def test_requeue_on_close_counts_and_nack_without_requeue_does_not():
    w = CoreHarness()
    w.declare("work", {"x-delivery-limit": 5})
    s1, _ = w.open()
    w.publish("work", b"m", session=s1)
    s1.get("work", no_ack=False)
    s1.close()  # channel gone with the delivery unacked
    s2, _ = w.open()
    tag, entry, _ = s2.get("work", no_ack=False)
    assert (entry.requeues, entry.redelivered) == (1, True)
    s2.nack(tag, multiple=False, requeue=False)  # rejected for good: dropped, no count
    assert w.vhost.queue("work").message_count == 0


def test_delivery_count_is_stored_and_survives_a_restart():
    w = CoreHarness()
    w.declare("work")
    s, _ = w.open()
    w.publish("work", b"m", session=s)
    for _ in range(3):
        tag, _, _ = s.get("work", no_ack=False)
        s.nack(tag, multiple=False, requeue=True)
    w.broker.flush()
    assert [row.requeues for row in w.log.read("/\x00work", 0, 10)] == [3]
    w.restart()  # on the same store
    s2, _ = w.open()
    _, entry, _ = s2.get("work", no_ack=False)
    assert (entry.requeues, entry.redelivered) == (3, True)


def delivered_with_count(raw: bytes, count: int) -> bytes:
    entry = Entry(1, Message("", "q", raw, b"", True), True, False)
    entry.requeues = count
    return delivery_properties(CODEC, entry)


def sent(delivery: Delivery) -> bytes:
    """The properties the AMQP front end sends ``delivery`` with (x-delivery-count once requeued)."""
    return delivered_with_count(delivery.message.properties, delivery.requeues) if delivery.requeues else (
        delivery.message.properties)


def test_delivery_count_header_keeps_other_properties_and_survives_malformed_properties():
    raw = encoded(headers={"a": 1, "d": 0.5}, expiration="5000", content_type="text/plain", delivery_mode=2,
                  priority=3)
    out = props.decode_properties(delivered_with_count(raw, 4))
    assert (out.headers, out.expiration, out.content_type, out.delivery_mode, out.priority) == (
        {"a": 1, "d": 0.5, DELIVERY_COUNT_HEADER: 4}, "5000", "text/plain", 2, 3)
    assert props.decode_properties(delivered_with_count(b"\x00\x00", 1)).headers == {DELIVERY_COUNT_HEADER: 1}
    malformed = b"\x20\x00\x00\x00\x00\x09"  # headers flag, table length 9, nothing after it
    assert delivered_with_count(malformed, 1) == malformed


# ---- retry delays -----------------------------------------------------------------------------------


def test_retry_delay_grows_with_the_count_and_the_last_one_repeats():
    delays = (1000, 5000, 30000)
    assert [retry_delay_ms(delays, n) for n in (1, 2, 3, 4, 10)] == [1000, 5000, 30000, 30000, 30000]


def test_a_nacked_message_waits_its_delay_then_comes_back_in_its_place():
    w = CoreHarness()
    w.declare("work", {"x-retry-delays": [1000, 3000]})
    s, sink = w.open()
    for body in (b"a", b"b"):
        w.publish("work", body, session=s)
    w.broker.flush()
    tag, entry, _ = s.get("work", no_ack=False)
    assert entry.message.body == b"a"
    s.nack(tag, multiple=False, requeue=True)
    queue = w.vhost.queue("work")
    assert queue.message_count == 2  # held messages are still in the queue
    w.publish("work", b"c", session=s)
    w.run(0.9)
    assert s.get("work", no_ack=True)[1].message.body == b"b"  # "a" is held: not before its delay
    w.run(0.2)
    got = s.get("work", no_ack=False)
    assert (got[1].message.body, got[1].requeues) == (b"a", 1)  # ready again, ahead of newer "c"
    s.nack(got[0], multiple=False, requeue=True)
    w.run(2.9)
    assert s.get("work", no_ack=True)[1].message.body == b"c"
    assert s.get("work", no_ack=True) is None  # second delay is 3 s
    w.run(0.2)
    assert s.get("work", no_ack=True)[1].message.body == b"a"


def test_a_poison_message_in_a_nack_loop_is_delivered_once_per_delay():
    w = CoreHarness()
    w.declare("work", {"x-retry-delays": [500]})
    s, sink = w.open()
    s.consume("work", "c", no_ack=False, exclusive=False, arguments={})
    w.publish("work", b"poison", session=s)
    w.broker.flush()
    for _ in range(100):  # 10 s of ticks; the consumer nacks every delivery at once
        if s.unacked:
            nack_last(s, sink)
        w.run(0.1)
    assert 18 <= len(sink.deliveries) <= 21  # 1 + one per 0.5 s, not thousands


def test_purge_and_delete_forget_held_messages():
    w = CoreHarness()
    w.declare("work", {"x-retry-delays": [1000]})
    s, sink = w.open()
    w.publish("work", b"m", session=s)
    tag, _, _ = s.get("work", no_ack=False)
    s.nack(tag, multiple=False, requeue=True)
    queue = w.vhost.queue("work")
    assert queue.purge() == 1
    w.run(1.5)
    assert s.get("work", no_ack=True) is None
    w.publish("work", b"n", session=s)
    tag, _, _ = s.get("work", no_ack=False)
    s.nack(tag, multiple=False, requeue=True)
    w.broker.delete_queue(w.vhost, queue)
    w.run(1.5)  # the timer lets go of a deleted queue
    assert w.broker.redelivery.retries.watching == 0


def test_held_message_after_a_restart_is_ready_at_once_and_keeps_its_count():
    w = CoreHarness()
    w.declare("work", {"x-retry-delays": [60000]})
    s, _ = w.open()
    w.publish("work", b"m", session=s)
    tag, _, _ = s.get("work", no_ack=False)
    s.nack(tag, multiple=False, requeue=True)
    w.broker.flush()
    w.restart()
    s2, _ = w.open()
    _, entry, _ = s2.get("work", no_ack=False)
    assert entry.requeues == 1


# ---- consumer timeout ---------------------------------------------------------------------------------


def test_consumer_timeout_closes_the_session_and_requeues_for_another_consumer():
    w = CoreHarness(consumer_timeout_ms=5000)
    w.declare("work")
    s1, sink1 = w.open()
    s1.consume("work", "c1", no_ack=False, exclusive=False, arguments={})
    w.publish("work", b"m", session=s1)
    w.broker.flush()
    assert len(sink1.deliveries) == 1
    w.run(4.9)
    assert (sink1.timed_out, s1.closed) == ([], False)  # never early
    w.run(2.5)
    assert (sink1.timed_out, s1.closed) == ([5000], True)  # checked once a second: up to ~2 s late
    s2, sink2 = w.open()
    s2.consume("work", "c2", no_ack=False, exclusive=False, arguments={})
    w.broker.flush()
    assert [(d.body, d.requeues) for d in sink2.deliveries] == [(b"m", 1)]  # requeued, counted as a failed delivery


def test_acked_deliveries_do_not_time_out_and_new_ones_are_timed_from_their_delivery():
    w = CoreHarness(consumer_timeout_ms=3000)
    w.declare("work")
    s, sink = w.open()
    s.consume("work", "c", no_ack=False, exclusive=False, arguments={})
    w.publish("work", b"1", session=s)
    w.run(2.0)
    s.ack(sink.last_tag(), multiple=False)
    w.publish("work", b"2", session=s)
    w.run(2.5)  # "1" would be 4.5 s old; "2" is 2.5 s old
    assert sink.timed_out == []
    w.run(2.0)
    assert sink.timed_out == [3000]


def test_per_queue_consumer_timeout_overrides_the_broker_setting():
    w = CoreHarness(consumer_timeout_ms=None)  # no broker-wide timeout
    w.declare("slow", {"x-consumer-timeout": 0})
    w.declare("fast", {"x-consumer-timeout": 2000})
    s, sink = w.open()
    s.consume("slow", "a", no_ack=False, exclusive=False, arguments={})
    s.consume("fast", "b", no_ack=False, exclusive=False, arguments={})
    w.publish("slow", b"s", session=s)
    w.run(5.0)
    assert sink.timed_out == []  # 0: this queue never times out
    w.publish("fast", b"f", session=s)  # younger than the "slow" delivery, but its queue's timeout is shorter
    w.run(1.5)
    assert sink.timed_out == []
    w.run(2.0)
    assert sink.timed_out == [2000]


def test_basic_get_deliveries_time_out_too_and_no_ack_ones_never():
    w = CoreHarness(consumer_timeout_ms=1000)
    w.declare("work")
    s, sink = w.open()
    s.consume("work", "c", no_ack=True, exclusive=False, arguments={})
    w.publish("work", b"auto", session=s)
    w.run(3.0)
    assert sink.timed_out == []
    s.cancel("c")
    w.publish("work", b"got", session=s)
    s.get("work", no_ack=False)
    w.run(3.0)
    assert sink.timed_out == [1000]


# ---- arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("x-delivery-limit", "abc", '"expected integer, got longstr"'),
        ("x-delivery-limit", -1, "{value_negative,-1}"),
        ("x-consumer-timeout", 1.5, '"expected integer, got double"'),
        ("x-retry-delays", 1000, "{unacceptable_type,signedint}"),
        ("x-retry-delays", [], '"expected a non-empty array of milliseconds"'),
        ("x-retry-delays", [100, -5], "{value_negative,-5}"),
        ("x-retry-delays", [100, "x"], '"expected integer, got longstr"'),
    ],
)
def test_ill_typed_redelivery_arguments_are_refused_naming_them(name, value, problem):
    w = CoreHarness()
    with pytest.raises(PreconditionFailed) as caught:
        w.declare("q", {name: value})
    assert caught.value.text == f"invalid arg '{name}' for queue 'q' in vhost '/': {problem}"
    assert "q" not in w.vhost.queues


def test_redeclaring_with_other_retry_delays_is_inequivalent():
    w = CoreHarness()
    w.declare("q", {"x-retry-delays": [100]})
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-retry-delays'"):
        w.declare("q", {"x-retry-delays": [200]})
    w.declare("q", {"x-retry-delays": [100]})


def test_priority_queues_count_limit_and_hold_per_lane():
    w = CoreHarness()
    w.declare("dlq")
    w.declare("work", {"x-max-priority": 5, "x-delivery-limit": 1, "x-retry-delays": [1000],
                         "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    s, _ = w.open()
    w.publish("work", b"high", encoded(priority=5), session=s)
    w.publish("work", b"low", encoded(priority=1), session=s)
    tag, entry, _ = s.get("work", no_ack=False)
    assert entry.message.body == b"high"
    s.nack(tag, multiple=False, requeue=True)
    assert w.vhost.queue("work").message_count == 2  # held, still counted
    assert s.get("work", no_ack=True)[1].message.body == b"low"
    assert s.get("work", no_ack=True) is None
    w.run(1.1)
    tag, entry, _ = s.get("work", no_ack=False)
    assert (entry.message.body, entry.requeues) == (b"high", 1)
    s.nack(tag, multiple=False, requeue=True)  # past the limit of 1
    assert s.get("dlq", no_ack=True)[1].message.body == b"high"
    assert w.vhost.queue("work").message_count == 0
