"""Alternate exchanges and sender-selected routing keys in the core (core/routing.py), on the fake clock:
RabbitMQ's rules (https://www.rabbitmq.com/docs/ae, https://www.rabbitmq.com/docs/sender-selected)."""

from __future__ import annotations

import pytest

from mailslot.core.policies import POLICY, PolicyEngine, use_policies
from mailslot.core.session import ROUTED, UNROUTED
from mailslot.testing import CoreHarness


@pytest.fixture
def world() -> CoreHarness:
    return CoreHarness()


def test_unroutable_message_goes_to_the_alternate_exchange(world: CoreHarness) -> None:
    world.declare_exchange("unrouted", "fanout")
    world.declare_exchange("orders", "direct", {"alternate-exchange": "unrouted"})
    world.declare("eu")
    world.declare("lost")
    world.bind("orders", "eu", "eu")
    world.bind("unrouted", "lost")
    assert world.publish("eu", b"routed", exchange="orders", mandatory=True) == ROUTED
    assert world.publish("us", b"unroutable", exchange="orders", mandatory=True) == ROUTED
    assert world.drain("eu") == [b"routed"]
    assert world.drain("lost") == [b"unroutable"]  # only the message the exchange could not route


def test_alternate_exchange_routes_with_the_original_key(world: CoreHarness) -> None:
    world.declare_exchange("ae", "direct")
    world.declare_exchange("orders", "direct", {"alternate-exchange": "ae"})
    world.declare("by-key")
    world.bind("ae", "by-key", "us")
    world.publish("us", b"a", exchange="orders")
    assert world.publish("fr", b"b", exchange="orders") == UNROUTED  # the AE cannot route it either
    assert world.drain("by-key") == [b"a"]


def test_a_chain_of_alternate_exchanges_is_followed(world: CoreHarness) -> None:
    world.declare_exchange("third", "fanout")
    world.declare_exchange("second", "direct", {"alternate-exchange": "third"})
    world.declare_exchange("first", "direct", {"alternate-exchange": "second"})
    world.declare("end")
    world.bind("third", "end")
    assert world.publish("k", b"m", exchange="first", mandatory=True) == ROUTED
    assert world.drain("end") == [b"m"]


def test_a_cycle_of_alternate_exchanges_is_cut_and_the_publish_is_unroutable(world: CoreHarness) -> None:
    world.declare_exchange("a", "direct", {"alternate-exchange": "b"})
    world.declare_exchange("b", "direct", {"alternate-exchange": "a"})
    world.declare_exchange("self", "direct", {"alternate-exchange": "self"})
    assert world.publish("k", b"m", exchange="a", mandatory=True) == UNROUTED
    assert world.publish("k", b"m", exchange="self", mandatory=True) == UNROUTED
    world.declare("q")
    world.bind("b", "q", "k")
    assert world.publish("k", b"found", exchange="a") == ROUTED
    assert world.drain("q") == [b"found"]


def test_a_missing_alternate_exchange_leaves_the_message_unroutable(world: CoreHarness) -> None:
    world.declare_exchange("orders", "direct", {"alternate-exchange": "nowhere"})
    assert world.publish("k", b"m", exchange="orders", mandatory=True) == UNROUTED


def test_an_exchange_that_routes_only_to_another_exchange_does_not_use_its_alternate(world: CoreHarness) -> None:
    """rabbit_exchange:route1: each exchange's own result decides; the bound exchange's AE is used instead."""
    world.declare_exchange("ae-top", "fanout")
    world.declare_exchange("ae-inner", "fanout")
    world.declare_exchange("inner", "direct", {"alternate-exchange": "ae-inner"})
    world.declare_exchange("top", "fanout", {"alternate-exchange": "ae-top"})
    world.vhost.bind("top", ("exchange", "inner"), "", {}, world.session.owner)
    for name in ("top-lost", "inner-lost"):
        world.declare(name)
    world.bind("ae-top", "top-lost")
    world.bind("ae-inner", "inner-lost")
    world.publish("k", b"m", exchange="top")
    assert world.drain("top-lost") == []
    assert world.drain("inner-lost") == [b"m"]


