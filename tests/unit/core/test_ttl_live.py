"""A message-ttl set or lowered on a live queue applies to the messages already queued (issue 10,
core/ttl_live.py), on the fake clock: in memory, requeued, held for a retry delay, paged out, in a
priority queue, and after a restart. Raising or removing it extends no deadline."""

from __future__ import annotations

from typing import Any

import pytest

from mailslot.core import queue as queue_module
from mailslot.core.ttl_live import RECORD_KIND
from mailslot.testing import ArgumentOverrides, CoreHarness
from mailslot.testing.codec import JSON_CODEC


@pytest.fixture
def policies() -> ArgumentOverrides:
    return ArgumentOverrides()


@pytest.fixture
def world(policies: ArgumentOverrides) -> CoreHarness:
    harness = CoreHarness()
    harness.broker.arguments = policies
    return harness



def fill(world: CoreHarness, queue: str, count: int, prefix: bytes = b"m", **options: Any) -> None:
    for i in range(count):
        world.publish(queue, prefix + str(i).encode(), **options)
    world.flush()


def test_a_policy_ttl_expires_messages_queued_before_it(world, policies):
    world.declare("q")
    fill(world, "q", 3)
    world.advance(10)  # they have waited long before the policy comes
    policies.set_queue(world, "q", {"x-message-ttl": 1000})
    world.advance(0.9)
    assert world.count("q") == 3  # counted from the change: arrival times are not kept
    world.advance(0.2)
    assert world.count("q") == 0  # the timer dropped them, no consumer needed


def test_lowering_the_ttl_applies_to_queued_messages(world, policies):
    world.declare("q", {"x-message-ttl": 60_000})
    fill(world, "q", 2)
    policies.set_queue(world, "q", {"x-message-ttl": 500})  # the lower of argument and policy wins
    world.advance(0.6)
    assert world.count("q") == 0


def test_raising_or_removing_the_ttl_extends_no_deadline(world, policies):
    policies.queues["q"] = {"x-message-ttl": 1000}
    world.declare("q")
    fill(world, "q", 1, b"old")
    policies.set_queue(world, "q", {"x-message-ttl": 60_000})
    fill(world, "q", 1, b"new")
    world.advance(1.1)
    assert world.drain("q") == [b"new0"]  # the old deadline held; the new message has the new TTL

    fill(world, "q", 1, b"kept")
    policies.set_queue(world, "q", {"x-message-ttl": 500})
    policies.set_queue(world, "q", None)  # removed: the 0.5 s given stays
    world.advance(0.6)
    assert world.count("q") == 0


def test_expired_ones_are_dead_lettered_with_reason_expired(world, policies):
    world.declare("dead")
    world.declare("q", {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    fill(world, "q", 2)
    policies.set_queue(world, "q", {"x-message-ttl": 100})
    world.advance(0.2)
    got = []
    while (item := world.session.get("dead", no_ack=True)) is not None:
        got.append(item[1].message)
    assert [m.body for m in got] == [b"m0", b"m1"]
    death = got[0].headers["x-death"][0]
    assert (death["reason"], death["queue"], death["count"]) == ("expired", "q", 1)


def test_requeued_and_unacked_messages_are_capped_too(world, policies):
    world.declare("q")
    fill(world, "q", 3)
    first = world.session.get("q", no_ack=False)
    second = world.session.get("q", no_ack=False)
    assert first is not None and second is not None
    world.session.nack(first[0], False, True)  # back in the requeue heap before the change
    world.flush()
    policies.set_queue(world, "q", {"x-message-ttl": 1000})
    world.session.nack(second[0], False, True)  # delivered before the change, requeued after it
    world.flush()
    world.advance(1.1)
    assert world.count("q") == 0


def test_messages_held_for_a_retry_delay_are_capped(world, policies):
    world.declare("q", {"x-retry-delays": [5000]})
    fill(world, "q", 1)
    found = world.session.get("q", no_ack=False)
    assert found is not None
    world.session.nack(found[0], False, True)
    world.flush()
    assert world.vhost.queue("q").holding
    policies.set_queue(world, "q", {"x-message-ttl": 1000})
    world.run(6.0)  # released after 5 s, long past the cap
    assert world.count("q") == 0


def test_paged_out_messages_expire_without_the_backlog_being_read(world, policies, monkeypatch):
    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 3)
    world.declare("q")
    fill(world, "q", 20)
    queue = world.vhost.queue("q")
    assert queue.paged > 0
    paged_before = queue.paged
    policies.set_queue(world, "q", {"x-message-ttl": 1000})
    assert queue.paged == paged_before  # the change read nothing back from the log
    assert queue.store.caps  # the paged ones are covered by a cap, applied as they are read back
    fill(world, "q", 2, b"new")
    world.advance(0.5)
    fill(world, "q", 1, b"late")
    world.advance(0.6)
    assert world.drain("q") == [b"late0"]


def test_a_priority_queue_is_capped_lane_by_lane(world, policies, monkeypatch):
    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 2)
    world.declare("q", {"x-max-priority": 5})
    for i in range(12):
        world.publish("q", f"p{i % 3}-{i}".encode(), JSON_CODEC.block(priority=i % 3))
    world.flush()
    assert world.count("q") == 12
    policies.set_queue(world, "q", {"x-message-ttl": 1000})
    world.publish("q", b"after", JSON_CODEC.block(priority=0), flush=True)
    world.advance(0.5)
    world.publish("q", b"late", JSON_CODEC.block(priority=0), flush=True)
    world.advance(0.6)
    assert world.drain("q") == [b"late"]


def test_the_cap_survives_a_restart_with_the_policy(world, policies, monkeypatch):
    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 3)
    world.declare("q")
    fill(world, "q", 10)
    policies.set_queue(world, "q", {"x-message-ttl": 2000})
    assert list(world.meta.load_records(RECORD_KIND)) == [world.vhost.queue("q").key]
    world.advance(0.5)
    world.restart(downtime=1.0)
    world.broker.arguments = policies  # the policy is durable and comes back (before recovery, in the broker)
    world.broker.arguments_changed("/")  # here after it: a second cap, later than the first
    queue = world.vhost.queue("q")
    assert world.count("q") == 10
    world.publish("q", b"after", flush=True)  # arrives after the restart, under no cap
    world.advance(0.6)
    assert world.drain("q") == [b"after"]  # 2.1 s past the change: the rows read back were capped
    assert queue.next_seq > 11


def test_the_record_goes_with_the_queue_and_a_queue_that_came_back_empty(world, policies):
    world.declare("q")
    world.declare("gone")
    fill(world, "q", 1)
    fill(world, "gone", 1)
    policies.queues["gone"] = {"x-message-ttl": 1000}
    policies.set_queue(world, "q", {"x-message-ttl": 1000})
    assert len(world.meta.load_records(RECORD_KIND)) == 2
    world.vhost.delete_queue("gone", if_unused=False, if_empty=False, owner=world.session.owner)
    assert list(world.meta.load_records(RECORD_KIND)) == [world.vhost.queue("q").key]
    assert world.drain("q") == [b"m0"]
    world.restart()
    assert world.meta.load_records(RECORD_KIND) == {}


def test_queues_without_a_change_carry_no_caps(world, policies):
    world.declare("q", {"x-message-ttl": 1000})
    fill(world, "q", 3)
    policies.set_queue(world, "q", {"x-max-length": 10})  # a change, but not to the TTL
    queue = world.vhost.queue("q")
    assert queue.ttl_caps == [] and queue.store.caps == []
