"""Per-queue rates and forecasts, sampled off the hot path.

Rules of this module:

* Nothing here runs per message. The queues already count what they do (``stats_published``,
  ``stats_delivered``, ``message_count``, ``unacked``); a host timer calls
  :meth:`StatsSampler.sample` about once a second and the sampler reads those counters. Cost:
  O(queues) per tick, nothing per publish or delivery.
* Time is an input (``now``, monotonic seconds); this module reads no clock, so the math is tested
  with injected times and counters (tests/unit/test_stats.py). Process memory (RSS) is also an
  input: the host measures it.
* A rate is the counter's growth over a sliding window of the last :data:`WINDOW` seconds of
  samples (RabbitMQ's management plugin reports rates over a 5 s window too). A window, not an
  EWMA: a rate falls to exactly 0 a few seconds after traffic stops, which the forecasts rely on.
* Forecasts are made for the depth at the moment they are asked (the live ``message_count``) with
  the latest rates. "Never" is ``None`` (JSON ``null``), not ``inf``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .queue import Queue

# Seconds of samples a rate is computed over: long enough to smooth out the batch-shaped bursts of
# the hot path at a 1 s sampling interval, short enough that a stall shows within a few seconds.
WINDOW = 5.0
# The interval the host is expected to sample at (bootstrap's timer uses it).
SAMPLE_INTERVAL = 1.0


# ---- the forecast math (pure functions) -------------------------------------------------------------


def drain_seconds(ready: int, publish_rate: float, deliver_rate: float) -> float | None:
    """Seconds until ``ready`` messages are gone at the current rates; ``None`` if it is not draining.

    The queue shrinks at the net outflow, deliveries minus publishes: a queue whose consumers take
    100/s while producers add 100/s never drains, even though ``ready / deliver_rate`` is finite. With
    no publishes this is ``ready / deliver_rate``.
    """
    if ready <= 0:
        return 0.0
    outflow = deliver_rate - publish_rate
    if outflow <= 0:
        return None
    return ready / outflow


def full_seconds(used: float, limit: int | None, growth_rate: float) -> float | None:
    """Seconds until ``used`` reaches ``limit`` growing at ``growth_rate`` per second.

    ``None`` when there is no limit or the queue is not growing; ``0.0`` when it is already at (or past)
    its limit.
    """
    if limit is None:
        return None
    if used >= limit:
        return 0.0
    if growth_rate <= 0:
        return None
    return (limit - used) / growth_rate


def _limit(arguments: Mapping[str, Any], name: str) -> int | None:
    """A non-negative integer queue argument, or None (absent or malformed: RabbitMQ refuses those at
    declare time; here a malformed value just means no forecast)."""
    value = arguments.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def queue_limits(arguments: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """``(x-max-length, x-max-length-bytes)`` from a queue's arguments (RabbitMQ's queue length limits:
    https://www.rabbitmq.com/docs/maxlength; both count ready messages only)."""
    return _limit(arguments, "x-max-length"), _limit(arguments, "x-max-length-bytes")


def ready_bytes_of(queue: Queue) -> int | None:
    """Body bytes of the queue's ready messages (``Queue.ready_bytes``, kept for x-max-length-bytes),
    or None for a queue that does not count them: then there is no byte forecast."""
    value = getattr(queue, "ready_bytes", None)  # tolerant: the counter arrived with the length limits
    return value if isinstance(value, int) else None


def active_consumer_tag(queue: Queue) -> str | None:
    """With x-single-active-consumer, the first registered consumer is the one that gets deliveries."""
    if queue.arguments.get("x-single-active-consumer") is True and queue.consumers:
        return queue.consumers[0].tag
    return None


# ---- rates ------------------------------------------------------------------------------------------


class QueueRates:
    """Sliding-window rates of one queue's counters."""

    __slots__ = ("_samples", "window")

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        # (now, published, delivered, ready bytes or -1 when unknown), oldest first
        self._samples: deque[tuple[float, int, int, int]] = deque()

    def sample(self, now: float, published: int, delivered: int, ready_bytes: int | None = None) -> None:
        samples = self._samples
        if samples:
            last = samples[-1]
            if now <= last[0]:
                return  # same instant (or a clock that went back): nothing to learn
            if published < last[1] or delivered < last[2]:
                samples.clear()  # counters restarted: rates from scratch
        samples.append((now, published, delivered, -1 if ready_bytes is None else ready_bytes))
        # Keep one sample at or before the window's start as the anchor, so a warm window spans it all.
        horizon = now - self.window
        while len(samples) >= 2 and samples[1][0] <= horizon:
            samples.popleft()

    def _rate(self, index: int) -> float:
        samples = self._samples
        if len(samples) < 2:
            return 0.0
        first, last = samples[0], samples[-1]
        return (last[index] - first[index]) / (last[0] - first[0])

    @property
    def publish_rate(self) -> float:
        """Messages published to the queue per second."""
        return self._rate(1)

    @property
    def deliver_rate(self) -> float:
        """Messages delivered to consumers per second (RabbitMQ's ``deliver``; redeliveries count)."""
        return self._rate(2)

    @property
    def bytes_growth_rate(self) -> float | None:
        """Net growth of ready bytes per second (negative when shrinking); None when not counted."""
        samples = self._samples
        if len(samples) < 2 or samples[0][3] < 0 or samples[-1][3] < 0:
            return None
        return self._rate(3)


