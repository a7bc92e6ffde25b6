"""The queue-feature protocol (core/features.py) and its composition (core/featureset.py), on the fake
clock: which hooks a queue runs, in what order a message meets them, how a feature is kept, rebuilt or
closed when effective arguments change on a live queue, and features over a priority store."""

from __future__ import annotations

from typing import Any

import pytest

from mailslot.core import featureset
from mailslot.core.dedup import queue_store_key
from mailslot.core.features import Hooks, QueueFeature
from mailslot.core.message import Entry, Message
from mailslot.core.queue import ACCEPTED, DUPLICATE, REJECTED, Queue
from mailslot.core.session import ROUTED
from mailslot.testing import ArgumentOverrides, CoreHarness
from mailslot.testing.codec import JSON_CODEC

BLOCKED = JSON_CODEC.block(headers={"x-block": True})


class Tally(QueueFeature):
    """Records every hook it sees; refuses messages with an ``x-block`` header (as a duplicate)."""

    name = "tally"

    def __init__(self, setting: Any) -> None:
        self.setting = setting
        self.events: list[tuple[str, Any]] = []
        self.closed = False

    def same_as(self, arguments: dict[str, Any]) -> bool:
        return arguments.get("x-tally") == self.setting

    def admit(self, queue: Queue, message: Message) -> int:
        self.events.append(("admit", message.body))
        return DUPLICATE if message.header("x-block") else 0

    def enqueued(self, queue: Queue, message: Message, outcome: int) -> None:
        self.events.append(("enqueued", (message.body, outcome)))

    def settle(self, queue: Queue, entries: list[Entry]) -> None:
        self.events.append(("settle", [entry.message.body for entry in entries]))

    def purge(self, queue: Queue) -> None:
        self.events.append(("purge", queue.name))

    def close(self, queue: Queue) -> None:
        self.closed = True


class OnlySettles(QueueFeature):
    name = "only-settles"

    def settle(self, queue: Queue, entries: list[Entry]) -> None:
        pass


def _tally(vhost: Any, queue: Queue, arguments: dict[str, Any]) -> QueueFeature | None:
    return Tally(arguments["x-tally"]) if "x-tally" in arguments else None


@pytest.fixture
def source() -> ArgumentOverrides:
    return ArgumentOverrides()


@pytest.fixture
def world(source: ArgumentOverrides, monkeypatch: pytest.MonkeyPatch) -> CoreHarness:
    monkeypatch.setattr(featureset, "QUEUE_FEATURES", (*featureset.QUEUE_FEATURES, ("tally", _tally)))
    harness = CoreHarness()
    harness.broker.arguments = source
    return harness



def tally(world: CoreHarness, name: str = "q") -> Tally:
    feature = world.vhost.queue(name).feature("tally")
    assert isinstance(feature, Tally)
    return feature


# ---- composition ------------------------------------------------------------------------------------


@pytest.mark.parametrize("arguments", [{}, {"x-max-priority": 3}, {"x-message-ttl": 1000, "x-max-length": 5}])
def test_a_queue_whose_arguments_ask_for_no_feature_runs_no_hook(world, arguments):
    world.declare("q", arguments)
    hooks = world.vhost.queue("q").hooks
    assert (
        hooks.all == ()
        and hooks.admit == ()
        and hooks.enqueued == ()
        and hooks.settle == ()
        and hooks.purge == ()
    )


def test_hooks_hold_only_the_features_that_override_them():
    quiet, loud = OnlySettles(), Tally(1)
    hooks = Hooks((quiet, loud))
    assert hooks.admit == (loud,) and hooks.enqueued == (loud,) and hooks.purge == (loud,)
    assert hooks.settle == (quiet, loud)
    assert hooks.find("tally") is loud and hooks.find("missing") is None


# ---- a message's way through the hooks ------------------------------------------------------------------


def test_hooks_follow_a_message_from_admission_to_settling(world, source):
    source.queues["q"] = {"x-tally": 1}
    world.declare("q")
    session, sink = world.open()
    session.consume("q", "c", no_ack=False, exclusive=False, arguments={})
    assert world.publish("q", b"m1", flush=True) == ROUTED
    session.ack(sink.last_tag(), multiple=False)
    world.flush()
    assert tally(world).events == [("admit", b"m1"), ("enqueued", (b"m1", ACCEPTED)), ("settle", [b"m1"])]


def test_a_refused_admission_is_confirmed_but_not_enqueued(world, source):
    source.queues["q"] = {"x-tally": 1}
    world.declare("q")
    assert world.publish("q", b"blocked", BLOCKED, flush=True) == ROUTED  # the publisher is confirmed
    assert world.count("q") == 0
    assert tally(world).events == [("admit", b"blocked")]  # no enqueued hook for what never went in


def test_enqueued_sees_a_full_queue_refuse_the_message(world, source):
    source.queues["q"] = {"x-tally": 1}
    world.declare("q", {"x-max-length": 1, "x-overflow": "reject-publish"})
    world.publish("q", b"a")
    world.publish("q", b"b", flush=True)
    assert ("enqueued", (b"b", REJECTED)) in tally(world).events
    assert world.drain("q") == [b"a"]


