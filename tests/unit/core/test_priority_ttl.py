"""TTL on priority queues: the lanes share the queue's TTL state, and messages expire from the head
(the highest non-empty level), as in RabbitMQ (https://www.rabbitmq.com/docs/priority)."""

from __future__ import annotations

from pamqp import commands

from mailslot.frontends.amqp091 import AMQPPropertiesCodec
from mailslot.testing import CoreHarness

from .test_ttl import dead_letter_queue


def publish(world: CoreHarness, queue: str, body: bytes, priority: int, ttl: int | None = None) -> None:
    raw = bytes(
        commands.Basic.Properties(
            priority=priority, delivery_mode=2, expiration=None if ttl is None else str(ttl)
        ).marshal()
    )
    world.publish(queue, body, raw, ttl=ttl)


def test_queue_ttl_expires_every_level_and_dead_letters_under_the_queue_name() -> None:
    world = CoreHarness()
    dead = dead_letter_queue(world, "pq", {"x-max-priority": 5, "x-message-ttl": 1000})
    publish(world, "pq", b"low", 1)
    publish(world, "pq", b"high", 5)
    world.advance(0.5)
    assert world.count("pq") == 2
    world.advance(0.6)
    assert world.count("pq") == 0
    got = []
    while (item := world.session.get(dead, no_ack=True)) is not None:
        headers = AMQPPropertiesCodec().headers(item[1].message.properties) or {}
        got.append((item[1].message.body, headers["x-death"][0]["queue"], headers["x-death"][0]["reason"]))
    assert sorted(got) == [(b"high", "pq", "expired"), (b"low", "pq", "expired")]


def test_per_message_ttl_on_a_lane_is_never_delivered() -> None:
    world = CoreHarness()
    world.declare("pq", {"x-max-priority": 3})
    publish(world, "pq", b"short", 2, ttl=100)
    publish(world, "pq", b"keep", 1)
    world.advance(0.2)
    assert world.drain("pq") == [b"keep"]


def test_expired_low_priority_waits_behind_live_higher_priority_head() -> None:
    """Head-only expiry: the expired level-0 message is not counted out while level 2 holds a live head."""
    world = CoreHarness()
    world.declare("pq", {"x-max-priority": 3})
    publish(world, "pq", b"old-low", 0, ttl=100)
    publish(world, "pq", b"live-high", 2)
    world.advance(0.2)
    assert world.count("pq") == 2  # the expired one is behind the head
    assert world.drain("pq") == [b"live-high"]  # and it is never handed out
    assert world.count("pq") == 0
