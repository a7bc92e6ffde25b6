"""Tracing (core/tracing.py): the message history, its bounds, and the firehose, on the core alone."""

from __future__ import annotations

from mailslot.core import tracing
from mailslot.testing import CoreHarness
from mailslot.testing.codec import JSON_CODEC


def events(tracer: tracing.Tracer, message_id: str) -> list[str]:
    (record,) = tracer.history.by_message_id(message_id)
    return [event.event for event in record.events]


def test_off_by_default_and_nothing_recorded(harness: CoreHarness) -> None:
    assert harness.vhost.tracer is None
    harness.declare("q")
    harness.publish("q", b"x", JSON_CODEC.block(message_id="a"), flush=True)
    tracer = tracing.enable(harness.vhost, "node")
    assert tracer.history.by_message_id("a") == []  # published before tracing was on
    tracing.disable(harness.vhost)
    assert harness.vhost.tracer is None


def test_history_of_a_message(harness: CoreHarness) -> None:
    tracer = tracing.enable(harness.vhost, "node")
    harness.declare_exchange("dlx", "fanout")
    harness.declare("dlq")
    harness.bind("dlx", "dlq")
    harness.declare("q", {"x-dead-letter-exchange": "dlx"})
    harness.publish("q", b"x", JSON_CODEC.block(message_id="a", headers={"order": 7}), flush=True)
    session = harness.session
    tag, _entry, _left = session.get("q", no_ack=False)
    session.nack(tag, multiple=False, requeue=True)
    tag, _entry, _left = session.get("q", no_ack=False)
    session.nack(tag, multiple=False, requeue=False)
    harness.flush()
    assert harness.get("dlq") is not None  # the dead-lettered copy, linked to the same history
    assert events(tracer, "a") == [
        "published", "delivered", "requeued", "delivered", "rejected", "dead_lettered", "delivered"]
    (record,) = tracer.history.by_message_id("a")
    published, _first, _requeued, second, *_rest, last = record.events
    assert published.details["queues"] == ["q"] and published.details["exchange"] == ""
    assert second.details["redelivered"] is True and last.details["queue"] == "dlq"
    assert [r.message_id for r in tracer.history.by_header("order", "7")] == ["a"]


def test_expired_messages_are_in_the_history(harness: CoreHarness) -> None:
    tracer = tracing.enable(harness.vhost, "node")
    harness.declare("q", {"x-message-ttl": 1000})
    harness.publish("q", b"x", JSON_CODEC.block(message_id="e"), flush=True)
    harness.run(2)
    assert harness.count("q") == 0
    assert events(tracer, "e") == ["published", "expired"]


def test_the_history_is_capped_and_says_what_it_dropped(harness: CoreHarness) -> None:
    tracer = tracing.enable(harness.vhost, "node", capacity=3)
    harness.declare("q")
    for i in range(5):
        harness.publish("q", b"x", JSON_CODEC.block(message_id=f"m{i}"))
    harness.flush()
    assert tracer.status()["messages"] == 3 and tracer.status()["dropped_messages"] == 2
    assert tracer.history.by_message_id("m0") == [] and len(tracer.history.by_message_id("m4")) == 1
    harness.get("q")  # m0 was forgotten: seen again, delivered, it starts a new history (pushing m2 out)
    assert events(tracer, "m0") == ["delivered"] and tracer.status()["dropped_messages"] == 3
    tracing.disable(harness.vhost)
    tracer = tracing.enable(harness.vhost, "node")
    harness.declare("r")
    harness.publish("r", b"x", JSON_CODEC.block(message_id="r1"))
    session = harness.session
    for _ in range(tracing.EVENTS_PER_MESSAGE):  # one message redelivered again and again
        found = session.get("r", no_ack=False)
        assert found is not None
        session.nack(found[0], multiple=False, requeue=True)
    (record,) = tracer.history.by_message_id("r1")
    assert len(record.events) == tracing.EVENTS_PER_MESSAGE
    assert record.events_dropped == 1 + 2 * tracing.EVENTS_PER_MESSAGE - len(record.events)  # published + (get, nack) each
    assert tracer.status()["dropped_events"] == record.events_dropped


def test_transactional_publishes_are_traced_when_committed(harness: CoreHarness) -> None:
    tracer = tracing.enable(harness.vhost, "node")
    harness.declare("q")
    harness.session.tx_select()
    harness.publish("q", b"x", JSON_CODEC.block(message_id="t"))
    assert tracer.history.by_message_id("t") == []
    harness.session.tx_commit()
    assert events(tracer, "t") == ["published"]


def test_firehose_only_when_bound(harness: CoreHarness) -> None:
    tracer = tracing.enable(harness.vhost, "node")
    harness.declare("q")
    harness.publish("q", b"x", flush=True)
    assert tracer.firehose_published == 0  # nobody bound to amq.rabbitmq.trace: nothing built
    harness.declare("fh")
    harness.bind(tracing.TRACE_EXCHANGE, "fh", "#")
    harness.publish("q", b"y", flush=True)
    assert harness.get("q") is not None
    trace = [harness.get("fh"), harness.get("fh")]
    assert [m.routing_key for m in trace if m is not None] == ["publish.", "deliver.q"]
    assert harness.get("fh") is None  # getting from fh traced nothing more (no trace of a trace)
