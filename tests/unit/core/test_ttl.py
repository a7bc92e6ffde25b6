"""Message TTL, TTL 0 and x-expires in the core, on a FakeClock (no sleeping)."""

from __future__ import annotations

from typing import Any

import pytest
from pamqp import commands

from mailslot.core.arguments import validate_queue_arguments, validate_queue_properties
from mailslot.core.errors import PreconditionFailed
from mailslot.core.ttl import parse_expiration
from mailslot.frontends.amqp091 import AMQPPropertiesCodec
from mailslot.testing import CoreHarness


def properties(expiration: str | None = None) -> bytes:
    return bytes(commands.Basic.Properties(expiration=expiration, delivery_mode=2).marshal())


def publish(world: CoreHarness, queue: str, body: bytes, ttl: int | None = None) -> None:
    """A persistent message, with ``expiration`` set to ``ttl`` ms when given (as a front end reads it)."""
    world.publish(queue, body, properties(None if ttl is None else str(ttl)), ttl=ttl)


def dead_letter_queue(world: CoreHarness, source: str, arguments: dict[str, Any] | None = None) -> str:
    """``source`` dead-letters through the default exchange into a queue ``source + '.dead'``."""
    dead = world.declare(source + ".dead")
    world.declare(source, {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead, **(arguments or {})})
    return dead


@pytest.fixture
def world() -> CoreHarness:
    return CoreHarness()


def test_queue_ttl_expires_without_consumers(world: CoreHarness) -> None:
    q = world.declare("q", {"x-message-ttl": 1000})
    publish(world, q, b"a")
    world.advance(0.5)
    publish(world, q, b"b")
    world.broker.flush()
    world.advance(0.6)  # a is 1.1 s old, b 0.6 s
    assert world.count(q) == 1
    world.advance(0.5)
    assert world.count(q) == 0


def test_get_never_returns_an_expired_message_even_before_the_timer(world: CoreHarness) -> None:
    q = world.declare("q", {"x-message-ttl": 100})
    publish(world, q, b"old")
    world.broker.flush()
    world.clock.advance(0.2)  # no tick: the pop itself must skip it
    publish(world, q, b"new")
    assert world.drain(q) == [b"new"]


def test_expired_messages_are_dead_lettered_with_x_death(world: CoreHarness) -> None:
    dead = dead_letter_queue(world, "src", {"x-message-ttl": 300})
    publish(world, "src", b"per-message", ttl=100)
    publish(world, "src", b"queue-ttl")
    world.broker.flush()
    world.advance(0.2)
    world.advance(0.2)
    got = []
    while (item := world.session.get(dead, no_ack=True)) is not None:
        got.append(item[1].message)
    assert [m.body for m in got] == [b"per-message", b"queue-ttl"]
    first, second = (AMQPPropertiesCodec.headers(m.properties) or {} for m in got)
    death = first["x-death"][0]
    assert (death["reason"], death["queue"], death["count"], death["exchange"], death["routing-keys"]) == (
        "expired", "src", 1, "", ["src"])
    assert death["original-expiration"] == "100"
    assert first["x-first-death-reason"] == "expired"
    assert "original-expiration" not in second["x-death"][0]  # expired by the queue's TTL
    assert AMQPPropertiesCodec.expiration(got[0].properties) is None  # the copy does not expire again


def test_lower_of_queue_and_message_ttl_applies(world: CoreHarness) -> None:
    q = world.declare("q", {"x-message-ttl": 500})
    publish(world, q, b"long", ttl=5000)
    world.broker.flush()
    world.advance(0.6)
    assert world.count(q) == 0
    publish(world, q, b"short", ttl=100)
    world.broker.flush()
    world.advance(0.2)
    assert world.count(q) == 0


def test_per_message_ttl_expires_only_at_the_head(world: CoreHarness) -> None:
    dead = dead_letter_queue(world, "q")
    publish(world, "q", b"long", ttl=10_000)
    publish(world, "q", b"short", ttl=100)
    world.broker.flush()
    world.advance(0.2)
    assert world.count("q") == 2  # "short" has expired but is not at the head yet (as RabbitMQ)
    assert world.drain("q") == [b"long"]  # and it is never handed out
    assert world.drain(dead) == [b"short"]


