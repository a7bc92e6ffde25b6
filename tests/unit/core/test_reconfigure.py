"""Effective arguments and live reconfiguration (Broker.arguments, Broker.arguments_changed,
Queue.reconfigure), on the fake clock with a tiny ArgumentSource standing in for policies.

Live semantics checked against RabbitMQ 3.10 with ``rabbitmqctl set_policy`` on a live queue: a lowered
max-length drops the excess at once (drop-head), removing a policy lifts its limits. A message-ttl set
by policy does not shorten the life of messages already queued there (3 messages stayed 2.5 s under a
new 1 s message-ttl); mailslot applies it to them, as issue 10 asks (tests/unit/core/test_ttl_live.py).
"""

from __future__ import annotations

import pytest

from mailslot.core.dedup import queue_store_key
from mailslot.core.errors import PreconditionFailed
from mailslot.core.session import REJECTED, ROUTED
from mailslot.testing import ArgumentOverrides, CoreHarness
from mailslot.testing.codec import JSON_CODEC


@pytest.fixture
def source() -> ArgumentOverrides:
    return ArgumentOverrides()


@pytest.fixture
def world(source: ArgumentOverrides) -> CoreHarness:
    harness = CoreHarness()
    harness.broker.arguments = source
    return harness



def fill(world: CoreHarness, queue: str, count: int, prefix: bytes = b"m") -> None:
    for i in range(count):
        world.publish(queue, prefix + str(i).encode())
    world.flush()


def test_new_queue_runs_with_effective_arguments_and_keeps_the_declared_ones(world, source):
    source.queues["q"] = {"x-max-length": 2}
    world.declare("q")
    queue = world.vhost.queue("q")
    assert queue.arguments == {}
    assert queue.effective_arguments == {"x-max-length": 2}
    fill(world, "q", 4)
    assert world.drain("q") == [b"m2", b"m3"]


def test_redeclare_compares_declared_arguments_not_effective_ones(world, source):
    source.queues["q"] = {"x-max-length": 2}
    world.declare("q", {"x-message-ttl": 1000})
    world.declare("q", {"x-message-ttl": 1000})  # equivalent: the policy's max-length is not compared
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-max-length'"):
        world.declare("q", {"x-message-ttl": 1000, "x-max-length": 2})


