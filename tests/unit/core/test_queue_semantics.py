"""Queue order, requeue position, prefetch and round-robin, through core sessions only."""

from __future__ import annotations

from typing import Any

import pytest

from mailslot.core import queue as queue_module
from mailslot.core.errors import PreconditionFailed, StoreFailure
from mailslot.core.session import ROUTED, UNROUTED
from mailslot.testing import CoreHarness


def test_fifo_and_requeue_keeps_original_position(harness):
    s, _sink = harness.open()
    harness.declare("q")
    for body in (b"1", b"2", b"3"):
        harness.publish("q", body, session=s)
    first = s.get("q", no_ack=False)
    second = s.get("q", no_ack=False)
    assert (first[1].message.body, second[1].message.body) == (b"1", b"2")
    s.nack(second[0], multiple=False, requeue=True)
    s.nack(first[0], multiple=False, requeue=True)
    order = [s.get("q", no_ack=True) for _ in range(3)]
    assert [(e.message.body, e.redelivered) for _, e, _ in order] == [(b"1", True), (b"2", True), (b"3", False)]
    assert s.get("q", no_ack=True) is None


def test_prefetch_limits_unacked_per_consumer(harness):
    s, sink = harness.open()
    harness.declare("q")
    s.qos(0, 2, False)
    s.consume("q", "c1", no_ack=False, exclusive=False, arguments={})
    for i in range(5):
        harness.publish("q", str(i).encode(), session=s)
    harness.broker.flush()
    assert sink.bodies() == [b"0", b"1"]
    s.ack(sink.last_tag(), multiple=True)
    harness.broker.flush()
    assert sink.bodies() == [b"0", b"1", b"2", b"3"]


def test_channel_prefetch_is_shared_by_consumers(harness):
    s, sink = harness.open()
    harness.declare("a")
    harness.declare("b")
    s.qos(0, 3, True)
    s.consume("a", "ca", no_ack=False, exclusive=False, arguments={})
    s.consume("b", "cb", no_ack=False, exclusive=False, arguments={})
    for i in range(4):
        harness.publish("a", b"a%d" % i, session=s)
        harness.publish("b", b"b%d" % i, session=s)
    harness.broker.flush()
    assert len(sink.deliveries) == 3


def test_round_robin_between_consumers(harness):
    s1, sink1 = harness.open()
    s2, sink2 = harness.open()
    harness.declare("q")
    s1.consume("q", "one", no_ack=True, exclusive=False, arguments={})
    s2.consume("q", "two", no_ack=True, exclusive=False, arguments={})
    for i in range(6):
        harness.publish("q", str(i).encode(), session=s1)
    harness.broker.flush()
    assert sink1.bodies() == [b"0", b"2", b"4"]
    assert sink2.bodies() == [b"1", b"3", b"5"]


def test_closing_a_session_requeues_unacked_as_redelivered(harness):
    s1, _sink1 = harness.open()
    harness.declare("q")
    s1.consume("q", "c", no_ack=False, exclusive=False, arguments={})
    for i in range(3):
        harness.publish("q", str(i).encode(), session=s1)
    harness.broker.flush()
    s1.close()
    s2, _ = harness.open()
    got = [s2.get("q", no_ack=True)[1] for _ in range(3)]
    assert [(e.message.body, e.redelivered) for e in got] == [(b"0", True), (b"1", True), (b"2", True)]


def test_unknown_delivery_tag_is_a_precondition_failure(harness):
    s, _ = harness.open()
    harness.declare("q")
    with pytest.raises(PreconditionFailed, match="unknown delivery tag 7"):
        s.ack(7, multiple=False)


def test_multiple_ack_settles_everything_up_to_the_tag(harness):
    s, _sink = harness.open()
    harness.declare("q")
    s.consume("q", "c", no_ack=False, exclusive=False, arguments={})
    for i in range(4):
        harness.publish("q", str(i).encode(), session=s)
    harness.broker.flush()
    s.ack(3, multiple=True)
    assert list(s.unacked) == [4]
    with pytest.raises(PreconditionFailed):
        s.ack(2, multiple=False)


def test_transaction_applies_at_commit_and_rollback_restores_acks(harness):
    s, _sink = harness.open()
    harness.declare("q")
    harness.publish("q", b"before", session=s)
    tag, _, _ = s.get("q", no_ack=False)
    s.tx_select()
    harness.publish("q", b"in-tx", session=s)
    s.ack(tag, multiple=False)
    assert harness.vhost.queues["q"].message_count == 0
    s.tx_rollback()
    assert tag in s.unacked
    assert harness.vhost.queues["q"].message_count == 0
    harness.publish("q", b"committed", session=s)
    s.ack(tag, multiple=False)
    s.tx_commit()
    assert harness.vhost.queues["q"].message_count == 1
    assert tag not in s.unacked