def test_ttl_zero_is_delivered_to_a_consumer_that_can_take_it(world: CoreHarness) -> None:
    q = world.declare("q", {"x-message-ttl": 0})
    world.session.consume(q, "c", no_ack=False, exclusive=False, arguments={})
    publish(world, q, b"now")
    world.clock.advance(0.05)  # the flush comes a little later: still deliverable
    world.broker.flush()
    assert world.sink.bodies() == [b"now"]


def test_ttl_zero_without_a_consumer_is_dead_lettered_at_once(world: CoreHarness) -> None:
    dead = dead_letter_queue(world, "q", {"x-message-ttl": 0})
    publish(world, "q", b"nobody")
    assert world.drain("q") == []  # even in the same batch, before any flush
    publish(world, "q", b"nobody2")
    world.broker.flush()
    assert world.count("q") == 0
    assert world.drain(dead) == [b"nobody", b"nobody2"]


def test_ttl_zero_expires_when_the_consumer_has_no_room(world: CoreHarness) -> None:
    dead = dead_letter_queue(world, "q")
    world.session.qos(0, 1, False)
    world.session.consume("q", "c", no_ack=False, exclusive=False, arguments={})
    publish(world, "q", b"taken", ttl=0)
    publish(world, "q", b"no-room", ttl=0)
    world.broker.flush()
    assert world.sink.bodies() == [b"taken"]
    assert world.count("q") == 0
    assert world.drain(dead) == [b"no-room"]


def test_requeued_message_keeps_its_original_expiry(world: CoreHarness) -> None:
    q = world.declare("q", {"x-message-ttl": 1000})
    publish(world, q, b"m")
    world.broker.flush()
    tag, _entry, _left = world.session.get(q, no_ack=False) or (0, None, 0)
    world.clock.advance(1.5)
    world.session.nack(tag, False, requeue=True)
    world.advance(0.1)
    assert world.count(q) == 0


def test_queue_without_ttl_stays_off_the_expiry_path(world: CoreHarness) -> None:
    q = world.declare("plain")
    for i in range(3):
        publish(world, q, b"%d" % i)
    world.broker.flush()
    assert not world.vhost.queues[q].expiring
    publish(world, q, b"x", ttl=100)
    assert world.vhost.queues[q].expiring


def test_x_expires_deletes_an_unused_queue(world: CoreHarness) -> None:
    q = world.declare("q", {"x-expires": 1000})
    publish(world, q, b"lost with the queue")
    world.advance(0.6)
    world.session.get(q, no_ack=True)  # basic.get renews the lease
    world.advance(0.6)
    world.declare(q, {"x-expires": 1000})  # so does a redeclaration
    world.advance(0.9)
    assert q in world.vhost.queues
    world.advance(0.2)
    assert q not in world.vhost.queues


def test_x_expires_waits_for_consumers_to_leave(world: CoreHarness) -> None:
    q = world.declare("q", {"x-expires": 200})
    world.session.consume(q, "c", no_ack=True, exclusive=False, arguments={})
    for _ in range(10):
        world.advance(0.1)
    assert q in world.vhost.queues
    world.clock.advance(0.09)
    world.session.cancel("c")  # unused from here on
    world.advance(0.01)
    world.advance(0.15)
    assert q in world.vhost.queues  # unused for 0.16 s only: never early, though the last tick saw a consumer
    world.advance(0.1)
    assert q not in world.vhost.queues


def test_deadlines_survive_a_restart(world: CoreHarness) -> None:
    dead = dead_letter_queue(world, "q")
    publish(world, "q", b"soon", ttl=1000)
    publish(world, "q", b"later", ttl=5000)
    world.broker.flush()
    world.restart(downtime=2)
    world.advance(0.1)  # the timer finds the recovered head's deadline
    assert world.count("q") == 1
    assert world.drain(dead) == [b"soon"]
    world.clock.advance(3)
    assert world.drain("q") == []


