"""The x-delayed-message exchange in the core, on a FakeClock: due order, same-due FIFO, routing by the
bindings at release time, deletion, restart, the plugin's declaration errors, one timer."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from mailslot.core import delayed
from mailslot.core.broker import OnCommit
from mailslot.core.delayed import delay_key, delay_of
from mailslot.core.errors import BrokerError, CommandInvalid, PreconditionFailed
from mailslot.core.session import ROUTED, UNROUTED
from mailslot.testing import CoreHarness
from mailslot.testing.codec import JSON_CODEC

EXCHANGE = "delayed"


def properties(delay: Any = None, persistent: bool = True, **headers: Any) -> bytes:
    if delay is not None:
        headers["x-delay"] = delay
    return JSON_CODEC.block(headers=headers)


def declare_delayed(h: CoreHarness, name: str = EXCHANGE, arguments: dict[str, Any] | None = None,
                    routing_type: str = "direct") -> None:
    h.declare_exchange(name, "x-delayed-message", arguments or {"x-delayed-type": routing_type})


def bound_queue(h: CoreHarness, name: str, routing_key: str | None = None,
                arguments: dict[str, Any] | None = None) -> None:
    """A queue bound to the delayed exchange (by its own name unless ``routing_key`` is given)."""
    h.declare(name)
    h.bind(EXCHANGE, name, name if routing_key is None else routing_key, arguments)


def publish(h: CoreHarness, body: bytes, delay: Any = None, routing_key: str = "q", persistent: bool = True,
            **headers: Any) -> int:
    """Publish to the delayed exchange and end the turn."""
    raw = properties(delay, persistent, **headers)
    return h.publish(routing_key, body, raw, exchange=EXCHANGE, persistent=persistent, flush=True)


@pytest.fixture
def d() -> CoreHarness:
    h = CoreHarness()
    declare_delayed(h)
    bound_queue(h, "q")
    return h


def test_messages_are_released_in_due_order_and_not_before(d: CoreHarness) -> None:
    for body, delay in ((b"c", 3000), (b"a", 1000), (b"b", 2000)):
        assert publish(d, body, delay) == UNROUTED  # nothing is routed at publish time (as the plugin)
    d.advance(0.9)
    assert d.drain("q") == []
    d.advance(0.1)
    assert d.drain("q") == [b"a"]
    d.advance(1.5)
    assert d.drain("q") == [b"b"]
    d.advance(10)
    assert d.drain("q") == [b"c"]
    assert delayed.messages(d.vhost).count == 0
    assert d.log.read(delay_key("/", EXCHANGE), 0, 10) == []  # released rows leave the delay store


def test_same_due_time_keeps_publish_order(d: CoreHarness) -> None:
    bodies = [str(i).encode() for i in range(50)]
    for body in bodies:
        d.publish("q", body, properties(500), exchange=EXCHANGE)
    d.broker.flush()
    d.advance(0.5)
    assert d.drain("q") == bodies


def test_routing_uses_the_bindings_at_release_time(d: CoreHarness) -> None:
    publish(d, b"late-bound", 1000, routing_key="later")
    publish(d, b"unbound", 1000, routing_key="q")
    bound_queue(d, "later")  # bound after the publish, before the release
    d.vhost.unbind(EXCHANGE, ("queue", "q"), "q", {})  # unbound before the release
    d.advance(1)
    assert d.drain("later") == [b"late-bound"]
    assert d.drain("q") == []  # no route when due: dropped, as the plugin does


def test_delivered_message_carries_the_negated_delay_and_its_other_properties(d: CoreHarness) -> None:
    raw = JSON_CODEC.block(headers={"x-delay": 1500, "app": "kept"}, expiration="60000", message_id="m-1")
    d.publish("q", b"x", raw, exchange=EXCHANGE)
    d.advance(1.5)
    message = d.get("q")
    assert message is not None
    assert message.headers == {"x-delay": -1500, "app": "kept"}
    assert (message.expiration, message.message_id, message.codec) == ("60000", "m-1", JSON_CODEC)
    assert (message.exchange, message.routing_key, message.persistent) == (EXCHANGE, "q", True)


@pytest.mark.parametrize("header", [None, 0, -5, 2**32, 1.5, True, "soon", "12x"])
def test_no_positive_integer_delay_routes_at_once_untouched(d: CoreHarness, header: Any) -> None:
    assert publish(d, b"now", header) == ROUTED
    message = d.get("q")
    assert message is not None and message.body == b"now"
    assert message.header("x-delay") == header


def test_delay_as_a_string_of_digits_is_honoured(d: CoreHarness) -> None:
    assert publish(d, b"s", "1500") == UNROUTED
    d.advance(1.4)
    assert d.drain("q") == []
    d.advance(0.1)
    assert d.drain("q") == [b"s"]


def test_delay_of_matches_the_plugin_rules() -> None:
    assert delay_of({"x-delay": 1}) == 1
    assert delay_of({"x-delay": 2**32 - 1}) == 2**32 - 1
    assert delay_of({"x-delay": b"+20"}) == 20
    for value in (None, 0, -1, 2**32, 2.0, False, "", "1e3", " 5"):
        assert delay_of({"x-delay": value}) is None, value
    assert delay_of({}) is None


@pytest.mark.parametrize("routing_type, binding, routing_key, headers", [
    ("topic", "orders.*", "orders.created", {}),
    ("fanout", "ignored", "anything", {}),
    ("headers", "", "", {"kind": "invoice"}),
])
def test_every_routing_type_routes_when_due(routing_type: str, binding: str, routing_key: str,
                                            headers: dict[str, Any]) -> None:
    d = CoreHarness()
    declare_delayed(d, routing_type=routing_type)
    arguments = {"x-match": "all", "kind": "invoice"} if routing_type == "headers" else {}
    bound_queue(d, "hit", binding, arguments)
    bound_queue(d, "miss", "other.*" if routing_type == "topic" else "", {"x-match": "all", "kind": "x"}
            if routing_type == "headers" else {})
    publish(d, b"m", 200, routing_key=routing_key, **headers)
    assert d.drain("hit") == []
    d.advance(0.2)
    assert d.drain("hit") == [b"m"]
    assert d.drain("miss") == ([b"m"] if routing_type == "fanout" else [])


def test_headers_routing_type_validates_x_match_on_bind() -> None:
    d = CoreHarness()
    declare_delayed(d, routing_type="headers")
    with pytest.raises(PreconditionFailed, match="Invalid x-match field value"):
        bound_queue(d, "q", "", {"x-match": "some"})


def test_deleting_the_exchange_drops_its_scheduled_messages(d: CoreHarness) -> None:
    publish(d, b"gone", 1000)
    publish(d, b"gone too", 5000, persistent=False)
    d.vhost.delete_exchange(EXCHANGE, if_unused=False)
    d.broker.flush()
    assert d.log.read(delay_key("/", EXCHANGE), 0, 10) == []
    declare_delayed(d)  # a new exchange of the same name starts empty
    bound_queue(d, "q")
    d.advance(10)
    assert d.drain("q") == []
    assert delayed.messages(d.vhost).count == 0


def test_declaration_errors_are_the_plugin_s() -> None:
    d = CoreHarness()
    with pytest.raises(PreconditionFailed) as missing:
        declare_delayed(d, "x1", {"other": "argument"})
    assert missing.value.text == "Invalid argument, 'x-delayed-type' must be an existing exchange type"
    with pytest.raises(PreconditionFailed, match="'x-delayed-type' must be an existing exchange type"):
        declare_delayed(d, "x2", {"x-delayed-type": 5})
    with pytest.raises(PreconditionFailed) as recursive:
        declare_delayed(d, "x3", {"x-delayed-type": "x-delayed-message"})
    assert recursive.value.text == "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'"
    with pytest.raises(CommandInvalid) as unknown:
        declare_delayed(d, "x4", {"x-delayed-type": "nonsense"})
    assert unknown.value.text == "unknown exchange type 'nonsense'"
    assert isinstance(unknown.value, BrokerError) and unknown.value.scope == "connection"  # 503 closes it
    assert not {"x1", "x2", "x3", "x4"} & set(d.vhost.exchanges)


def test_restart_rebuilds_the_schedule_and_drops_transient_ones(d: CoreHarness) -> None:
    publish(d, b"kept-late", 5000)
    publish(d, b"kept-soon", 2000)
    publish(d, b"transient", 1000, persistent=False)
    d.clock.advance(1)
    d.restart()  # same stores (the memory store keeps what was committed), new broker: recovery
    assert delayed.messages(d.vhost).count == 2
    d.advance(0.5)
    assert d.drain("q") == []  # transient one is gone; the others are not due yet
    d.advance(0.5)
    assert d.drain("q") == [b"kept-soon"]
    publish(d, b"new", 100)  # seqs continue after the recovered ones
    d.advance(3)
    assert d.drain("q") == [b"new", b"kept-late"]


def test_release_and_row_removal_commit_in_one_batch(d: CoreHarness) -> None:
    publish(d, b"once", 100)
    d.clock.advance(0.1)
    d.broker.tick()
    # Staged, not committed: the delay row is still in the log and the queue has nothing stored yet.
    assert [m.body for m in d.log.read(delay_key("/", EXCHANGE), 0, 10)] == [b"once"]
    assert d.log.read(d.vhost.queues["q"].key, 0, 10) == []
    d.broker.flush()  # one commit: the queue's row appears as the delay row goes
    assert d.log.read(delay_key("/", EXCHANGE), 0, 10) == []
    assert [m.body for m in d.log.read(d.vhost.queues["q"].key, 0, 10)] == [b"once"]


def test_a_backlog_is_released_a_bounded_number_per_tick(d: CoreHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delayed, "RELEASE_PER_TICK", 10)
    for i in range(25):
        d.publish("q", b"%d" % i, properties(100 + i), exchange=EXCHANGE)
    d.broker.flush()
    d.broker.tickers.clear()  # re-create the ticker so it reads the patched budget
    d.broker.tickers.append(delayed.release_ticker(d.broker.vhosts.values()))
    d.advance(10)
    assert len(d.drain("q")) == 10
    d.advance(0.1)
    d.advance(0.1)
    assert d.drain("q") == [b"%d" % i for i in range(10, 25)]


def test_bodies_are_read_back_from_the_log_beyond_the_hot_window(d: CoreHarness) -> None:
    # Long delays are not kept in memory: the release reads them back (in publish-order ranges).
    for i in range(300):
        d.publish("q", b"%d" % i, properties(60_000 - (i % 3) * 10_000), exchange=EXCHANGE)
    d.broker.flush()
    schedule = d.vhost.exchanges[EXCHANGE].schedule
    assert schedule._hot == {}  # noqa: SLF001 -- the memory claim is the point of this test
    d.advance(60)
    expected = [b"%d" % i for k in (2, 1, 0) for i in range(300) if i % 3 == k]
    assert d.drain("q") == expected


def test_one_timer_however_many_messages_and_little_memory_per_message(tmp_path: Any) -> None:
    from mailslot.storage.segments import open_segment_store

    d = CoreHarness(lambda: open_segment_store(tmp_path))
    timers = len(d.broker.tickers)
    declare_delayed(d)
    bound_queue(d, "q")
    body = b"x" * 1024
    count = 20_000
    raw = properties(30_000)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        d.publish("q", body, raw, exchange=EXCHANGE)
        if i % 1000 == 999:
            d.broker.flush()
    d.broker.flush()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(d.broker.tickers) == timers  # no timer per message (nor per exchange)
    assert delayed.messages(d.vhost).count == count
    per_message = grown / count
    assert per_message < 150, f"{per_message:.0f} bytes held per scheduled 1 KB message"
    d.advance(30)
    d.advance(0.1)  # RELEASE_PER_TICK (10,000) a tick
    assert len(d.drain("q")) == count
    d.broker.close()


@pytest.mark.parametrize("delay_ms", [500, 60_000])  # kept in memory / read back from the log
def test_per_message_ttl_applies_from_the_release_on(d: CoreHarness, delay_ms: int) -> None:
    for body, expiration in ((b"expires", "1000"), (b"stays", None)):
        raw = JSON_CODEC.block(headers={"x-delay": delay_ms}, expiration=expiration)
        d.publish("q", body, raw, exchange=EXCHANGE, ttl=None if expiration is None else int(expiration))
    d.broker.flush()
    d.advance(delay_ms / 1000)  # released now; the TTL counts from here, not from the publish
    assert d.vhost.queues["q"].message_count == 2
    d.advance(1.1)
    assert d.drain("q") == [b"stays"]


class _RefusingOwner:
    """A queue's remote owner (mailslot.cluster) that refuses every message: no live owner is known."""

    def __init__(self) -> None:
        self.refused = 0

    def enqueue(self, queue: Any, message: Any) -> bool:
        self.refused += 1
        return False