def test_backlog_beyond_window_pages_to_the_log_and_comes_back_in_order(harness, monkeypatch):
    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 10)
    monkeypatch.setattr(queue_module, "PAGE_IN_BATCH", 4)
    s, _ = harness.open()
    harness.declare("q")
    for i in range(50):
        harness.publish("q", b"%d" % i, session=s, persistent=i % 2 == 0)
    queue = harness.vhost.queues["q"]
    assert queue.message_count == 50
    harness.broker.flush()  # the overflow beyond the window is spilled to the log with this commit
    assert queue.paged == 40 and queue.message_count == 50
    assert len(harness.log.read(queue.key, 0, 100)) == 40 + 5  # paged + the persistent ones in the window
    bodies = [s.get("q", no_ack=True)[1].message.body for _ in range(50)]
    assert bodies == [b"%d" % i for i in range(50)]
    assert s.get("q", no_ack=True) is None
    harness.broker.flush()
    assert harness.log.read(queue.key, 0, 100) == []


def test_deleting_a_queue_cancels_its_consumers(harness):
    s, sink = harness.open()
    harness.declare("q")
    s.consume("q", "c", no_ack=True, exclusive=False, arguments={})
    harness.broker.delete_queue(harness.vhost, harness.vhost.queues["q"])
    assert sink.cancelled == ["c"]
    assert "c" not in s.consumers


def test_reading_a_backlog_back_never_forces_a_commit(harness, monkeypatch):
    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 10)
    monkeypatch.setattr(queue_module, "PAGE_IN_BATCH", 7)
    commits = []
    real_commit = harness.log.commit
    monkeypatch.setattr(harness.log, "commit", lambda: (commits.append(1), real_commit()))
    s, _ = harness.open()
    harness.declare("q")
    for i in range(30):
        harness.publish("q", b"%d" % i, session=s, persistent=False)
    harness.broker.flush()
    assert len(commits) == 1
    got = []
    for _ in range(15):  # drains the window and pages the log back in, mid-turn, while new work is staged
        got.append(s.get("q", no_ack=True)[1].message.body)
        harness.publish("q", b"late", session=s, persistent=False)
    assert got == [b"%d" % i for i in range(15)]
    assert len(commits) == 1


def _backlog_with_consumer(harness, monkeypatch, *, no_ack, prefetch=0):
    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 5)
    monkeypatch.setattr(queue_module, "CONGESTION_BACKLOG", 10)
    s, _ = harness.open()
    harness.declare("q")
    s.qos(0, prefetch, False)
    s.consume("q", "c", no_ack=no_ack, exclusive=False, arguments={})
    s.gate.open = False  # the broker's per-turn output budget is spent: nothing more is written now
    for i in range(20):
        harness.publish("q", b"%d" % i, session=s, persistent=False)
    return s


def test_backlog_in_front_of_a_consumer_that_wants_more_is_congestion(harness, monkeypatch):
    s = _backlog_with_consumer(harness, monkeypatch, no_ack=True)
    harness.broker.flush()
    queue = harness.vhost.queues["q"]
    assert queue.congested and queue in harness.broker.congested
    s.gate.throttled = False
    harness.publish("q", b"more", session=s, persistent=False)
    assert s.gate.throttled  # its publisher is slowed (the transport stops reading it for a while)


def test_a_slow_peer_or_full_prefetch_is_not_congestion(harness, monkeypatch):
    s = _backlog_with_consumer(harness, monkeypatch, no_ack=True)
    s.gate.socket_full = True  # the consumer does not read its socket: a spike must go to disk instead
    harness.broker.flush()
    assert not harness.vhost.queues["q"].congested


def test_prefetch_bound_consumers_do_not_congest(harness, monkeypatch):
    s = _backlog_with_consumer(harness, monkeypatch, no_ack=False, prefetch=2)
    s.gate.open = True
    harness.broker.flush()  # two deliveries, then the consumer is at its prefetch limit
    queue = harness.vhost.queues["q"]
    assert queue.message_count == 18
    assert not queue.congested
    harness.publish("q", b"x", session=s, persistent=False)
    assert not s.gate.throttled


def test_a_shallow_backlog_is_not_congestion(harness, monkeypatch):
    _backlog_with_consumer(harness, monkeypatch, no_ack=True)  # 20 waiting
    monkeypatch.setattr(queue_module, "CONGESTION_BACKLOG", 50)
    harness.broker.flush()
    assert not harness.vhost.queues["q"].congested


def test_a_declare_whose_definition_cannot_be_stored_leaves_no_queue_behind(harness: CoreHarness) -> None:
    """The store unreachable (a database outage) during queue.declare: 541 for the client (StoreFailure)
    and no half-made queue in memory, so its next declare, once the store is back, makes it afresh."""
    store = harness.vhost.metadata
    real_save = store.save_queue

    def unreachable(queue: Any) -> None:
        raise OSError("PostgreSQL unreachable (leases connection); retrying shortly")

    store.save_queue = unreachable  # type: ignore[method-assign]
    with pytest.raises(StoreFailure, match="queue 'jobs' in vhost '/' could not be stored: PostgreSQL unreachable"):
        harness.declare("jobs")
    assert "jobs" not in harness.vhost.queues
    assert harness.publish("jobs", b"x") == UNROUTED
    store.save_queue = real_save  # type: ignore[method-assign]
    harness.declare("jobs")
    assert harness.publish("jobs", b"x") == ROUTED and harness.count("jobs") == 1
