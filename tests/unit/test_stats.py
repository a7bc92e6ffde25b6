"""Statistics, rates and forecasts (mailslot.core.stats) with injected time and counters: no clock, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from mailslot.core.broker import Broker
from mailslot.core.message import Entry, Message
from mailslot.core.queue import Queue
from mailslot.core.session import Gate, Session
from mailslot.core.stats import (
    QUEUE_SAMPLE,
    SESSION_COUNTERS,
    VHOST_SAMPLE,
    RateTable,
    StatsSampler,
    drain_seconds,
    full_seconds,
    queue_counts,
    queue_limits,
    session_counts,
    session_totals,
)
from mailslot.storage.memory import MemoryMessageLog, MemoryMetadataStore
from mailslot.testing.codec import JSON_CODEC

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
    table = RateTable(2)
    assert table.rates("q") == (0.0, 0.0)
    table.sample(100.0, [("q", (50, 0))])
    assert table.rates("q") == (0.0, 0.0)  # present at the first tick: its past is no rate
    table.sample(101.0, [("q", (150, 30))])
    assert table.rates("q") == (pytest.approx(100.0), pytest.approx(30.0))


def test_rates_cover_the_window_and_fall_to_zero_when_traffic_stops() -> None:
    table = RateTable(1, window=5.0)
    published = 0
    for t in range(11):  # 10 msg/s for 10 s
        table.sample(float(t), [("q", (published,))])
        published += 10
    assert table.rates("q") == (pytest.approx(10.0),)
    published -= 10
    for t in range(11, 17):  # then nothing for 6 s: the window slides past the traffic
        table.sample(float(t), [("q", (published,))])
    assert table.rates("q") == (0.0,)


def test_rates_follow_a_change_within_the_window() -> None:
    table = RateTable(1, window=5.0)
    delivered = 0
    for t in range(10):
        table.sample(float(t), [("q", (delivered,))])
        delivered += 100
    delivered -= 100
    for t in range(10, 16):  # consumers slow down from 100/s to 10/s
        delivered += 10
        table.sample(float(t), [("q", (delivered,))])
    assert table.rates("q") == (pytest.approx(10.0),)


def test_a_depth_that_shrinks_has_a_negative_rate() -> None:
    table = RateTable(1)
    table.sample(0.0, [("q", (100,))])
    table.sample(2.0, [("q", (60,))])
    assert table.rates("q") == (pytest.approx(-20.0),)


def test_a_repeated_instant_is_ignored() -> None:
    table = RateTable(1)
    table.sample(1.0, [("q", (0,))])
    table.sample(2.0, [("q", (10,))])
    table.sample(2.0, [("q", (99,))])
    assert table.rates("q") == (pytest.approx(10.0),)


def test_an_idle_object_keeps_one_tuple_and_resumes_from_the_last_tick() -> None:
    table = RateTable(1, window=5.0)
    for t in range(10):
        table.sample(float(t), [("q", (7,))])
    assert table._active == {} and table._idle == {"q": (9.0, (7,))}  # no window of samples kept
    table.sample(10.0, [("q", (27,))])  # 20 in the last second, not 20 over ten seconds
    assert table.rates("q") == (pytest.approx(20.0),)


def test_objects_missing_from_a_tick_are_forgotten_and_new_ones_count_from_the_previous_tick() -> None:
    table = RateTable(1)
    table.sample(0.0, [("old", (0,))])
    table.sample(1.0, [("old", (10,)), ("new", (400,))])  # "new" appeared and counted 400 within the tick
    assert table.rates("new") == (pytest.approx(400.0),)
    table.sample(2.0, [("new", (400,))])
    assert len(table) == 1 and table.rates("old") == (0.0,)


# ---- the sampler over a real core ----------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.delivered: list[Entry] = []

    def deliver_many(self, consumer_tag: str, first_tag: int, entries: list[Entry]) -> None:
        self.delivered += entries

    def consumer_cancelled(self, consumer_tag: str) -> None:
        pass

    def acknowledgement_timed_out(self, timeout_ms: int) -> None:
        pass


def make_core() -> Broker:
    return Broker(MemoryMessageLog(), MemoryMetadataStore(), [JSON_CODEC])


def declare(core: Broker, name: str, **arguments: Any) -> Queue:
    return core.vhosts["/"].declare_queue(
        name, passive=False, durable=True, exclusive=False, auto_delete=False, arguments=arguments, owner=None
    )


def open_session(core: Broker) -> tuple[Session, Sink]:
    sink = Sink()
    return core.open_session(core.vhosts["/"], object(), sink, Gate()), sink


def publish(session: Session, routing_key: str, count: int, exchange: str = "") -> None:
    for i in range(count):
        session.publish(exchange, routing_key, Message(exchange, routing_key, b"", b"m%d" % i, False, JSON_CODEC), False)


def by_name(names: tuple[str, ...], values: Any) -> dict[str, Any]:
    return dict(zip(names, values, strict=True))


def test_counters_follow_publish_deliver_get_ack_and_redeliver() -> None:
    core = make_core()
    queue = declare(core, "jobs")
    session, sink = open_session(core)
    publish(session, "jobs", 10)
    publish(session, "nowhere", 2)  # unroutable, dropped
    session.consume("jobs", "c1", no_ack=False, exclusive=False, arguments={})
    session.qos(0, 4, False)  # applies to later consumers only
    core.flush()
    assert len(sink.delivered) == 10
    session.nack(4, multiple=True, requeue=True)  # tags 1..4 back to the queue
    session.ack(10, multiple=True)  # 5..10
    session.cancel("c1")
    got = session.get("jobs", no_ack=True)
    assert got is not None and got[1].redelivered
    assert session.get("jobs", no_ack=False) is not None
    declare(core, "empty")
    assert session.get("empty", no_ack=True) is None
    q = by_name(QUEUE_SAMPLE, queue_counts(queue))
    assert q["publish"] == 10 and q["deliver"] == 10 and q["deliver_no_ack"] == 0
    assert (q["get"], q["get_no_ack"], q["deliver_get"]) == (1, 1, 12)
    assert (q["ack"], q["redeliver"]) == (6, 2)
    assert (q["messages"], q["messages_ready"], q["messages_unacknowledged"]) == (3, 2, 1)
    s = by_name(SESSION_COUNTERS, session_counts(session))
    assert (s["publish"], s["drop_unroutable"], s["return_unroutable"]) == (12, 2, 0)
    assert (s["deliver"], s["get"], s["get_no_ack"], s["ack"], s["redeliver"]) == (10, 1, 1, 6, 2)
    assert s["get_empty"] == 1 and q["get_empty"] == 0  # the empty get was on the other queue


def test_a_closed_sessions_counters_stay_in_the_vhost_totals() -> None:
    core = make_core()
    declare(core, "jobs")
    vhost = core.vhosts["/"]
    session, _ = open_session(core)
    publish(session, "jobs", 5)
    before = by_name(SESSION_COUNTERS, session_totals(vhost.stats, [session]))
    session.close()
    after = by_name(SESSION_COUNTERS, session_totals(vhost.stats, [session]))  # closed: not counted twice
    assert before["publish"] == after["publish"] == 5
    assert (vhost.stats.channels_opened, vhost.stats.channels_closed) == (1, 1)


def test_a_transaction_counts_its_publishes_once() -> None:
    core = make_core()
    declare(core, "jobs")
    session, _ = open_session(core)
    session.tx_select()
    publish(session, "jobs", 3)
    session.tx_commit()
    assert by_name(SESSION_COUNTERS, session_counts(session))["publish"] == 3


def test_exchanges_count_publishes_in_and_queue_deliveries_out() -> None:
    core = make_core()
    vhost = core.vhosts["/"]
    for name in ("a", "b"):
        declare(core, name)
        vhost.bind("amq.fanout", ("queue", name), "", {}, None)
    session, _ = open_session(core)
    publish(session, "", 4, exchange="amq.fanout")
    exchange = vhost.exchanges["amq.fanout"]
    assert (exchange.stats_in, exchange.stats_out) == (4, 8)


def test_sampler_forecasts_a_draining_queue_and_totals_the_vhost() -> None:
    core = make_core()
    queue = declare(core, "jobs")
    session, _ = open_session(core)
    publish(session, "jobs", 500)
    sampler = StatsSampler()
    sampler.sample(10.0, core.vhosts.values(), [session], rss_bytes=123)
    for _ in range(50):
        assert session.get("jobs", no_ack=True) is not None
    sampler.sample(12.0, core.vhosts.values(), [session], connections=[("c", "/", (300, 700))], rss_bytes=456)
    stats = sampler.queue_stats(queue)
    assert stats.publish_rate == 0.0
    assert stats.deliver_rate == pytest.approx(25.0)
    assert stats.drain_seconds == pytest.approx(450 / 25)
    assert stats.full_seconds is None  # unbounded
    assert (stats.messages_ready, stats.messages_unacknowledged, stats.messages) == (450, 0, 450)
    assert sampler.queue_rates(queue)["messages"] == pytest.approx(-25.0)
    vhost_rates = by_name(VHOST_SAMPLE, sampler.vhosts.rates("/"))
    assert vhost_rates["get_no_ack"] == pytest.approx(25.0)
    assert vhost_rates["recv_oct"] == pytest.approx(150.0)
    assert sampler.vhosts.rates("") == sampler.vhosts.rates("/")  # one vhost: the broker is that vhost
    assert sampler.rss_bytes == 456


def test_sampler_forecasts_when_a_bounded_queue_fills() -> None:
    core = make_core()
    queue = declare(core, "jobs", **{"x-max-length": 1000})
    session, _ = open_session(core)
    sampler = StatsSampler()
    publish(session, "jobs", 100)
    sampler.sample(0.0, core.vhosts.values(), [session])
    publish(session, "jobs", 100)
    for _ in range(50):
        session.get("jobs", no_ack=True)
    sampler.sample(1.0, core.vhosts.values(), [session])  # +50/s net
    stats = sampler.queue_stats(queue)
    assert stats.full_seconds == pytest.approx((1000 - 150) / 50)
    assert stats.drain_seconds is None  # growing, not draining


def test_the_byte_limit_wins_when_it_comes_first() -> None:
    core = make_core()
    queue = declare(core, "jobs", **{"x-max-length": 1_000_000, "x-max-length-bytes": 10_000})
    session, _ = open_session(core)
    sampler = StatsSampler()
    sampler.sample(0.0, core.vhosts.values(), [session])
    for _ in range(10):
        session.publish("", "jobs", Message("", "jobs", b"", b"x" * 200, False, JSON_CODEC), False)  # 2,000 B/s
    sampler.sample(1.0, core.vhosts.values(), [session])
    assert sampler.queue_stats(queue).full_seconds == pytest.approx(4.0)


@dataclass(eq=False)
class FakeSession:
    """A session's counters set by hand (the sampler only reads them)."""

    vhost: Any
    closed: bool = False
    counters: dict[str, int] = field(default_factory=dict)

    def __getattr__(self, name: str) -> int:
        if name.startswith("stats_"):
            return self.counters.get(name[6:], 0)
        raise AttributeError(name)