@pytest.mark.parametrize(
    ("raw", "value_or_text"),
    [
        ("0", 0),
        ("+5", 5),
        ("315360000000", 315_360_000_000),
        ("abc", "invalid expiration 'abc': no_integer"),
        ("", "invalid expiration '': no_integer"),
        (" 10", "invalid expiration ' 10': no_integer"),
        ("１２", "invalid expiration '１２': no_integer"),
        ("1.5", "invalid expiration '1.5': {leftover_string,\".5\"}"),
        ("-1", "invalid expiration '-1': {value_negative,-1}"),
        ("315360000001", "invalid expiration '315360000001': {value_too_large,315360000001}"),
        ("9999999999999999999",
         "invalid expiration '9999999999999999999': {value_too_large,\n" + " " * 43 + "9999999999999999999}"),
    ],
)
def test_parse_expiration_as_rabbitmq(raw: str, value_or_text: int | str) -> None:
    if isinstance(value_or_text, int):
        assert parse_expiration(raw) == value_or_text
    else:
        with pytest.raises(PreconditionFailed) as info:
            parse_expiration(raw)
        assert info.value.text == value_or_text


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"x-message-ttl": -1}, "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}"),
        ({"x-message-ttl": "10"}, "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': "
                                  '"expected integer, got longstr"'),
        ({"x-message-ttl": 10**12}, "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': "
                                    "{value_too_large,1000000000000}"),
        ({"x-expires": 0}, "invalid arg 'x-expires' for queue 'q' in vhost '/': {value_zero,0}"),
        ({"x-expires": True}, "invalid arg 'x-expires' for queue 'q' in vhost '/': \"expected integer, got bool\""),
        ({"x-queue-mode": "eager"}, "invalid arg 'x-queue-mode' for queue 'q' in vhost '/': "
                                    "\"unsupported queue mode 'eager'\""),
        ({"x-queue-type": "stream"}, "invalid arg 'x-queue-type' for queue 'q' in vhost '/': "
                                     "\"unsupported queue type 'stream'\""),
        ({"x-queue-type": 1}, "invalid arg 'x-queue-type' for queue 'q' in vhost '/': {unacceptable_type,signedint}"),
        ({"x-queue-version": 3}, "invalid arg 'x-queue-version' for queue 'q' in vhost '/': "
                                 "\"unsupported queue version '3'\""),
        ({"x-queue-leader-locator": "x"}, "invalid arg 'x-queue-leader-locator' for queue 'q' in vhost '/': "
                                          "invalid_queue_locator_arg"),
        ({"x-dead-letter-strategy": "x"}, "invalid arg 'x-dead-letter-strategy' for queue 'q' in vhost '/': "
                                          "invalid_dlx_strategy"),
    ],
)
def test_invalid_arguments(arguments: dict[str, Any], problem: str) -> None:
    with pytest.raises(PreconditionFailed) as info:
        validate_queue_arguments("q", "/", arguments)
    assert info.value.text == problem


def test_no_op_arguments_are_accepted() -> None:
    validate_queue_arguments("q", "/", {
        "x-queue-mode": "lazy", "x-queue-type": "quorum", "x-queue-version": 2, "x-max-in-memory-length": 5,
        "x-max-in-memory-bytes": 0, "x-queue-master-locator": "min-masters", "x-queue-leader-locator": "balanced",
        "x-quorum-initial-group-size": 3, "x-dead-letter-strategy": "at-least-once", "x-ha-policy": "all",
    })


def test_quorum_queues_must_be_durable_and_shared() -> None:
    quorum = {"x-queue-type": "quorum"}
    validate_queue_properties("q", "/", quorum, durable=True, exclusive=False, auto_delete=False)
    validate_queue_properties("q", "/", {}, durable=False, exclusive=True, auto_delete=True)  # classic: anything
    for flags, prop in (
        ({"durable": False, "exclusive": False, "auto_delete": True}, "auto-delete"),
        ({"durable": True, "exclusive": True, "auto_delete": False}, "exclusive-owner"),
        ({"durable": False, "exclusive": False, "auto_delete": False}, "non-durable"),
    ):
        with pytest.raises(PreconditionFailed) as info:
            validate_queue_properties("q", "/", quorum, **flags)
        assert info.value.text == f"invalid property '{prop}' for queue 'q' in vhost '/'"


def test_a_consumer_batch_skips_expired_entries_behind_a_live_head(world: CoreHarness) -> None:
    """Per-message TTL expires at the head only, so expired entries can sit behind live ones; the batch
    that hands a consumer many entries at once must still drop each of them on the way."""
    q = world.declare("q")
    for i in range(10):
        publish(world, q, f"m{i}".encode(), ttl=100 if i % 2 else None)
    world.advance(0.2)  # odd ones expired, each behind a live even one
    world.session.consume(q, "c", no_ack=True, exclusive=False, arguments={})
    world.broker.flush()
    assert world.sink.bodies() == [b"m0", b"m2", b"m4", b"m6", b"m8"]
    assert world.count(q) == 0
