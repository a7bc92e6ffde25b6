"""TTL on priority queues: the lanes share the queue's TTL state, and messages expire from the head
(the highest non-empty level), as in RabbitMQ (https://www.rabbitmq.com/docs/priority)."""

from __future__ import annotations

from mailslot.testing import CoreHarness
from mailslot.testing.codec import JSON_CODEC

from .test_ttl import dead_letter_queue


def publish(world: CoreHarness, queue: str, body: bytes, priority: int, ttl: int | None = None) -> None:
    raw = JSON_CODEC.block(priority=priority, expiration=None if ttl is None else str(ttl))
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
        headers = item[1].message.headers
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


def test_ttl_zero_spares_this_turns_arrivals_at_every_level_for_one_dispatch() -> None:
    """x-message-ttl 0: what arrived since the last dispatch gets that dispatch (core/ttl.py), whichever
    lane it sits in (entry seqs carry the level in their low byte; arrival order still holds). What the
    consumer had no room for expires right after it."""
    world = CoreHarness()
    dead = dead_letter_queue(world, "pq", {"x-max-priority": 5, "x-message-ttl": 0})
    session, sink = world.open()
    session.qos(0, 2, False)
    session.consume("pq", "c", no_ack=False, exclusive=False, arguments={})
    for body, priority in ((b"low", 1), (b"high", 5), (b"mid", 3)):
        publish(world, "pq", body, priority)
    world.flush()
    assert sink.bodies() == [b"high", b"mid"]
    assert world.count("pq") == 0
    assert world.drain(dead) == [b"low"]


def test_ttl_zero_spares_only_this_turns_arrivals_not_older_expired_ones() -> None:
    """The spared range starts at this turn's first arrival, in entry-seq terms across lanes: an older
    entry that expired meanwhile is expired, not delivered alongside."""
    world = CoreHarness()
    dead = dead_letter_queue(world, "pq", {"x-max-priority": 5, "x-message-ttl": 1000})
    publish(world, "pq", b"old", 1)
    world.flush()
    world.clock.advance(1.5)  # past its TTL, before any timer tick
    publish(world, "pq", b"now-or-never", 1, ttl=0)
    session, sink = world.open()
    session.consume("pq", "c", no_ack=True, exclusive=False, arguments={})
    world.flush()
    assert sink.bodies() == [b"now-or-never"]
    assert world.drain(dead) == [b"old"]