def test_a_redeclared_queue_starts_afresh() -> None:
    core = make_core()
    vhost = core.vhosts["/"]
    first = declare(core, "jobs")
    session, _ = open_session(core)
    sampler = StatsSampler()
    sampler.sample(0.0, core.vhosts.values(), [session])
    publish(session, "jobs", 10)
    sampler.sample(1.0, core.vhosts.values(), [session])
    assert sampler.queue_rates(first)["publish"] == pytest.approx(10.0)
    vhost.delete_queue("jobs", if_unused=False, if_empty=False, owner=None)
    second = declare(core, "jobs")
    sampler.sample(2.0, core.vhosts.values(), [cast(Session, FakeSession(vhost))])
    assert sampler.queue_rates(second)["publish"] == 0.0 and sampler.queue_rates(first)["publish"] == 0.0
    assert (vhost.stats.queues_declared, vhost.stats.queues_created, vhost.stats.queues_deleted) == (2, 2, 1)


def test_growth_is_timed_from_the_previous_tick_when_marked_and_from_when_seen_otherwise() -> None:
    table = RateTable(1)
    table.update(0.0, [("touched", (0,), False), ("swept", (0,), False)])
    table.update(8.0, [])  # neither looked at: unchanged ("touched" was not touched before this tick)
    table.update(10.0, [("touched", (90,), True), ("swept", (90,), False)])
    assert table.rates("touched") == (pytest.approx(45.0),)  # touched since the tick at 8.0: 90 in 2 s
    assert table.rates("swept") == (pytest.approx(9.0),)  # last seen at 0.0: 90 over 10 s


