"""The policy engine plugged into the core (Broker.arguments) on the fake clock: what a policy change does to
live queues and exchanges, with the precedence and merge rules of core/policies.py."""

from __future__ import annotations

import pytest

from mailslot.core.policies import OPERATOR_POLICY, POLICY, InvalidPolicy, PolicyEngine, use_policies
from mailslot.testing import CoreHarness


@pytest.fixture
def world() -> CoreHarness:
    return CoreHarness()


@pytest.fixture
def engine(world: CoreHarness) -> PolicyEngine:
    engine = PolicyEngine(world.meta)
    use_policies(world.broker, engine)
    return engine


def fill(world: CoreHarness, queue: str, count: int) -> None:
    for i in range(count):
        world.publish(queue, str(i).encode())
    world.flush()


def test_a_policy_reaches_a_live_queue_and_clearing_it_lifts_the_limit(world: CoreHarness, engine: PolicyEngine) -> None:
    world.declare("jobs")
    fill(world, "jobs", 10)
    engine.set(POLICY, "/", "cap", "^jobs$", {"max-length": 3})
    world.flush()
    assert world.count("jobs") == 3
    assert world.vhost.queue("jobs").effective_arguments == {"x-max-length": 3}
    engine.delete(POLICY, "/", "cap")
    world.flush()
    assert world.vhost.queue("jobs").effective_arguments == {}
    fill(world, "jobs", 4)
    assert world.count("jobs") == 7


def test_a_new_queue_starts_with_the_policy(world: CoreHarness, engine: PolicyEngine) -> None:
    engine.set(POLICY, "/", "cap", "^jobs", {"max-length": 2, "overflow": "reject-publish"})
    world.declare("jobs.eu")
    world.declare("other")
    assert world.vhost.queue("jobs.eu").effective_arguments == {"x-max-length": 2, "x-overflow": "reject-publish"}
    assert world.vhost.queue("other").effective_arguments == {}


def test_higher_priority_replaces_and_its_removal_falls_back(world: CoreHarness, engine: PolicyEngine) -> None:
    world.declare("jobs")
    fill(world, "jobs", 10)
    engine.set(POLICY, "/", "loose", ".*", {"max-length": 8}, priority=1)
    engine.set(POLICY, "/", "tight", "^jobs", {"max-length": 4}, priority=2)
    world.flush()
    assert world.count("jobs") == 4
    engine.delete(POLICY, "/", "tight")
    world.flush()
    assert world.vhost.queue("jobs").effective_arguments == {"x-max-length": 8}


def test_operator_policy_caps_argument_and_policy(world: CoreHarness, engine: PolicyEngine) -> None:
    world.declare("jobs", {"x-max-length": 6, "x-overflow": "drop-head"})
    fill(world, "jobs", 6)
    engine.set(POLICY, "/", "p", ".*", {"max-length": 5, "overflow": "reject-publish"})
    engine.set(OPERATOR_POLICY, "/", "op", ".*", {"max-length": 2})
    world.flush()
    assert world.vhost.queue("jobs").effective_arguments == {"x-max-length": 2, "x-overflow": "drop-head"}
    assert world.drain("jobs") == [b"4", b"5"]


def test_quorum_queues_only(world: CoreHarness, engine: PolicyEngine) -> None:
    world.declare("classic")
    world.declare("quorum", {"x-queue-type": "quorum"})
    engine.set(POLICY, "/", "q", ".*", {"delivery-limit": 3}, apply_to="quorum_queues")
    assert world.vhost.queue("quorum").effective_arguments["x-delivery-limit"] == 3
    assert "x-delivery-limit" not in world.vhost.queue("classic").effective_arguments


def test_alternate_exchange_policy_reaches_exchanges(world: CoreHarness, engine: PolicyEngine) -> None:
    world.declare_exchange("orders", "direct")
    world.declare_exchange("mine", "direct", {"alternate-exchange": "own"})
    engine.set(POLICY, "/", "ae", ".*", {"alternate-exchange": "unrouted"}, apply_to="exchanges")
    assert world.vhost.exchanges["orders"].effective_arguments == {"alternate-exchange": "unrouted"}
    assert world.vhost.exchanges["mine"].effective_arguments == {"alternate-exchange": "own"}
    engine.delete(POLICY, "/", "ae")
    assert world.vhost.exchanges["orders"].effective_arguments == {}


def test_a_refused_policy_leaves_live_queues_alone(world: CoreHarness, engine: PolicyEngine) -> None:
    world.declare("jobs")
    fill(world, "jobs", 5)
    engine.set(POLICY, "/", "cap", ".*", {"max-length": 4})
    with pytest.raises(InvalidPolicy):
        engine.set(POLICY, "/", "cap", ".*", {"max-length": 1, "max-priority": 5})
    world.flush()
    assert world.count("jobs") == 4
