"""Consumer priorities (x-priority on basic.consume, core/consumer_priority.py) on the core harness: higher
priorities get messages while they have prefetch room, equal ones share round-robin, a queue without them
dispatches as before."""

from __future__ import annotations

from typing import Any

import pytest

from mailslot.core.errors import PreconditionFailed
from mailslot.core.session import Session
from mailslot.testing import CoreHarness, RecordingSink


@pytest.fixture
def world() -> CoreHarness:
    return CoreHarness()


def consumer(
    world: CoreHarness, tag: str, priority: Any = None, prefetch: int = 0, queue: str = "q"
) -> tuple[Session, RecordingSink]:
    session, sink = world.open()
    if prefetch:
        session.qos(0, prefetch, False)
    arguments = {} if priority is None else {"x-priority": priority}
    session.consume(queue, tag, no_ack=False, exclusive=False, arguments=arguments)
    return session, sink


def publish(world: CoreHarness, count: int, queue: str = "q") -> None:
    for i in range(count):
        world.publish(queue, b"%d" % i)
    world.flush()


def test_the_higher_priority_consumer_gets_messages_while_it_has_room(world: CoreHarness) -> None:
    world.declare("q")
    _, low = consumer(world, "low", 1, prefetch=10)
    high_session, high = consumer(world, "high", 10, prefetch=2)
    publish(world, 6)
    assert high.bodies() == [b"0", b"1"]
    assert low.bodies() == [b"2", b"3", b"4", b"5"]
    high_session.ack(high.last_tag(), True)  # room again: the next messages go to it first
    world.flush()
    publish(world, 3)
    assert high.bodies()[2:] == [b"0", b"1"]
    assert low.bodies()[4:] == [b"2"]


def test_no_x_priority_is_priority_zero_and_negative_priorities_come_last(world: CoreHarness) -> None:
    world.declare("q")
    _, negative = consumer(world, "negative", -5, prefetch=10)
    _, plain = consumer(world, "plain", prefetch=1)
    publish(world, 3)
    assert plain.bodies() == [b"0"]
    assert negative.bodies() == [b"1", b"2"]


def test_equal_priorities_share_round_robin(world: CoreHarness) -> None:
    world.declare("q")
    _, first = consumer(world, "first", 5, prefetch=10)
    _, second = consumer(world, "second", 5, prefetch=10)
    _, low = consumer(world, "low", 0, prefetch=10)
    publish(world, 4)
    assert first.bodies() == [b"0", b"2"]
    assert second.bodies() == [b"1", b"3"]
    assert low.bodies() == []


def test_when_the_high_priority_consumer_leaves_the_others_get_everything(world: CoreHarness) -> None:
    world.declare("q")
    _, low = consumer(world, "low", 0, prefetch=10)
    high_session, high = consumer(world, "high", 3, prefetch=10)
    publish(world, 2)
    assert (high.bodies(), low.bodies()) == ([b"0", b"1"], [])
    high_session.cancel("high")
    high_session.close()  # its two unacked messages go back
    world.flush()
    assert sorted(low.bodies()) == [b"0", b"1"]
    assert world.vhost.queue("q").prioritised is None  # nobody left with a priority: plain dispatch again


def test_a_queue_without_prioritised_consumers_carries_no_priorities(world: CoreHarness) -> None:
    world.declare("q")
    _, first = consumer(world, "first", prefetch=10)
    _, second = consumer(world, "second", 0, prefetch=10)
    assert world.vhost.queue("q").prioritised is None
    publish(world, 4)
    assert (first.bodies(), second.bodies()) == ([b"0", b"2"], [b"1", b"3"])


def test_a_blocked_high_priority_consumer_does_not_hold_messages_back(world: CoreHarness) -> None:
    """Flow off (channel.flow) blocks a consumer like a full prefetch."""
    world.declare("q")
    _, low = consumer(world, "low", 0, prefetch=10)
    high_session, high = consumer(world, "high", 9, prefetch=10)
    high_session.flow(False)
    publish(world, 2)
    assert (high.bodies(), low.bodies()) == ([], [b"0", b"1"])
    high_session.flow(True)
    publish(world, 1)
    assert high.bodies() == [b"0"]


@pytest.mark.parametrize(("value", "kind"), [("high", "longstr"), (True, "bool"), (1.5, "double"), (None, "void")])
def test_a_priority_that_is_no_integer_is_refused_as_rabbitmq_does(world: CoreHarness, value: Any, kind: str) -> None:
    world.declare("q")
    with pytest.raises(PreconditionFailed) as raised:
        world.session.consume("q", "c", no_ack=False, exclusive=False, arguments={"x-priority": value})
    assert str(raised.value) == f"invalid arg 'x-priority' for queue 'q' in vhost '/': \"expected integer, got {kind}\""
    assert world.vhost.queue("q").consumers == []