def test_a_tick_reads_touched_moving_and_a_tenth_of_the_other_queues() -> None:
    from mailslot.core.stats import SWEEP_TICKS

    core = make_core()
    queues = [declare(core, f"q{i}") for i in range(100)]
    session, _ = open_session(core)
    sampler = StatsSampler()
    sampler.sample(0.0, core.vhosts.values(), [session])
    read: list[Queue] = []
    import mailslot.core.stats as stats_module

    original = stats_module.queue_counts

    def counting(queue: Queue) -> tuple[int, ...]:
        read.append(queue)
        return original(queue)

    stats_module.queue_counts = counting  # type: ignore[assignment]
    try:
        publish(session, "q7", 5)
        core.flush()  # the batch touches q7 (Queue.stats_dirty)
        sampler.sample(1.0, core.vhosts.values(), [session])
        assert queues[7] in read and len(read) <= 100 // SWEEP_TICKS + 1
        assert sampler.queue_rates(queues[7])["publish"] == pytest.approx(5.0)
        read.clear()
        sampler.sample(2.0, core.vhosts.values(), [session])
        assert queues[7] in read  # still moving: read every tick until its window is quiet
        core.vhosts["/"].delete_queue("q50", if_unused=False, if_empty=False, owner=None)
        for t in range(3, 3 + SWEEP_TICKS):
            sampler.sample(float(t), core.vhosts.values(), [session])
        assert queues[50] not in sampler.queues.idle_keys() and len(sampler.queues) == 99  # forgotten
    finally:
        stats_module.queue_counts = original  # type: ignore[assignment]
