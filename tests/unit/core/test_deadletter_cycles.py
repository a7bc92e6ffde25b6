"""Dead-letter cycles end to end in the core: dropped unless a consumer's rejection is in the loop."""

from __future__ import annotations

from mailslot.testing import CoreHarness

from .test_ttl import publish


def test_expired_message_dead_lettered_back_into_its_own_queue_is_dropped() -> None:
    world = CoreHarness()
    world.declare("loop", {"x-message-ttl": 100, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "loop"})
    publish(world, "loop", b"m")
    world.advance(0.2)  # expires, would be dead-lettered back into "loop" where it died for "expired"
    world.advance(0.2)
    assert world.count("loop") == 0


def test_expired_cycle_through_two_queues_stops_at_the_second_visit() -> None:
    world = CoreHarness()
    world.declare("a", {"x-message-ttl": 100, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "b"})
    world.declare("b", {"x-message-ttl": 100, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "a"})
    publish(world, "a", b"m")
    world.advance(0.15)
    assert (world.count("a"), world.count("b")) == (0, 1)
    world.advance(0.15)
    assert (world.count("a"), world.count("b")) == (0, 0)  # back to "a", where it already expired: dropped


def test_rejection_loop_is_allowed_and_counts_up() -> None:
    world = CoreHarness()
    world.declare("r", {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "r"})
    publish(world, "r", b"m")
    for expected in (1, 2, 3):
        tag, entry, _ = world.session.get("r", no_ack=False)  # type: ignore[misc]
        world.session.nack(tag, multiple=False, requeue=False)
        world.broker.flush()
        got = world.session.get("r", no_ack=False)
        assert got is not None
        headers = world.broker.codec.headers(got[1].message.properties) or {}
        assert headers["x-death"][0]["count"] == expected and headers["x-death"][0]["reason"] == "rejected"
        world.session.nack(got[0], multiple=False, requeue=True)
        world.broker.flush()