def test_settle_sees_expired_and_dropped_entries_leave(world, source):
    source.queues["q"] = {"x-tally": 1}
    world.declare("q", {"x-message-ttl": 1000, "x-max-length": 2})
    for body in (b"a", b"b", b"c"):
        world.publish("q", body)
    world.flush()
    assert ("settle", [b"a"]) in tally(world).events  # drop-head made room for c
    world.advance(1.5)
    assert ("settle", [b"b", b"c"]) in tally(world).events  # expired on the timer
    assert world.count("q") == 0


def test_purge_and_delete_reach_the_feature(world, source):
    source.queues["q"] = {"x-tally": 1}
    world.declare("q")
    world.publish("q", b"a", flush=True)
    feature = tally(world)
    world.vhost.queue("q").purge()  # queue.purge, as the front end calls it
    assert feature.events[-1] == ("purge", "q")
    world.vhost.delete_queue("q", if_unused=False, if_empty=False, owner=world.session.owner)
    assert feature.closed


# ---- live reconfiguration ---------------------------------------------------------------------------


def test_a_feature_the_new_arguments_still_ask_for_is_kept_with_its_state(world, source):
    source.set_queue(world, "q", {"x-tally": 1})
    world.declare("q")
    world.publish("q", b"a", flush=True)
    before = tally(world)
    source.set_queue(world, "q", {"x-tally": 1, "x-max-length": 10})
    assert tally(world) is before and not before.closed
    assert before.events[:2] == [("admit", b"a"), ("enqueued", (b"a", ACCEPTED))]


def test_a_changed_feature_is_rebuilt_and_a_dropped_one_closed(world, source):
    source.queues["q"] = {"x-tally": 1}
    world.declare("q")
    first = tally(world)
    source.set_queue(world, "q", {"x-tally": 2})
    second = tally(world)
    assert first.closed and second is not first and second.setting == 2
    source.set_queue(world, "q", None)
    assert second.closed
    queue = world.vhost.queue("q")
    assert queue.feature("tally") is None and queue.hooks.all == ()
    assert world.publish("q", b"blocked", BLOCKED, flush=True) == ROUTED
    assert world.drain("q") == [b"blocked"]  # nothing refuses it any more


def test_a_live_queue_gains_a_feature(world, source):
    world.declare("q")
    world.publish("q", b"before", BLOCKED, flush=True)
    source.set_queue(world, "q", {"x-tally": 1})
    world.publish("q", b"after", BLOCKED, flush=True)
    assert world.drain("q") == [b"before"]


# ---- features over a priority store --------------------------------------------------------------------


def test_features_compose_over_a_priority_store(world, source):
    source.queues["q"] = {"x-tally": 1}
    world.declare("q", {"x-max-priority": 5})
    for body, priority in ((b"low", 1), (b"high", 5)):
        world.publish("q", body, JSON_CODEC.block(priority=priority))
    world.publish("q", b"blocked", JSON_CODEC.block(priority=5, headers={"x-block": True}))
    world.flush()
    session, sink = world.open()
    session.consume("q", "c", no_ack=False, exclusive=False, arguments={})
    world.flush()
    assert sink.bodies() == [b"high", b"low"]
    session.ack(sink.last_tag(), multiple=True)
    world.flush()
    assert tally(world).events[-1] == ("settle", [b"high", b"low"])


# ---- deduplication as a feature, set and lifted on a live queue -------------------------------------------


def test_deduplication_set_by_policy_expires_on_the_timer_and_goes_with_the_policy(world, source):
    keyed = JSON_CODEC.block(headers={"x-deduplication-header": "k"})
    world.declare("q")
    source.set_queue(world, "q", {"x-message-deduplication": True, "x-cache-ttl": 1000})
    world.publish("q", b"first", keyed)
    world.publish("q", b"duplicate", keyed, flush=True)
    assert world.count("q") == 1
    window_key = queue_store_key("/", "q")
    assert window_key in world.vhost.owners
    assert len(world.log.read(window_key, 0, 10)) == 1  # the key is durable with its message
    world.run(1.5)  # the feature timer forgets the key after x-cache-ttl
    world.publish("q", b"again", keyed, flush=True)
    assert world.count("q") == 2
    source.set_queue(world, "q", None)
    assert window_key not in world.vhost.owners
    assert world.log.read(window_key, 0, 10) == []  # the window's rows went with it
    world.publish("q", b"free", keyed, flush=True)
    assert world.drain("q") == [b"first", b"again", b"free"]


def test_a_deduplicating_priority_queue_forgets_the_key_of_an_expired_message(world):
    """Expiry on a priority store settles through the queue, so its features see the message leave: the
    key of a message that expired is free again (until-settled mode)."""
    keyed = JSON_CODEC.block(headers={"x-deduplication-header": "k"}, priority=2)
    world.declare("q", {"x-max-priority": 3, "x-message-deduplication": True, "x-message-ttl": 1000})
    world.publish("q", b"first", keyed, flush=True)
    world.publish("q", b"duplicate", keyed, flush=True)
    assert world.count("q") == 1
    world.clock.advance(1.5)  # no timer tick: the get below meets the expired head and expires it
    assert world.get("q") is None
    world.publish("q", b"retry", keyed, flush=True)
    assert world.drain("q") == [b"retry"]