def test_a_due_message_that_only_other_nodes_queues_refused_stays_scheduled(d: CoreHarness) -> None:
    # In a cluster, a queue another node owns refuses while its owner changes: nothing of the message
    # landed anywhere, so it is kept and tried again rather than dropped.
    queue = d.vhost.queues["q"]
    owner = _RefusingOwner()
    queue.remote = owner
    publish(d, b"held", 1000)
    d.advance(1.0)
    assert owner.refused == 1
    assert delayed.messages(d.vhost).count == 1
    queue.remote = None  # the queue is served here again
    d.advance(delayed.REMOTE_RETRY_MS / 1000)
    assert d.drain("q") == [b"held"]
    assert delayed.messages(d.vhost).count == 0
    assert d.log.read(delay_key("/", EXCHANGE), 0, 10) == []


def test_a_schedule_of_another_process_is_adopted_and_released(d: CoreHarness) -> None:
    # A cluster node releases the schedule of a node process it took over: rows under another key.
    from mailslot.storage.api import QueueRecovery, StoredMessage

    other = delay_key("/", EXCHANGE, "n1:7")
    due = int(d.clock() * 1000) + 500
    d.log.stage_append([StoredMessage(other, 1, EXCHANGE, "q", properties(-500), b"adopted", True, deadline=due,
                                      codec=JSON_CODEC.name)])
    d.log.commit()
    assert delayed.messages(d.vhost).adopt(QueueRecovery(other, 1, 1))
    assert delayed.messages(d.vhost).count == 1
    d.advance(0.5)
    assert d.drain("q") == [b"adopted"]
    assert d.log.read(other, 0, 10) == []  # released once: its row went with the release
    delayed.messages(d.vhost).forget(other)
    assert delayed.messages(d.vhost).count == 0


