"""Queue rates and forecasts (mailslot.core.stats) with injected time and counters: no clock, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from mailslot.core.queue import Queue
from mailslot.core.stats import (
    QueueRates,
    StatsSampler,
    drain_seconds,
    full_seconds,
    queue_limits,
)
from mailslot.testing import CoreHarness


@dataclass(eq=False)
class FakeQueue:
    """The counters a queue exposes, set by hand."""

    name: str = "q"
    vhost: str = "/"
    stats_published: int = 0
    stats_delivered: int = 0
    message_count: int = 0
    unacked: int = 0
    consumers: list[object] = field(default_factory=list)
    arguments: dict[str, Any] = field(default_factory=dict)
    durable: bool = True
    auto_delete: bool = False
    exclusive_owner: object | None = None
    deleted: bool = False


def as_queue(fake: FakeQueue) -> Queue:
    return cast(Queue, fake)


# ---- the pure forecast functions ----------------------------------------------------------------


def test_drain_is_depth_over_net_outflow() -> None:
    assert drain_seconds(100, 0.0, 10.0) == pytest.approx(10.0)
    assert drain_seconds(100, 5.0, 10.0) == pytest.approx(20.0)  # publishers keep adding
    assert drain_seconds(0, 0.0, 0.0) == 0.0  # already empty


@pytest.mark.parametrize(("publish", "deliver"), [(0.0, 0.0), (10.0, 10.0), (20.0, 10.0)])
def test_a_queue_that_is_not_shrinking_never_drains(publish: float, deliver: float) -> None:
    assert drain_seconds(100, publish, deliver) is None


def test_full_is_headroom_over_growth() -> None:
    assert full_seconds(600, 1000, 40.0) == pytest.approx(10.0)
    assert full_seconds(1000, 1000, 40.0) == 0.0
    assert full_seconds(1200, 1000, -5.0) == 0.0  # past the limit counts as full
    assert full_seconds(600, 1000, 0.0) is None  # not growing
    assert full_seconds(600, 1000, -3.0) is None  # shrinking
    assert full_seconds(600, None, 40.0) is None  # unbounded


def test_limits_are_read_from_the_arguments() -> None:
    assert queue_limits({}) == (None, None)
    assert queue_limits({"x-max-length": 10, "x-max-length-bytes": 4096}) == (10, 4096)
    # Malformed values (RabbitMQ refuses them at declare) mean no forecast, never a crash.
    assert queue_limits({"x-max-length": "10", "x-max-length-bytes": -1}) == (None, None)
    assert queue_limits({"x-max-length": True}) == (None, None)


# ---- sliding-window rates -------------------------------------------------------------------------


def test_rates_need_two_samples() -> None:
    rates = QueueRates()
    assert (rates.publish_rate, rates.deliver_rate) == (0.0, 0.0)
    rates.sample(100.0, published=50, delivered=0)
    assert (rates.publish_rate, rates.deliver_rate) == (0.0, 0.0)
    rates.sample(101.0, published=150, delivered=30)
    assert rates.publish_rate == pytest.approx(100.0)
    assert rates.deliver_rate == pytest.approx(30.0)


def test_rates_cover_the_window_and_fall_to_zero_when_traffic_stops() -> None:
    rates = QueueRates(window=5.0)
    published = 0
    for t in range(11):  # 10 msg/s for 10 s
        rates.sample(float(t), published, 0)
        published += 10
    assert rates.publish_rate == pytest.approx(10.0)
    published -= 10
    for t in range(11, 17):  # then nothing for 6 s: the window slides past the traffic
        rates.sample(float(t), published, 0)
    assert rates.publish_rate == 0.0


def test_rates_follow_a_change_within_the_window() -> None:
    rates = QueueRates(window=5.0)
    delivered = 0
    for t in range(10):
        rates.sample(float(t), 0, delivered)
        delivered += 100
    delivered -= 100
    for t in range(10, 16):  # consumers slow down from 100/s to 10/s
        delivered += 10
        rates.sample(float(t), 0, delivered)
    assert rates.deliver_rate == pytest.approx(10.0)


def test_a_counter_that_goes_back_restarts_the_window() -> None:
    rates = QueueRates()
    rates.sample(0.0, 1000, 1000)
    rates.sample(1.0, 2000, 2000)
    rates.sample(2.0, 5, 0)  # restarted counters
    assert (rates.publish_rate, rates.deliver_rate) == (0.0, 0.0)
    rates.sample(3.0, 25, 10)
    assert (rates.publish_rate, rates.deliver_rate) == (pytest.approx(20.0), pytest.approx(10.0))


def test_a_repeated_instant_is_ignored() -> None:
    rates = QueueRates()
    rates.sample(1.0, 0, 0)
    rates.sample(2.0, 10, 0)
    rates.sample(2.0, 99, 0)
    assert rates.publish_rate == pytest.approx(10.0)


def test_byte_growth_needs_a_byte_count() -> None:
    rates = QueueRates()
    rates.sample(0.0, 0, 0)
    rates.sample(1.0, 10, 0)
    assert rates.bytes_growth_rate is None
    rates = QueueRates()
    rates.sample(0.0, 0, 0, ready_bytes=1000)
    rates.sample(2.0, 10, 0, ready_bytes=3000)
    assert rates.bytes_growth_rate == pytest.approx(1000.0)


# ---- the sampler over queues ----------------------------------------------------------------------


def test_sampler_forecasts_a_draining_queue() -> None:
    sampler = StatsSampler()
    q = FakeQueue(message_count=500, stats_published=500)
    sampler.sample(10.0, [as_queue(q)], rss_bytes=123)
    q.stats_delivered, q.message_count, q.unacked = 50, 450, 5
    sampler.sample(12.0, [as_queue(q)], rss_bytes=456)
    stats = sampler.queue_stats(as_queue(q))
    assert stats.publish_rate == 0.0
    assert stats.deliver_rate == pytest.approx(25.0)
    assert stats.drain_seconds == pytest.approx(450 / 25)
    assert stats.full_seconds is None  # unbounded
    assert (stats.messages_ready, stats.messages_unacknowledged, stats.messages) == (450, 5, 455)
    totals = sampler.totals([as_queue(q)])
    assert (totals.queues, totals.messages, totals.rss_bytes) == (1, 455, 456)
    assert totals.deliver_rate == pytest.approx(25.0)


def test_sampler_forecasts_when_a_bounded_queue_fills() -> None:
    sampler = StatsSampler()
    q = FakeQueue(arguments={"x-max-length": 1000}, message_count=100)
    sampler.sample(0.0, [as_queue(q)])
    q.stats_published, q.stats_delivered, q.message_count = 100, 50, 150  # +50/s net
    sampler.sample(1.0, [as_queue(q)])
    stats = sampler.queue_stats(as_queue(q))
    assert stats.full_seconds == pytest.approx((1000 - 150) / 50)
    assert stats.drain_seconds is None  # growing, not draining


def test_the_byte_limit_wins_when_it_comes_first() -> None:
    @dataclass(eq=False)
    class ByteCountingQueue(FakeQueue):
        ready_bytes: int = 0

    sampler = StatsSampler()
    q = ByteCountingQueue(arguments={"x-max-length": 1_000_000, "x-max-length-bytes": 10_000})
    sampler.sample(0.0, [as_queue(q)])
    q.stats_published, q.message_count, q.ready_bytes = 10, 10, 2_000  # 2,000 B/s
    sampler.sample(1.0, [as_queue(q)])
    assert sampler.queue_stats(as_queue(q)).full_seconds == pytest.approx(4.0)


def test_sampler_forgets_deleted_queues_and_starts_unknown_ones_at_zero() -> None:
    sampler = StatsSampler()
    q = FakeQueue()
    sampler.sample(0.0, [as_queue(q)])
    q.stats_published = 10
    sampler.sample(1.0, [as_queue(q)])
    assert sampler.rates(as_queue(q)).publish_rate == pytest.approx(10.0)
    q.deleted = True
    sampler.sample(2.0, [as_queue(q)])
    assert sampler.rates(as_queue(q)).publish_rate == 0.0
    assert sampler.queue_stats(as_queue(FakeQueue(message_count=3))).drain_seconds is None


def test_sampler_reads_a_real_core_queue() -> None:
    core = CoreHarness()
    vhost = core.vhost
    queue = vhost.queues[core.declare("jobs", {"x-max-length": 10})]
    sampler = StatsSampler()
    sampler.sample(0.0, vhost.queues.values())
    sampler.sample(1.0, vhost.queues.values())
    stats = sampler.queue_stats(queue)
    assert (stats.name, stats.vhost, stats.messages, stats.consumers, stats.durable) == (
        "jobs",
        "/",
        0,
        0,
        True,
    )
    assert stats.drain_seconds == 0.0
    assert stats.full_seconds is None


def test_a_queue_declared_between_samples_counts_from_the_previous_sample() -> None:
    sampler = StatsSampler()
    sampler.sample(0.0, [])
    q = FakeQueue(stats_published=400, message_count=400)  # declared and filled within the tick
    sampler.sample(1.0, [as_queue(q)])
    assert sampler.rates(as_queue(q)).publish_rate == pytest.approx(400.0)


def test_queues_seen_at_the_first_sample_start_at_zero_rates() -> None:
    sampler = StatsSampler()
    q = FakeQueue(stats_published=400)  # recovered or declared before the sampler started
    sampler.sample(5.0, [as_queue(q)])
    assert sampler.rates(as_queue(q)).publish_rate == 0.0