# ---- what the front ends read -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue's counts, rates and forecasts at one moment."""

    vhost: str
    name: str
    messages_ready: int
    messages_unacknowledged: int
    consumers: int
    durable: bool
    auto_delete: bool
    exclusive: bool
    arguments: Mapping[str, Any]
    publish_rate: float
    deliver_rate: float
    drain_seconds: float | None
    full_seconds: float | None
    single_active_consumer_tag: str | None = None  # x-single-active-consumer: who gets the deliveries

    @property
    def messages(self) -> int:
        return self.messages_ready + self.messages_unacknowledged


@dataclass(frozen=True, slots=True)
class BrokerTotals:
    queues: int
    messages_ready: int
    messages_unacknowledged: int
    publish_rate: float
    deliver_rate: float
    rss_bytes: int | None

    @property
    def messages(self) -> int:
        return self.messages_ready + self.messages_unacknowledged


_IDLE = QueueRates()  # rates of a queue not sampled yet: all zero


class StatsSampler:
    """Rates for every queue, fed by a host timer: ``sample(now, queues, rss_bytes)`` about once a second."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._rates: dict[Queue, QueueRates] = {}
        self._last: float | None = None  # time of the previous sample
        self.rss_bytes: int | None = None  # the host's last reading of process memory

    def sample(self, now: float, queues: Iterable[Queue], rss_bytes: int | None = None) -> None:
        """Read every queue's counters; forget queues that are gone (a redeclared queue starts afresh)."""
        old, fresh = self._rates, {}
        last = self._last
        for queue in queues:
            if queue.deleted:
                continue
            used = ready_bytes_of(queue)
            rates = old.get(queue)
            if rates is None:
                rates = QueueRates(self.window)
                if last is not None:
                    # Declared since the previous sample: everything it counts happened after ``last``
                    # (a burst published right after declare must show as a rate, not vanish).
                    rates.sample(last, 0, 0, None if used is None else 0)
            rates.sample(now, queue.stats_published, queue.stats_delivered, used)
            fresh[queue] = rates
        self._rates = fresh
        self._last = now
        self.rss_bytes = rss_bytes

    def rates(self, queue: Queue) -> QueueRates:
        return self._rates.get(queue, _IDLE)

    def queue_stats(self, queue: Queue) -> QueueStats:
        rates = self.rates(queue)
        publish, deliver = rates.publish_rate, rates.deliver_rate
        ready = queue.message_count
        max_length, max_bytes = queue_limits(queue.arguments)
        full = full_seconds(ready, max_length, publish - deliver)
        if max_bytes is not None:
            used, growth = ready_bytes_of(queue), rates.bytes_growth_rate
            if used is not None and growth is not None:
                by_bytes = full_seconds(used, max_bytes, growth)
                if by_bytes is not None and (full is None or by_bytes < full):
                    full = by_bytes  # whichever limit is hit first
        return QueueStats(
            vhost=queue.vhost,
            name=queue.name,
            messages_ready=ready,
            messages_unacknowledged=queue.unacked,
            consumers=len(queue.consumers),
            durable=queue.durable,
            auto_delete=queue.auto_delete,
            exclusive=queue.exclusive_owner is not None,
            arguments=queue.arguments,
            publish_rate=publish,
            deliver_rate=deliver,
            drain_seconds=drain_seconds(ready, publish, deliver),
            full_seconds=full,
            single_active_consumer_tag=active_consumer_tag(queue),
        )

    def totals(self, queues: Iterable[Queue]) -> BrokerTotals:
        count = ready = unacked = 0
        publish = deliver = 0.0
        for queue in queues:
            count += 1
            ready += queue.message_count
            unacked += queue.unacked
            rates = self.rates(queue)
            publish += rates.publish_rate
            deliver += rates.deliver_rate
        return BrokerTotals(count, ready, unacked, publish, deliver, self.rss_bytes)
