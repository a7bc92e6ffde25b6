"""mailslot.testing.CoreHarness itself: what each call stands for must hold, or every core test built on it
proves less than it says."""

from __future__ import annotations

import pytest

from mailslot.core.session import ROUTED, UNROUTED
from mailslot.storage.segments import open_segment_store
from mailslot.testing import CoreHarness


def test_publish_reports_the_outcome_and_flush_delivers(harness: CoreHarness) -> None:
    harness.declare("q")
    assert harness.publish("nowhere", b"x") == UNROUTED
    assert harness.publish("q", b"m") == ROUTED
    harness.session.consume("q", "c", no_ack=False, exclusive=False, arguments={})
    assert harness.sink.deliveries == []  # nothing before the end of the turn
    harness.flush()
    (delivery,) = harness.sink.deliveries
    assert (delivery.consumer_tag, delivery.delivery_tag, delivery.redelivered, delivery.body) == ("c", 1, False, b"m")
    assert harness.sink.last_tag() == 1


def test_a_delivery_is_recorded_as_it_was_when_delivered(harness: CoreHarness) -> None:
    harness.declare("q")
    harness.publish("q", b"m")
    harness.session.consume("q", "c", no_ack=False, exclusive=False, arguments={})
    harness.flush()
    harness.session.nack(harness.sink.last_tag(), multiple=False, requeue=True)
    harness.flush()
    first, second = harness.sink.deliveries
    assert (first.redelivered, first.requeues) == (False, 0)  # not rewritten by the later requeue
    assert (second.redelivered, second.requeues) == (True, 1)


def test_restart_keeps_what_was_committed_and_moves_the_clock(harness: CoreHarness) -> None:
    harness.declare("q")
    harness.publish("q", b"kept")
    harness.publish("q", b"transient", persistent=False)
    before = harness.clock.now()
    old_broker = harness.broker
    harness.restart(downtime=5)
    assert harness.broker is not old_broker
    assert harness.clock.now() == before + 5
    assert harness.drain("q") == [b"kept"]


def test_crash_loses_what_was_staged_and_keeps_what_was_committed(harness: CoreHarness) -> None:
    harness.declare("q")
    harness.publish("q", b"committed", flush=True)
    harness.publish("q", b"staged")  # no flush: not committed when the process dies
    harness.crash()
    assert harness.drain("q") == [b"committed"]


def test_crash_refuses_a_store_it_cannot_crash(tmp_path) -> None:
    h = CoreHarness(lambda: open_segment_store(tmp_path))
    with pytest.raises(TypeError, match="crash"):
        h.crash()
    h.close()


def test_restart_reopens_a_durable_store(tmp_path) -> None:
    h = CoreHarness(lambda: open_segment_store(tmp_path))
    h.declare("q")
    h.publish("q", b"on disk")
    h.restart()
    assert h.drain("q") == [b"on disk"]
    h.close()


def test_run_ticks_at_the_broker_resolution_and_advance_ticks_once(harness: CoreHarness) -> None:
    ticks: list[float] = []
    harness.broker.tickers.append(ticks.append)
    harness.run(1.0)
    assert len(ticks) == 10
    harness.advance(60)
    assert len(ticks) == 11
    assert ticks[-1] - ticks[0] == pytest.approx(60.9)
