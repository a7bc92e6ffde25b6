"""Message statistics, rates and forecasts, sampled off the hot path.

Rules of this module:

* Nothing here runs per message. Queues, sessions and exchanges count what they do in plain integer
  attributes (``Queue.stats_published``, ``Session.stats_acked``, ``Exchange.stats_in``, ...), bumped
  once per batch where the work is batch-shaped. A host timer calls :meth:`StatsSampler.sample` about
  once a second and the sampler reads those counters: O(objects) per tick, nothing per publish.
* Names are RabbitMQ's management API names (``publish``, ``deliver``, ``deliver_no_ack``, ``get``,
  ``get_no_ack``, ``get_empty``, ``deliver_get``, ``ack``, ``redeliver``, ``confirm``,
  ``return_unroutable``, ``drop_unroutable``, ``publish_in``, ``publish_out``; see
  https://www.rabbitmq.com/docs/management and rabbit_mgmt_format), so the HTTP layer maps them 1:1.
* Time is an input (``now``, monotonic seconds); this module reads no clock, so the math is tested
  with injected times and counters (tests/unit/test_stats.py). Process memory (RSS) is an input too.
* A rate is the counter's growth over a sliding window of the last :data:`WINDOW` seconds of samples
  (RabbitMQ's management plugin shows rates over a 5 s window too). A window, not an EWMA: a rate falls
  to exactly 0 a few seconds after traffic stops, which the forecasts rely on.
* Memory: an object whose counters did not move for a whole window keeps one tuple (its counters at the
  last tick), not a window of samples, so 100,000 idle queues cost a few MB (RabbitMQ's users report its
  statistics database growing to gigabytes with many queues).
* Totals never go down: a closed session's counters are added to its vhost's :class:`VhostStats`
  when it closes, so vhost and broker totals (and the Prometheus ``_total`` counters made from them)
  are the retired totals plus the live sessions'.
* Forecasts are made for the depth at the moment they are asked (the live ``message_count``) with the
  latest rates. "Never" is ``None`` (JSON ``null``), not ``inf``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .queue import Queue

if TYPE_CHECKING:
    from .exchanges import Exchange
    from .session import Session

# Seconds of samples a rate is computed over: long enough to smooth out the batch-shaped bursts of
# the hot path at a 1 s sampling interval, short enough that a stall shows within a few seconds.
WINDOW = 5.0
# The interval the host is expected to sample at (the HTTP server's timer uses it).
SAMPLE_INTERVAL = 1.0

# ---- counter names and how each object kind reports them ------------------------------------------

QUEUE_COUNTERS = (
    "publish",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "get_empty",
    "deliver_get",
    "ack",
    "redeliver",
)
# Sampled with the counters so that depth changes get rates too (RabbitMQ's messages_details.rate).
QUEUE_DEPTHS = ("messages", "messages_ready", "messages_unacknowledged", "message_bytes_ready")
QUEUE_SAMPLE = QUEUE_COUNTERS + QUEUE_DEPTHS

SESSION_COUNTERS = (
    "publish",
    "confirm",
    "return_unroutable",
    "drop_unroutable",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "get_empty",
    "deliver_get",
    "ack",
    "redeliver",
)
EXCHANGE_COUNTERS = ("publish_in", "publish_out")
CONNECTION_COUNTERS = ("recv_oct", "send_oct")
# Objects opened and closed since start (RabbitMQ's churn_rates, rabbitmq_*_opened_total).
CHURN_COUNTERS = (
    "connection_created",
    "connection_closed",
    "channel_created",
    "channel_closed",
    "queue_declared",
    "queue_created",
    "queue_deleted",
)
# A vhost (and the whole broker) reports its sessions' counters and its connections' bytes, as RabbitMQ's
# /api/vhosts and /api/overview do; its depth rates are its queues' (StatsSampler.depth_rates).
VHOST_SAMPLE = SESSION_COUNTERS + CONNECTION_COUNTERS

Counts = tuple[int, ...]


def queue_counts(queue: Queue) -> Counts:
    """A queue's counters and depths in :data:`QUEUE_SAMPLE` order."""
    delivered, no_ack = queue.stats_delivered, queue.stats_delivered_no_ack
    got, got_no_ack = queue.stats_get, queue.stats_get_no_ack
    ready, unacked = queue.message_count, queue.unacked
    return (
        queue.stats_published,
        delivered - no_ack,
        no_ack,
        got - got_no_ack,
        got_no_ack,
        queue.stats_get_empty,
        delivered + got,
        queue.stats_acked,
        queue.stats_redelivered,
        ready + unacked,
        ready,
        unacked,
        ready_bytes_of(queue) or 0,
    )


