"""Priority queues (x-max-priority) through core sessions: order, requeue, limits, paging and restart."""

from __future__ import annotations

import pytest

from mailslot.core import queue as queue_module
from mailslot.core.errors import PreconditionFailed
from mailslot.core.priority import PriorityStore
from mailslot.core.queue import Queue
from mailslot.core.storekeys import lane_key
from mailslot.testing.codec import JSON_CODEC


def encoded(priority: int | None = None, **fields) -> bytes:
    return JSON_CODEC.block(priority=priority, **fields)


def publish(harness, session, queue: str, body: bytes, priority: int | None, persistent: bool = True) -> None:
    raw = encoded(priority)
    assert harness.publish(queue, body, raw, persistent=persistent, session=session)


def declare(harness, name: str = "q", **arguments) -> Queue:
    args = {"x-" + k.replace("_", "-"): v for k, v in arguments.items()}
    harness.declare(name, args)
    queue = harness.vhost.queues[name]
    assert isinstance(queue.store, PriorityStore)
    return queue


MIXED = [(b"m0", None), (b"m1", 1), (b"m2", 5), (b"m3", 9), (b"m4", 0), (b"m5", 3), (b"m6", 5), (b"m7", None), (b"m8", 255)]
# As RabbitMQ 3.10 delivers MIXED from a queue with x-max-priority 5 (checked by tests/integration/test_priority.py).
MIXED_ORDER = [b"m2", b"m3", b"m6", b"m8", b"m5", b"m1", b"m0", b"m4", b"m7"]


# ---- declaring ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (256, "{max_value_exceeded,256}"),
        (2**40, "{max_value_exceeded,1099511627776}"),
        (-1, "{value_negative,-1}"),
        ("5", '"expected integer, got longstr"'),
        (True, '"expected integer, got bool"'),
    ],
)
def test_ill_typed_max_priority_is_refused_as_rabbitmq_does(harness, value, problem):
    s, _ = harness.open()
    with pytest.raises(PreconditionFailed) as raised:
        harness.declare("q", {"x-max-priority": value})
    assert raised.value.text == f"invalid arg 'x-max-priority' for queue 'q' in vhost '/': {problem}"


def test_max_priority_zero_is_an_ordinary_fifo_queue(harness):
    s, _ = harness.open()
    harness.declare("q", {"x-max-priority": 0})
    assert type(harness.vhost.queues["q"]) is Queue
    for body, priority in [(b"a", None), (b"b", 1), (b"c", 5), (b"d", 0)]:
        publish(harness, s, "q", body, priority)
    assert harness.drain("q", session=s) == [b"a", b"b", b"c", b"d"]


# ---- order ----------------------------------------------------------------------------------------


def test_higher_priority_first_fifo_within_a_priority_above_max_is_max(harness):
    s, _ = harness.open()
    queue = declare(harness, max_priority=5)
    for body, priority in MIXED:
        publish(harness, s, "q", body, priority)
    assert queue.message_count == len(MIXED)
    assert harness.drain("q", session=s) == MIXED_ORDER
    assert queue.message_count == 0


def test_basic_get_reports_the_messages_left(harness):
    s, _ = harness.open()
    declare(harness, max_priority=3)
    for i, priority in enumerate([0, 3, 1]):
        publish(harness, s, "q", b"%d" % i, priority)
    got = [s.get("q", no_ack=True) for _ in range(3)]
    assert [(entry.message.body, left) for _, entry, left in got] == [(b"1", 2), (b"2", 1), (b"0", 0)]


def test_requeued_messages_go_back_to_their_place_in_their_level(harness):
    s, _ = harness.open()
    declare(harness, max_priority=3)
    for i, priority in enumerate([1, 2, 3, 1, 2, 3, 0]):
        publish(harness, s, "q", b"m%d" % i, priority)
    taken = [s.get("q", no_ack=False) for _ in range(4)]
    assert [entry.message.body for _, entry, _ in taken] == [b"m2", b"m5", b"m1", b"m4"]
    s.nack(taken[3][0], multiple=False, requeue=True)
    s.nack(taken[0][0], multiple=False, requeue=True)
    publish(harness, s, "q", b"late3", 3)
    s.nack(taken[2][0], multiple=False, requeue=True)
    s.nack(taken[1][0], multiple=False, requeue=True)
    got = []
    while (item := s.get("q", no_ack=True)) is not None:
        got.append((item[1].message.body, item[1].redelivered))
    assert got == [
        (b"m2", True), (b"m5", True), (b"late3", False), (b"m1", True), (b"m4", True), (b"m0", False),
        (b"m3", False), (b"m6", False),
    ]


def test_with_prefetch_priority_orders_what_is_ready(harness):
    s, sink = harness.open()
    declare(harness, max_priority=10)
    for i in range(5):
        publish(harness, s, "q", b"low%d" % i, 1)
    s.qos(0, 2, False)
    s.consume("q", "c", no_ack=False, exclusive=False, arguments={})
    harness.broker.flush()
    for i in range(3):
        publish(harness, s, "q", b"high%d" % i, 9)
    harness.broker.flush()
    assert sink.bodies() == [b"low0", b"low1"]
    s.ack(sink.last_tag(), multiple=True)
    harness.broker.flush()
    assert sink.bodies() == [b"low0", b"low1", b"high0", b"high1"]