def test_lowering_max_length_drops_the_excess_head_at_once_and_dead_letters_it(world, source):
    world.declare("dead")
    world.declare("q", {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    fill(world, "q", 5)
    source.set_queue(world, "q", {"x-max-length": 2})
    assert world.count("q") == 2
    assert world.drain("dead") == [b"m0", b"m1", b"m2"]
    assert world.drain("q") == [b"m3", b"m4"]


def test_lowering_max_length_with_reject_publish_keeps_the_excess_and_refuses_new(world, source):
    world.declare("q", {"x-overflow": "reject-publish"})
    fill(world, "q", 4)
    source.set_queue(world, "q", {"x-max-length": 2})
    assert world.count("q") == 4
    assert world.publish("q", b"late", flush=True) == REJECTED
    source.set_queue(world, "q", None)  # the limit lifted
    assert world.publish("q", b"later", flush=True) == ROUTED
    assert world.count("q") == 5


def test_removing_a_limit_lifts_it(world, source):
    source.queues["q"] = {"x-max-length": 1}
    world.declare("q")
    fill(world, "q", 3)
    assert world.count("q") == 1
    source.set_queue(world, "q", None)
    assert world.vhost.queue("q").effective_arguments == {}
    fill(world, "q", 3, b"n")
    assert world.count("q") == 4


def test_new_message_ttl_applies_to_queued_messages_and_those_after_it(world, source):
    world.declare("q")
    world.publish("q", b"before", flush=True)
    source.set_queue(world, "q", {"x-message-ttl": 1000})
    world.advance(0.5)
    world.publish("q", b"after", flush=True)
    world.advance(0.7)  # "before" is 1.2 s past the change, "after" 0.7 s old
    assert world.drain("q") == [b"after"]  # unlike RabbitMQ 3.10 (see the module docstring)


def test_removed_message_ttl_stops_expiring_new_messages(world, source):
    source.queues["q"] = {"x-message-ttl": 1000}
    world.declare("q")
    source.set_queue(world, "q", None)
    world.publish("q", b"kept", flush=True)
    world.advance(5)
    assert world.drain("q") == [b"kept"]


def test_a_new_expires_lease_deletes_an_unused_queue(world, source):
    world.declare("q")
    source.set_queue(world, "q", {"x-expires": 1000})
    world.advance(0.5)
    assert "q" in world.vhost.queues
    world.run(1.0)
    assert "q" not in world.vhost.queues


def test_unchanged_effective_arguments_leave_the_queue_alone(world, source):
    world.declare("q", {"x-max-length": 3})
    queue = world.vhost.queue("q")
    effective = queue.effective_arguments
    world.broker.arguments_changed("/")
    assert queue.effective_arguments is effective
    world.broker.arguments_changed("no-such-vhost")  # nothing to do, no error


def test_deduplication_switched_on_and_off_live(world, source):
    def keyed(key: str) -> bytes:
        return JSON_CODEC.block(headers={"x-deduplication-header": key})

    world.declare("q")
    source.set_queue(world, "q", {"x-message-deduplication": True})
    world.publish("q", b"a", keyed("k"), flush=True)
    world.publish("q", b"dup", keyed("k"), flush=True)
    assert world.count("q") == 1
    assert queue_store_key("/", "q") in world.vhost.owners
    source.set_queue(world, "q", None)
    assert world.vhost.owners == {}
    assert world.log.read(queue_store_key("/", "q"), 0, 10) == []  # the window's rows went with it
    world.publish("q", b"again", keyed("k"), flush=True)
    assert world.drain("q") == [b"a", b"again"]


def test_unchanged_deduplication_keeps_its_window_through_a_reconfigure(world, source):
    keyed = JSON_CODEC.block(headers={"x-deduplication-header": "k"})
    world.declare("q", {"x-message-deduplication": True})
    world.publish("q", b"a", keyed, flush=True)
    source.set_queue(world, "q", {"x-max-length": 10})
    world.publish("q", b"dup", keyed, flush=True)
    assert world.drain("q") == [b"a"]


def test_priority_queue_lanes_follow_a_new_delivery_limit(world, source):
    world.declare("dead")
    world.declare(
        "q", {"x-max-priority": 3, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}
    )
    world.publish("q", b"p", JSON_CODEC.block(priority=2), flush=True)
    source.set_queue(world, "q", {"x-delivery-limit": 0})
    session = world.session
    tag, _entry, _left = session.get("q", no_ack=False)
    session.nack(tag, multiple=False, requeue=True)
    world.flush()
    assert world.drain("dead") == [b"p"]


def test_effective_arguments_survive_a_restart_through_the_source(world, source):
    source.queues["q"] = {"x-max-length": 1}
    world.declare("q")
    fill(world, "q", 2)
    world.restart()
    world.broker.arguments = source  # the host sets the source before recovery in production
    queue = world.vhost.queue("q")
    assert queue.arguments == {}
    world.broker.arguments_changed("/")
    assert queue.effective_arguments == {"x-max-length": 1}
    assert world.drain("q") == [b"m1"]


def test_exchange_effective_arguments_are_resolved_and_updated(world, source):
    world.declare_exchange("x", "direct")
    assert world.vhost.exchange("x").effective_arguments == {}
    source.exchanges["x"] = {"alternate-exchange": "ae"}
    world.broker.arguments_changed("/")
    assert world.vhost.exchange("x").effective_arguments == {"alternate-exchange": "ae"}
    assert world.vhost.exchange("x").arguments == {}