def session_counts(session: Session) -> Counts:
    """A session's counters in :data:`SESSION_COUNTERS` order."""
    delivered, no_ack = session.stats_delivered, session.stats_delivered_no_ack
    got, got_no_ack = session.stats_get, session.stats_get_no_ack
    unroutable, returned = session.stats_unroutable, session.stats_returned
    return (
        session.stats_published,
        session.stats_confirmed,
        returned,
        max(unroutable - returned, 0),
        delivered - no_ack,
        no_ack,
        got - got_no_ack,
        got_no_ack,
        session.stats_get_empty,
        delivered + got,
        session.stats_acked,
        session.stats_redelivered,
    )


def exchange_counts(exchange: Exchange) -> Counts:
    return (exchange.stats_in, exchange.stats_out)


# Bytes of bookkeeping per message a queue holds in memory: an Entry with its Message and deque slot
# measured ~220 B with tracemalloc on CPython 3.11, rounded up for the queue's own structures.
ENTRY_OVERHEAD = 250


def memory_estimate(in_memory: int, body_bytes: int) -> int:
    """What a queue's messages take in memory (RabbitMQ's per-queue ``memory``): bookkeeping + bodies."""
    return in_memory * ENTRY_OVERHEAD + body_bytes


def add_counts(into: list[int], counts: Iterable[int]) -> None:
    for i, value in enumerate(counts):
        into[i] += value


# ---- per-vhost totals that outlive sessions, churn, dead-lettering -----------------------------------


class VhostStats:
    """What a vhost counts that no live object holds: closed sessions' counters, channel and queue
    churn, and messages dead-lettered (by reason, and whether the queue had a dead-letter exchange:
    RabbitMQ's ``dead_letter_strategy`` label, ``at_most_once`` or ``disabled``)."""

    __slots__ = (
        "channels_closed",
        "channels_opened",
        "dead_lettered",
        "queues_created",
        "queues_declared",
        "queues_deleted",
        "retired",
    )

    def __init__(self) -> None:
        self.retired = [0] * len(SESSION_COUNTERS)
        self.dead_lettered: dict[tuple[str, bool], int] = {}
        self.channels_opened = 0
        self.channels_closed = 0
        self.queues_declared = 0
        self.queues_created = 0
        self.queues_deleted = 0

    def retire(self, session: Session) -> None:
        """A session closes: its counters stay in the totals."""
        add_counts(self.retired, session_counts(session))
        self.channels_closed += 1

    def count_dead_lettered(self, reason: str, has_dead_letter_exchange: bool, count: int) -> None:
        key = (reason, has_dead_letter_exchange)
        self.dead_lettered[key] = self.dead_lettered.get(key, 0) + count


def session_totals(stats: VhostStats, live: Iterable[Session]) -> list[int]:
    """Retired plus live sessions' counters (:data:`SESSION_COUNTERS` order): never goes down."""
    totals = list(stats.retired)
    for session in live:
        if not session.closed:
            add_counts(totals, session_counts(session))
    return totals


# ---- store commits -------------------------------------------------------------------------------------

# Upper bounds (seconds) of the commit latency histogram: an fdatasync takes ~100 us on a good disk and tens
# of ms on a slow one; past a second something is wrong.
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Upper bounds (bytes) of the batch size histogram: one 256 B message up to a 16 MiB burst.
COMMIT_BYTES_BUCKETS = (512, 4096, 32_768, 262_144, 1_048_576, 4_194_304, 16_777_216)