def test_round_robin_consumers_get_priority_order(harness):
    s1, sink1 = harness.open()
    s2, sink2 = harness.open()
    declare(harness, max_priority=2)
    for i, priority in enumerate([0, 1, 2, 0, 1, 2]):
        publish(harness, s1, "q", b"%d" % i, priority)
    s1.consume("q", "a", no_ack=True, exclusive=False, arguments={})
    s2.consume("q", "b", no_ack=True, exclusive=False, arguments={})
    harness.broker.flush()
    assert sink1.bodies() == [b"2", b"1", b"0"]
    assert sink2.bodies() == [b"5", b"4", b"3"]


def test_drop_head_drops_the_highest_priority_first(harness):
    """RabbitMQ drops what it would deliver next (checked by the differential test)."""
    s, _ = harness.open()
    declare(harness, max_priority=5, max_length=2)
    for body, priority in [(b"a", 1), (b"b", 5), (b"c", 1), (b"d", 0)]:
        publish(harness, s, "q", body, priority)
    assert harness.drain("q", session=s) == [b"c", b"d"]


def test_reject_publish_counts_every_level(harness):
    s, _ = harness.open()
    declare(harness, max_priority=5, max_length=2, overflow="reject-publish")
    raw = encoded(5)
    outcomes = [harness.publish("q", b"%d" % i, raw, persistent=False, session=s) for i in range(3)]
    assert outcomes == [1, 1, 2]


def test_acked_and_purged_messages_leave_the_log(harness):
    s, _ = harness.open()
    queue = declare(harness, max_priority=2)
    for i, priority in enumerate([0, 1, 2, 2]):
        publish(harness, s, "q", b"%d" % i, priority)
    tag, _entry, _ = s.get("q", no_ack=False)
    s.ack(tag, multiple=False)
    harness.broker.flush()
    assert [len(harness.log.read(lane_key("/", queue.name, level), 0, 10)) for level in range(3)] == [1, 1, 1]
    harness.vhost.queues["q"].purge()
    harness.broker.flush()
    assert all(harness.log.read(lane_key("/", queue.name, level), 0, 10) == [] for level in range(3))


# ---- paging and restart ---------------------------------------------------------------------------


def test_order_survives_a_restart_with_requeued_messages(harness):
    s, _ = harness.open()
    declare(harness, max_priority=5)
    for body, priority in MIXED:
        publish(harness, s, "q", body, priority)
    publish(harness, s, "q", b"transient", 5, persistent=False)
    tag, entry, _ = s.get("q", no_ack=False)
    assert entry.message.body == b"m2"
    s.nack(tag, multiple=False, requeue=True)
    harness.broker.flush()
    harness.restart()
    s, _ = harness.open()
    queue = harness.vhost.queues["q"]
    assert isinstance(queue.store, PriorityStore) and queue.message_count == len(MIXED)
    first = s.get("q", no_ack=True)
    assert first is not None and first[1].redelivered and first[1].message.body == b"m2"
    assert harness.drain("q", session=s) == MIXED_ORDER[1:]
    publish(harness, s, "q", b"after", 0)  # new seqs continue above the recovered ones
    harness.broker.flush()
    harness.restart()
    s, _ = harness.open()
    assert harness.drain("q", session=s) == [b"after"]


def test_a_backlog_beyond_the_shared_window_is_paged_and_read_back_in_order(harness, monkeypatch):
    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 10)
    monkeypatch.setattr(queue_module, "PAGE_IN_BATCH", 4)
    s, _ = harness.open()
    queue = declare(harness, max_priority=9)
    sent = [(b"%03d" % i, (i * 7) % 10) for i in range(200)]
    for body, priority in sent:
        publish(harness, s, "q", body, priority, persistent=int(body) % 3 == 0)
    harness.broker.flush()
    in_memory = sum(lane.resident()[0] for lane in queue.store.lanes())
    assert in_memory == 10  # one window for every level together, not one per level
    assert sum(lane.paged for lane in queue.store.lanes()) == 190
    expected = [body for body, _ in sorted(sent, key=lambda item: (-item[1], int(item[0])))]
    got = []
    for _ in range(200):
        got.append(s.get("q", no_ack=True)[1].message.body)
        assert sum(lane.resident()[0] for lane in queue.store.lanes()) <= 10 + 4 * 10
    assert got == expected
    harness.broker.flush()
    assert all(harness.log.read(lane.key, 0, 1000) == [] for lane in queue.store.lanes())


def test_a_paged_backlog_survives_a_restart(harness, monkeypatch):
    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 8)
    s, _ = harness.open()
    declare(harness, max_priority=3)
    sent = [(b"%02d" % i, i % 4) for i in range(40)]
    for body, priority in sent:
        publish(harness, s, "q", body, priority)
    harness.broker.flush()
    harness.restart()
    s, _ = harness.open()
    assert harness.vhost.queues["q"].message_count == 40
    assert harness.drain("q", session=s) == [body for body, _ in sorted(sent, key=lambda item: (-item[1], int(item[0])))]


def test_lanes_of_a_deleted_queue_are_dropped_at_start_up(harness):
    s, _ = harness.open()
    queue = declare(harness, max_priority=2)
    publish(harness, s, "q", b"x", 2)
    harness.broker.flush()
    harness.meta.delete_queue("/", "q")  # the definition is gone, the rows are not
    harness.restart()
    assert "q" not in harness.vhost.queues
    assert harness.log.read(lane_key("/", queue.name, 2), 0, 10) == []