def test_a_queue_reached_twice_gets_one_copy(world: CoreHarness) -> None:
    world.declare_exchange("ae", "fanout")
    world.declare_exchange("x", "direct", {"alternate-exchange": "ae"})
    world.declare_exchange("y", "fanout")
    world.vhost.bind("x", ("exchange", "y"), "k", {}, world.session.owner)
    world.declare("q")
    world.bind("x", "q", "k")
    world.bind("y", "q")
    world.bind("ae", "q")
    world.publish("k", b"once", exchange="x")
    assert world.drain("q") == [b"once"]


def test_a_delayed_message_is_not_passed_to_the_alternate_exchange_while_it_waits(world: CoreHarness) -> None:
    world.declare_exchange("ae", "fanout")
    world.declare_exchange("later", "x-delayed-message", {"x-delayed-type": "direct", "alternate-exchange": "ae"})
    world.declare("lost")
    world.bind("ae", "lost")
    world.publish("k", b"delayed", world.codec.encode(_headers({"x-delay": 1000}), True), exchange="later")
    world.flush()
    assert world.drain("lost") == []
    world.run(2)
    assert world.drain("lost") == [b"delayed"]  # when due, unroutable: now the alternate exchange takes it


def test_alternate_exchange_set_by_policy_takes_effect_on_a_live_exchange(world: CoreHarness) -> None:
    engine = PolicyEngine(world.meta)
    use_policies(world.broker, engine)
    world.declare_exchange("orders", "direct")
    world.declare_exchange("unrouted", "fanout")
    world.declare("lost")
    world.bind("unrouted", "lost")
    assert world.publish("k", b"before", exchange="orders") == UNROUTED
    engine.set(POLICY, "/", "ae", "^orders$", {"alternate-exchange": "unrouted"}, apply_to="exchanges")
    assert world.publish("k", b"with", exchange="orders") == ROUTED
    engine.delete(POLICY, "/", "ae")
    assert world.publish("k", b"after", exchange="orders") == UNROUTED
    assert world.drain("lost") == [b"with"]


def test_the_argument_wins_over_the_policy(world: CoreHarness) -> None:
    engine = PolicyEngine(world.meta)
    use_policies(world.broker, engine)
    for name in ("own", "policy"):
        world.declare_exchange(name, "fanout")
        world.declare(name + "-q")
        world.bind(name, name + "-q")
    world.declare_exchange("orders", "direct", {"alternate-exchange": "own"})
    engine.set(POLICY, "/", "ae", ".*", {"alternate-exchange": "policy"}, apply_to="exchanges")
    world.publish("k", b"m", exchange="orders")
    assert world.drain("own-q") == [b"m"]
    assert world.drain("policy-q") == []


def test_sender_selected_keys_add_routes_each_queue_once(world: CoreHarness) -> None:
    world.declare_exchange("x", "direct")
    for name in ("a", "b", "c"):
        world.declare(name)
        world.bind("x", name, name)
    message = world.message("a", b"m", exchange="x")
    assert world.session.publish("x", "a", message, False, cc=("b", "a", "nowhere")) == ROUTED
    assert [world.drain(q) for q in ("a", "b", "c")] == [[b"m"], [b"m"], []]


def test_sender_selected_keys_on_the_default_exchange_name_queues(world: CoreHarness) -> None:
    world.declare("a")
    world.declare("b")
    message = world.message("nowhere", b"m")
    assert world.session.publish("", "nowhere", message, True, cc=("a", "b", "a")) == ROUTED
    assert [world.drain(q) for q in ("a", "b")] == [[b"m"], [b"m"]]


def test_sender_selected_keys_reach_the_alternate_exchange_only_when_no_key_routes(world: CoreHarness) -> None:
    world.declare_exchange("ae", "fanout")
    world.declare_exchange("x", "direct", {"alternate-exchange": "ae"})
    world.declare("b")
    world.declare("lost")
    world.bind("x", "b", "b")
    world.bind("ae", "lost")
    world.session.publish("x", "a", world.message("a", b"one", exchange="x"), False, cc=("b",))
    world.session.publish("x", "a", world.message("a", b"two", exchange="x"), False, cc=("c",))
    assert world.drain("b") == [b"one"]
    assert world.drain("lost") == [b"two"]