class Histogram:
    """Cumulative bucket counts, sum and count of observations (Prometheus' histogram), no clock."""

    __slots__ = ("bounds", "buckets", "count", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * len(bounds)  # observations <= bounds[i] (not cumulative: summed when read)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.buckets[i] += 1
                break

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with +Inf."""
        out, running = [], 0
        for bound, n in zip(self.bounds, self.buckets, strict=True):
            running += n
            out.append((bound, running))
        out.append((float("inf"), self.count))
        return out


class CommitStats:
    """What the host measured of each store commit (one per batch): its latency, and its size in bytes
    when the store reports what it wrote (the segment log does)."""

    __slots__ = ("bytes", "seconds")

    def __init__(self) -> None:
        self.seconds = Histogram(COMMIT_SECONDS_BUCKETS)
        self.bytes = Histogram(COMMIT_BYTES_BUCKETS)


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

Sample = tuple[float, Counts]


class RateTable:
    """Sliding-window rates of the counters of many objects of one kind (queues, sessions, ...).

    An object that changed within the window keeps its samples (at most one per tick of the window); an
    object that did not keeps one sample: when it was last looked at, and its counters then.
    :meth:`sample` looks at every object of a small kind each tick and forgets those missing;
    :meth:`update` looks at the objects given only (the queue pass: see :meth:`StatsSampler.sample`).
    """

    __slots__ = ("_active", "_idle", "_last", "width", "window")

    def __init__(self, width: int, window: float = WINDOW) -> None:
        self.width = width
        self.window = window
        self._active: dict[Hashable, list[Sample]] = {}
        self._idle: dict[Hashable, Sample] = {}
        self._last: float | None = None  # time of the previous tick

    def sample(self, now: float, items: Iterable[tuple[Hashable, Counts]]) -> None:
        """Every object of the kind, each tick: objects missing from ``items`` are forgotten (deleted; a
        redeclared queue is a new object and starts afresh)."""
        given = list(items)
        if not self.update(now, ((key, counts, True) for key, counts in given)):
            return
        present = {key for key, _ in given}
        for table in (self._active, self._idle):
            for key in [k for k in table if k not in present]:
                del table[key]

    def update(self, now: float, items: Iterable[tuple[Hashable, Counts, bool]]) -> bool:
        """Look at the objects given: (key, counters, ``marked``). ``marked``: it may have changed since the
        previous tick (its counters then were the ones last seen), so growth is timed from that tick;
        unmarked, growth is timed from when it was last seen. Objects with samples in the window must be
        given every tick (their window slides). False (nothing done) for a repeated or earlier ``now``."""
        last = self._last
        if last is not None and now <= last:
            return False  # same instant (or a clock that went back): nothing to learn
        active, idle = self._active, self._idle
        horizon = now - self.window
        zeros = (0,) * self.width
        for key, counts, marked in items:
            series = active.get(key)
            if series is None:
                seen = idle.get(key)
                if seen is None:
                    if last is None:
                        idle[key] = (now, counts)  # present at the first tick: its past is not a rate
                        continue
                    # New since the previous tick: everything it counts happened after ``last`` (a burst
                    # published right after declare must show as a rate, not vanish).
                    seen = (last, zeros)
                elif marked and last is not None:
                    seen = (last, seen[1])
                if seen[1] == counts:
                    idle[key] = (now, counts)
                    continue
                idle.pop(key, None)
                active[key] = [seen, (now, counts)]
                continue
            series.append((now, counts))
            # Keep one sample at or before the window's start as the anchor, so a warm window spans it all.
            while len(series) >= 2 and series[1][0] <= horizon:
                del series[0]
            if series[0][1] == counts and series[0][0] <= horizon:
                del active[key]
                idle[key] = (now, counts)  # nothing moved for a whole window: its rates are 0
        self._last = now
        return True

    def forget(self, keys: Iterable[Hashable]) -> None:
        for key in keys:
            self._active.pop(key, None)
            self._idle.pop(key, None)

    def rates(self, key: Hashable) -> tuple[float, ...]:
        """Per-second growth of each counter over the window (0.0 for an idle or unknown object)."""
        series = self._active.get(key)
        if series is None:
            return (0.0,) * self.width
        (t0, first), (t1, last) = series[0], series[-1]
        span = t1 - t0
        return tuple((b - a) / span for a, b in zip(first, last, strict=True))

    def active(self) -> list[Hashable]:
        """The objects whose counters moved within the window (every other one has rates of 0)."""
        return list(self._active)

    def idle_keys(self) -> list[Hashable]:
        return list(self._idle)

    def __len__(self) -> int:
        return len(self._active) + len(self._idle)


# ---- what the front ends read -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue's depth, rates and forecasts at one moment (``mailslot queues``' columns)."""

    vhost: str
    name: str
    messages_ready: int
    messages_unacknowledged: int
    consumers: int
    publish_rate: float
    deliver_rate: float  # deliveries and gets: what drains the queue
    drain_seconds: float | None
    full_seconds: float | None
    single_active_consumer_tag: str | None = None  # x-single-active-consumer: who gets the deliveries

    @property
    def messages(self) -> int:
        return self.messages_ready + self.messages_unacknowledged


_PUBLISH = QUEUE_SAMPLE.index("publish")
_DEPTH_INDEXES = tuple(QUEUE_SAMPLE.index(n) for n in ("messages", "messages_ready", "messages_unacknowledged"))
# Besides the touched and moving queues, a tick reads 1/SWEEP_TICKS of all queues (every queue at least
# every 10 s), but no more than SWEEP_MAX of them: with 50,000 queues a sweep then takes 25 s and a tick
# stays a few milliseconds (what the sweep catches is rare: expiry in an idle queue, deleted queues).
SWEEP_TICKS = 10
SWEEP_MAX = 2_000
_DELIVER_GET = QUEUE_SAMPLE.index("deliver_get")
_READY_BYTES = QUEUE_SAMPLE.index("message_bytes_ready")


class StatsSampler:
    """Rates for every queue, session, exchange, connection and vhost, fed by a host timer about once a
    second: ``sample(now, vhosts, sessions, connections, rss_bytes, churn)``.

    Queues are many (tens of thousands), so a tick does not read every queue's counters: it reads the
    queues the broker touched since the previous tick (``Queue.stats_dirty``, set once per batch by the
    broker's dispatch, and by basic.get and purge), the queues with rates in the window, and a rotating
    slice of all queues (:data:`SWEEP_TICKS`, :data:`SWEEP_MAX`), which catches changes that bypass the
    broker's batch (messages expiring in an idle queue) within a sweep, and forgets deleted queues. A tick over 50,000
    idle queues is one pass over a flag, not 50,000 counter reads.
    """

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self.queues = RateTable(len(QUEUE_SAMPLE), window)
        self.sessions = RateTable(len(SESSION_COUNTERS), window)
        self.exchanges = RateTable(len(EXCHANGE_COUNTERS), window)
        self.connections = RateTable(len(CONNECTION_COUNTERS), window)
        self.vhosts = RateTable(len(VHOST_SAMPLE), window)  # keyed by vhost name; "" is the whole broker
        self.churn = RateTable(len(CHURN_COUNTERS), window)  # key "": the broker
        self.rss_bytes: int | None = None  # the host's last reading of process memory
        self._sweep = 0  # where the rotating pass over all queues goes on at the next tick
        self._depth_rates: dict[str, tuple[float, float, float]] = {}

    def sample(
        self,
        now: float,
        vhosts: Iterable[Any],
        sessions: Iterable[Session] = (),
        connections: Iterable[tuple[Hashable, str, Counts]] = (),
        rss_bytes: int | None = None,
        churn: Counts | None = None,
    ) -> None:
        """Read the objects' counters. ``vhosts``: the core's VirtualHost objects; ``sessions``: the live
        sessions of every front end; ``connections``: (key, vhost name, ``CONNECTION_COUNTERS``);
        ``churn``: the broker's :data:`CHURN_COUNTERS`."""
        vhosts = list(vhosts)
        sessions = [s for s in sessions if not s.closed]
        connections = list(connections)
        self._sample_queues(now, vhosts)
        exchange_items: list[tuple[Hashable, Counts]] = []
        per_vhost: dict[str, list[int]] = {}
        for vhost in vhosts:
            for exchange in vhost.exchanges.values():
                if exchange.name:
                    exchange_items.append((exchange, exchange_counts(exchange)))
            totals = session_totals(vhost.stats, (s for s in sessions if s.vhost is vhost))
            per_vhost[vhost.name] = totals + [0, 0]
        for _key, vhost_name, (recv, send) in connections:
            of_vhost = per_vhost.get(vhost_name)
            if of_vhost is not None:
                of_vhost[-2] += recv
                of_vhost[-1] += send
        broker = [0] * len(VHOST_SAMPLE)
        for totals in per_vhost.values():
            add_counts(broker, totals)
        self.exchanges.sample(now, exchange_items)
        self.sessions.sample(now, ((s, session_counts(s)) for s in sessions))
        self.connections.sample(now, ((key, counts) for key, _vhost, counts in connections))
        self.vhosts.sample(now, [*((name, tuple(t)) for name, t in per_vhost.items()), ("", tuple(broker))])
        if churn is not None:
            self.churn.sample(now, [("", churn)])
        self.rss_bytes = rss_bytes

    def _sample_queues(self, now: float, vhosts: list[Any]) -> None:
        queues: list[Queue] = [q for vhost in vhosts for q in vhost.queues.values()]
        chosen: dict[Queue, bool] = {}  # queue -> marked (touched since the previous tick)
        for queue in queues:
            if queue.stats_dirty:
                queue.stats_dirty = False
                chosen[queue] = True
        table = self.queues
        moving: list[Queue] = table.active()  # type: ignore[assignment]  # this table's keys are queues
        gone = [q for q in moving if q.deleted]
        for queue in moving:
            if not queue.deleted:
                chosen.setdefault(queue, False)
        size = min(-(-len(queues) // SWEEP_TICKS), SWEEP_MAX) if queues else 0
        start = self._sweep if self._sweep < len(queues) else 0
        for queue in queues[start : start + size]:
            chosen.setdefault(queue, False)
        self._sweep = start + size
        if self._sweep >= len(queues):  # a sweep is over: forget the queues deleted meanwhile
            idle: list[Queue] = table.idle_keys()  # type: ignore[assignment]
            gone += [q for q in idle if q.deleted]
        table.forget(gone)
        table.update(now, ((q, queue_counts(q), marked) for q, marked in chosen.items() if not q.deleted))
        depth: dict[str, list[float]] = {}
        active: list[Queue] = table.active()  # type: ignore[assignment]
        for queue in active:
            rates = table.rates(queue)
            into = depth.setdefault(queue.vhost, [0.0, 0.0, 0.0])
            for i, index in enumerate(_DEPTH_INDEXES):
                into[i] += rates[index]
        whole = [0.0, 0.0, 0.0]
        for values in depth.values():
            for i in range(3):
                whole[i] += values[i]
        self._depth_rates = {name: (v[0], v[1], v[2]) for name, v in depth.items()}
        self._depth_rates[""] = (whole[0], whole[1], whole[2])

    def depth_rates(self, vhost: str = "") -> tuple[float, float, float]:
        """Growth per second of (messages, ready, unacknowledged) in ``vhost`` ("" : the whole broker), the
        sum of its queues' rates (RabbitMQ's messages_details.rate of vhosts and the overview)."""
        return self._depth_rates.get(vhost, (0.0, 0.0, 0.0))

    def queue_rates(self, queue: Queue) -> dict[str, float]:
        return dict(zip(QUEUE_SAMPLE, self.queues.rates(queue), strict=True))

    def queue_stats(self, queue: Queue) -> QueueStats:
        rates = self.queues.rates(queue)
        publish, deliver = rates[_PUBLISH], rates[_DELIVER_GET]
        ready = queue.message_count
        max_length, max_bytes = queue_limits(queue.arguments)
        full = full_seconds(ready, max_length, publish - deliver)
        if max_bytes is not None:
            used = ready_bytes_of(queue)
            if used is not None:
                by_bytes = full_seconds(used, max_bytes, rates[_READY_BYTES])
                if by_bytes is not None and (full is None or by_bytes < full):
                    full = by_bytes  # whichever limit is hit first
        return QueueStats(
            vhost=queue.vhost,
            name=queue.name,
            messages_ready=ready,
            messages_unacknowledged=queue.unacked,
            consumers=len(queue.consumers),
            publish_rate=publish,
            deliver_rate=deliver,
            drain_seconds=drain_seconds(ready, publish, deliver),
            full_seconds=full,
            single_active_consumer_tag=active_consumer_tag(queue),
        )
