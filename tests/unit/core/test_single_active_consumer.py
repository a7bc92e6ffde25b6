"""x-single-active-consumer through core sessions: who gets deliveries, takeover, unacked of the old one."""

from __future__ import annotations

import pytest
from pamqp import commands

from mailslot.core import queue as queue_module
from mailslot.core.errors import AccessRefused, PreconditionFailed
from mailslot.core.message import Message
from mailslot.protocols.amqp091 import properties as props

SAC = {"x-single-active-consumer": True}


def consume(session, tag: str, *, prefetch: int = 0, no_ack: bool = False, exclusive: bool = False) -> None:
    session.qos(0, prefetch, False)
    session.consume("q", tag, no_ack=no_ack, exclusive=exclusive, arguments={})


def publish_many(harness, session, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        harness.publish("q", b"m%d" % i, session=session)


@pytest.mark.parametrize(("value", "kind"), [(1, "signedint"), ("true", "longstr"), (2**40, "long")])
def test_a_non_boolean_is_refused_as_rabbitmq_does(harness, value, kind):
    s, _ = harness.open()
    with pytest.raises(PreconditionFailed) as raised:
        harness.declare("q", {"x-single-active-consumer": value})
    assert raised.value.text == (
        f"invalid arg 'x-single-active-consumer' for queue 'q' in vhost '/': {{unacceptable_type,{kind}}}"
    )


def test_only_the_first_registered_consumer_gets_deliveries(harness):
    s1, sink1 = harness.open()
    s2, sink2 = harness.open()
    harness.declare("q", SAC)
    consume(s1, "first", prefetch=2)
    consume(s2, "second", prefetch=2)
    publish_many(harness, s1, 6)
    harness.broker.flush()
    assert sink1.bodies() == [b"m0", b"m1"]
    assert sink2.bodies() == []
    s1.ack(sink1.last_tag(), multiple=True)
    harness.broker.flush()
    assert sink1.bodies() == [b"m0", b"m1", b"m2", b"m3"]
    assert sink2.bodies() == []


def test_the_active_consumer_gets_a_whole_backlog_in_one_turn(harness, monkeypatch):
    monkeypatch.setattr(queue_module, "DELIVERY_BATCH", 4)  # several batches, with others waiting
    s1, sink1 = harness.open()
    s2, _ = harness.open()
    harness.declare("q", SAC)
    consume(s1, "first")
    consume(s2, "second")
    publish_many(harness, s1, 30)
    harness.broker.flush()
    assert len(sink1.bodies()) == 30


def test_when_the_active_cancels_the_next_in_registration_order_takes_the_backlog(harness):
    s1, sink1 = harness.open()
    s2, sink2 = harness.open()
    s3, sink3 = harness.open()
    harness.declare("q", SAC)
    consume(s1, "a", prefetch=2)
    consume(s3, "c", prefetch=2)  # registered before b
    consume(s2, "b", prefetch=2)
    publish_many(harness, s1, 6)
    harness.broker.flush()
    assert s1.cancel("a")
    harness.broker.flush()
    assert sink3.bodies() == []  # as RabbitMQ 3.10: the new active consumer starts at the queue's next event
    harness.publish("q", b"m6", session=s1)
    harness.broker.flush()
    assert sink3.bodies() == [b"m2", b"m3"]
    assert sink2.bodies() == []
    # The cancelled consumer's unacked messages stay with its channel until settled, then go to the active one.
    s1.nack(sink1.deliveries[0].delivery_tag, multiple=False, requeue=True)
    s3.ack(sink3.last_tag(), multiple=True)
    harness.broker.flush()
    assert [(d.body, d.redelivered) for d in sink3.deliveries[2:]] == [(b"m0", True), (b"m4", False)]


def test_when_the_active_channel_closes_its_unacked_go_first_to_the_next(harness):
    s1, sink1 = harness.open()
    s2, sink2 = harness.open()
    harness.declare("q", SAC)
    consume(s1, "a", prefetch=3)
    consume(s2, "b", prefetch=10)
    publish_many(harness, s1, 5)
    harness.broker.flush()
    assert sink1.bodies() == [b"m0", b"m1", b"m2"]
    s1.ack(sink1.deliveries[1].delivery_tag, multiple=False)  # m1 is done; m0 and m2 are not
    s1.close()
    harness.broker.flush()
    assert [(d.body, d.redelivered) for d in sink2.deliveries] == [
        (b"m0", True), (b"m2", True), (b"m3", False), (b"m4", False),
    ]


def test_cancel_then_close_requeues_before_the_next_consumer_starts(harness):
    """What pika does on a graceful close: the old consumer's unacked messages keep their place."""
    s1, sink1 = harness.open()
    s2, sink2 = harness.open()
    harness.declare("q", SAC)
    consume(s1, "a", prefetch=2)
    consume(s2, "b", prefetch=2)
    publish_many(harness, s1, 4)
    harness.broker.flush()
    s1.cancel("a")
    harness.broker.flush()  # a turn between the cancel and the close
    s1.close()
    harness.broker.flush()
    assert [(d.body, d.redelivered) for d in sink2.deliveries] == [(b"m0", True), (b"m1", True)]


def test_a_waiting_consumer_leaving_changes_nothing(harness):
    s1, sink1 = harness.open()
    s2, sink2 = harness.open()
    s3, sink3 = harness.open()
    harness.declare("q", SAC)
    consume(s1, "a", no_ack=True)
    consume(s2, "b", no_ack=True)
    consume(s3, "c", no_ack=True)
    s2.cancel("b")
    publish_many(harness, s1, 3)
    harness.broker.flush()
    assert (sink1.bodies(), sink2.bodies(), sink3.bodies()) == ([b"m0", b"m1", b"m2"], [], [])
    s1.close()
    publish_many(harness, s3, 2, start=3)
    harness.broker.flush()
    assert sink3.bodies() == [b"m3", b"m4"]


@pytest.mark.parametrize("others", [0, 1])
def test_exclusive_consume_is_refused_as_rabbitmq_does(harness, others):
    s, _ = harness.open()
    harness.declare("q", SAC)
    for i in range(others):
        consume(s, f"c{i}")
    with pytest.raises(AccessRefused) as raised:
        consume(s, "x", exclusive=True)
    assert raised.value.text == "queue 'q' in vhost '/' in exclusive use"


def test_without_the_argument_consumers_share_round_robin(harness):
    s1, sink1 = harness.open()
    s2, sink2 = harness.open()
    harness.declare("q", {"x-single-active-consumer": False})
    consume(s1, "a", no_ack=True)
    consume(s2, "b", no_ack=True)
    publish_many(harness, s1, 4)
    harness.broker.flush()
    assert len(sink1.bodies()) == len(sink2.bodies()) == 2


def test_priority_and_single_active_consumer_together(harness):
    s1, sink1 = harness.open()
    s2, sink2 = harness.open()
    harness.declare("q", {**SAC, "x-max-priority": 3})
    for i, priority in enumerate([0, 3, 1, 3]):
        raw = props.encode_properties(commands.Basic.Properties(priority=priority))
        s1.publish("", "q", Message("", "q", raw, b"m%d" % i, True), False)
    consume(s1, "a", no_ack=True)
    consume(s2, "b", no_ack=True)
    harness.broker.flush()
    assert sink1.bodies() == [b"m1", b"m3", b"m2", b"m0"]
    assert sink2.bodies() == []
