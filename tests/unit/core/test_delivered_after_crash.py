"""After a crash, persistent messages that had been delivered but not acknowledged come back with
redelivered=true, as from RabbitMQ's classic queues (its queue index records deliveries); messages never
delivered come back with redelivered=false. The core records deliveries as one watermark per queue per
delivered batch (Queue.mark_delivered -> MessageLog.stage_delivered), never one write per message."""

from __future__ import annotations

from typing import Any

from pamqp import commands

from mailslot.storage.memory import MemoryMessageLog
from mailslot.testing import CoreHarness

NOT_ACKED = {"no_ack": False, "exclusive": False, "arguments": {}}


class CountingLog(MemoryMessageLog):
    def __init__(self) -> None:
        super().__init__()
        self.watermarks: list[tuple[str, int]] = []

    def stage_delivered(self, queue: str, seq: int) -> None:
        self.watermarks.append((queue, seq))
        super().stage_delivered(queue, seq)


def counting() -> CoreHarness:
    pair = (CountingLog(), CoreHarness().meta)
    return CoreHarness(lambda: pair)


def flags_after(h: CoreHarness, queue: str = "q") -> list[tuple[bytes, bool]]:
    got = []
    while (found := h.session.get(queue, no_ack=True)) is not None:
        got.append((found[1].message.body, found[1].redelivered))
    return got


def publish(h: CoreHarness, count: int, queue: str = "q", **options: Any) -> None:
    for i in range(count):
        h.publish(queue, b"m%d" % i, **options)
    h.flush()


def test_delivered_unacked_messages_come_back_redelivered_after_a_crash(harness: CoreHarness) -> None:
    harness.declare("q")
    publish(harness, 6)
    harness.session.qos(0, 3, False)
    harness.session.consume("q", "c", **NOT_ACKED)
    harness.flush()
    assert harness.sink.bodies() == [b"m0", b"m1", b"m2"]
    harness.session.ack(1, multiple=False)  # m0 is done, so m3 goes out
    harness.flush()
    assert harness.sink.bodies()[3:] == [b"m3"]
    harness.crash()
    assert flags_after(harness) == [(b"m1", True), (b"m2", True), (b"m3", True), (b"m4", False), (b"m5", False)]


def test_basic_get_without_ack_counts_as_a_delivery(harness: CoreHarness) -> None:
    harness.declare("q")
    publish(harness, 3)
    assert harness.session.get("q", no_ack=False) is not None
    harness.flush()
    harness.crash()
    assert flags_after(harness) == [(b"m0", True), (b"m1", False), (b"m2", False)]


def test_a_delivery_not_yet_committed_is_not_flagged(harness: CoreHarness) -> None:
    """The watermark is a staged write like any other: a crash before the commit loses it."""
    harness.declare("q")
    publish(harness, 2)
    harness.session.get("q", no_ack=False)  # no flush: the turn never ended
    harness.crash()
    assert flags_after(harness) == [(b"m0", False), (b"m1", False)]


def test_a_graceful_restart_requeues_as_before() -> None:
    """Unacked deliveries are requeued when their session closes; the watermark changes nothing there."""
    h = CoreHarness()
    h.declare("q")
    publish(h, 3)
    h.session.get("q", no_ack=False)
    h.session.close()
    h.restart()
    assert flags_after(h) == [(b"m0", True), (b"m1", False), (b"m2", False)]


def test_one_watermark_per_delivered_batch_not_per_message() -> None:
    h = counting()
    h.declare("q")
    publish(h, 200)
    h.session.consume("q", "c", **NOT_ACKED)
    h.flush()
    assert len(h.sink.deliveries) == 200
    log = h.log
    assert isinstance(log, CountingLog)
    assert log.watermarks == [("/\x00q", 200)]


def test_no_ack_deliveries_and_non_durable_queues_write_no_watermark() -> None:
    h = counting()
    h.declare("auto")
    h.declare("temp", durable=False)
    publish(h, 3, "auto")
    publish(h, 3, "temp")
    h.session.consume("auto", "a", no_ack=True, exclusive=False, arguments={})
    h.session.consume("temp", "t", **NOT_ACKED)
    h.flush()
    assert len(h.sink.deliveries) == 6
    log = h.log
    assert isinstance(log, CountingLog)
    assert log.watermarks == []


def test_priority_queues_flag_per_level() -> None:
    """A priority queue delivers across levels out of publish order; each level keeps its own watermark,
    so a low-priority message published first but not delivered is not flagged."""
    h = CoreHarness()
    h.declare("q", {"x-max-priority": 5})
    for body, priority in ((b"low", 1), (b"high-1", 5), (b"high-2", 5)):
        h.publish("q", body, bytes(commands.Basic.Properties(priority=priority, delivery_mode=2).marshal()))
    h.flush()
    assert h.session.get("q", no_ack=False)[1].message.body == b"high-1"  # type: ignore[index]
    h.flush()
    h.crash()
    assert flags_after(h) == [(b"high-1", True), (b"high-2", False), (b"low", False)]


def test_seqs_numbered_again_after_a_restart_are_not_flagged(harness: CoreHarness) -> None:
    """Delivered m0..m2, m1 and m2 acked: after the restart the queue numbers new messages from m0's seq
    on, and those must come back unflagged after the next crash."""
    harness.declare("q")
    publish(harness, 3)
    harness.session.consume("q", "c", **NOT_ACKED)
    harness.flush()
    harness.session.ack(2, multiple=False)
    harness.session.ack(3, multiple=False)
    harness.flush()
    harness.crash()
    publish(harness, 2)  # new m0, m1: seqs 2 and 3 again
    harness.crash()
    assert flags_after(harness) == [(b"m0", True), (b"m0", False), (b"m1", False)]