class _ForwardingOwner:
    """A queue's remote owner (mailslot.cluster) that takes every message to forward it at the batch's
    cut, where the store's ``hold_confirms`` (as mailslot.cluster's) holds the batch until the owner
    answers: ``answers`` in turn."""

    def __init__(self, answers: list[bool]) -> None:
        self.taken: list[bytes] = []
        self.answers = answers
        self._pending = False

    def enqueue(self, queue: Any, message: Any) -> bool:
        self.taken.append(message.body)
        self._pending = True
        return True

    def hold_confirms(self) -> Any:
        if not self._pending:
            return None
        self._pending = False
        answer = self.answers.pop(0)
        return lambda release: release(answer)


def test_a_message_released_to_another_node_keeps_its_row_until_the_forward_is_answered(d: CoreHarness) -> None:
    # The release commits here while the copy is forwarded: if the owner does not answer it, the row
    # must still be there to release it again (at-least-once), not removed with the release.
    d.broker.tickers.append(delayed.release_ticker(d.broker.vhosts.values(),
                                                   lambda fn: d.broker.after_commit(OnCommit(fn))))
    owner = _ForwardingOwner([False, True])  # the first forward fails (a link broke), the second lands
    d.vhost.queues["q"].remote = owner
    d.log.hold_confirms = owner.hold_confirms  # type: ignore[attr-defined]
    publish(d, b"far", 1000)
    d.advance(1.0)
    assert owner.taken == [b"far"]
    assert [row.body for row in d.log.read(delay_key("/", EXCHANGE), 0, 10)] == [b"far"]
    d.advance(delayed.REMOTE_RETRY_MS / 1000)
    d.advance(0.1)
    assert owner.taken == [b"far", b"far"]
    assert d.log.read(delay_key("/", EXCHANGE), 0, 10) == []
    assert delayed.messages(d.vhost).count == 0