def test_sender_selected_keys_are_kept_in_a_transaction(world: CoreHarness) -> None:
    world.declare_exchange("x", "direct")
    world.declare("b")
    world.bind("x", "b", "b")
    world.session.tx_select()
    world.session.publish("x", "a", world.message("a", b"m", exchange="x"), True, cc=("b",))
    assert world.drain("b") == []
    assert world.session.tx_commit() == []  # routed by its CC key: nothing to return
    assert world.drain("b") == [b"m"]


def _headers(headers: dict[str, object]):  # type: ignore[no-untyped-def]
    from mailslot.core.message import Properties

    return Properties(headers=dict(headers))


def _dead_letter_world(world: CoreHarness, dlx_arguments: dict[str, object]) -> None:
    world.declare("work", {"x-dead-letter-exchange": "amq.direct", **dlx_arguments})
    for name in ("work", "copy", "hidden", "fixed"):
        if name != "work":
            world.declare(name)
        world.bind("amq.direct", name, name)
    message = world.message("work", b"m", world.codec.encode(_headers({"CC": ["copy"]}), True))
    message.cc = ("copy", "hidden")  # as the front end sets it: CC's keys and BCC's
    world.session.publish("", "work", message, False, cc=message.cc)
    world.flush()
    for name in ("copy", "hidden"):
        assert world.drain(name) == [b"m"]  # the publish itself
    found = world.session.get("work", no_ack=False)
    assert found is not None
    world.session.nack(found[0], False, False)
    world.flush()


def _death(world: CoreHarness, queue: str) -> tuple[list[bytes], list[object], object]:
    got = world.session.get(queue, no_ack=True)
    assert got is not None, queue
    headers = got[1].message.headers
    rest = world.drain(queue)
    return [got[1].message.body, *rest], headers["x-death"][0]["routing-keys"], headers.get("CC")


def test_a_dead_lettered_message_is_routed_again_on_its_cc_and_bcc_keys(world: CoreHarness) -> None:
    """RabbitMQ 3.10, seen differentially: x-death names the key and CC's keys; routing uses BCC's too."""
    _dead_letter_world(world, {})
    for queue in ("work", "copy", "hidden"):
        bodies, keys, cc = _death(world, queue)
        assert (bodies, keys, cc) == ([b"m"], ["work", "copy"], ["copy"]), queue
    assert world.drain("fixed") == []


def test_a_dead_letter_routing_key_replaces_the_keys_and_drops_cc(world: CoreHarness) -> None:
    _dead_letter_world(world, {"x-dead-letter-routing-key": "fixed"})
    bodies, keys, cc = _death(world, "fixed")
    assert (bodies, keys, cc) == ([b"m"], ["work", "copy"], None)
    assert [world.drain(q) for q in ("work", "copy", "hidden")] == [[], [], []]


def test_tracing_records_the_sender_selected_keys(world: CoreHarness) -> None:
    from mailslot.core.tracing import enable

    tracer = enable(world.vhost, "node")
    world.declare("a")
    world.declare("b")
    message = world.message("a", b"m")
    world.session.publish("", "a", message, False, cc=("b",))
    record = tracer.history.record_for(message, create=False)
    assert record is not None
    published = record.events[0].document()
    assert (published["routing_key"], published["cc"], published["queues"]) == ("a", ["b"], ["a", "b"])


def test_a_delayed_message_is_routed_on_its_cc_keys_when_due(world: CoreHarness) -> None:
    world.declare_exchange("later", "x-delayed-message", {"x-delayed-type": "direct"})
    for name in ("main", "copy", "hidden"):
        world.declare(name)
        world.bind("later", name, name)
    properties = world.codec.encode(_headers({"x-delay": 1000, "CC": ["copy"]}), True)
    message = world.message("main", b"m", properties, exchange="later")
    message.cc = ("copy", "hidden")
    world.session.publish("later", "main", message, False, cc=message.cc)
    world.flush()
    assert [world.count(q) for q in ("main", "copy", "hidden")] == [0, 0, 0]  # scheduled once, not routed yet
    world.run(2)
    assert [world.drain(q) for q in ("main", "copy", "hidden")] == [[b"m"], [b"m"], []]  # BCC's key is not kept
