"""Message TTL, TTL 0, x-expires and the no-op queue arguments, identical on mailslot and RabbitMQ 3.10.

Each test runs against both brokers (``broker_url``) and asserts what RabbitMQ does. TTLs are a few hundred
ms at most; conditions are polled, never slept on.
"""

from __future__ import annotations

import time
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from conftest import Cleanup
from helpers import drain, message_count, tmp_queue, wait_for

from .test_length_limits import dead_letter_setup, get

pytestmark = pytest.mark.timeout(30)


def expiring(ms: int | str) -> pika.BasicProperties:
    return pika.BasicProperties(expiration=str(ms))


def test_queue_ttl_expires_messages_without_a_consumer(ch: BlockingChannel) -> None:
    q = tmp_queue(ch, message_ttl=200)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    assert message_count(ch, q) == 3
    assert wait_for(lambda: message_count(ch, q) == 0, timeout=5, what="the queue TTL to empty the queue")
    assert drain(ch, q) == []


def test_expired_messages_are_dead_lettered_with_x_death(ch: BlockingChannel, uname, cleanup: Cleanup) -> None:
    _dlx, dlq, q = dead_letter_setup(ch, uname, cleanup, message_ttl=300)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"per-message", pika.BasicProperties(expiration="100", headers={"app": "kept"}))
    ch.basic_publish("", q, b"by-queue-ttl")
    props, body = get(ch, dlq)
    assert body == b"per-message"
    assert props.expiration is None  # the dead-lettered copy does not expire again
    assert props.headers["app"] == "kept"
    death = props.headers["x-death"][0]
    assert (death["reason"], death["queue"], death["count"], death["exchange"], death["routing-keys"]) == (
        "expired", q, 1, "", [q])
    assert death["original-expiration"] == "100"
    assert (props.headers["x-first-death-reason"], props.headers["x-first-death-queue"]) == ("expired", q)
    props, body = get(ch, dlq)
    assert body == b"by-queue-ttl"
    assert "original-expiration" not in props.headers["x-death"][0]
    assert props.headers["x-death"][0]["reason"] == "expired"


def test_lower_of_queue_and_message_ttl_applies(ch: BlockingChannel) -> None:
    q = tmp_queue(ch, message_ttl=150)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"queue-ttl-wins", expiring(60_000))
    assert wait_for(lambda: message_count(ch, q) == 0, timeout=5, what="x-message-ttl 150 to beat expiration 60000")
    long = tmp_queue(ch, message_ttl=60_000)
    ch.basic_publish("", long, b"message-ttl-wins", expiring(150))
    assert wait_for(lambda: message_count(ch, long) == 0, timeout=5, what="expiration 150 to beat x-message-ttl 60000")


def test_per_message_ttl_expires_at_the_head_only(ch: BlockingChannel, uname, cleanup: Cleanup) -> None:
    _dlx, dlq, q = dead_letter_setup(ch, uname, cleanup)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"long", expiring(60_000))
    ch.basic_publish("", q, b"short", expiring(100))
    time.sleep(0.3)  # "short" has expired, but sits behind "long": both brokers keep counting it
    assert message_count(ch, q) == 2
    assert drain(ch, q) == [b"long"]  # and neither hands it out
    _props, body = get(ch, dlq)
    assert body == b"short"


def test_ttl_zero_reaches_a_waiting_consumer(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch, message_ttl=0)
    got: list[bytes] = []
    ch.basic_consume(q, lambda c, m, p, body: got.append(body), auto_ack=True)
    ch.basic_publish("", q, b"now")
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert got == [b"now"]


def test_ttl_zero_without_a_consumer_is_dead_lettered(ch: BlockingChannel, uname, cleanup: Cleanup) -> None:
    _dlx, dlq, q = dead_letter_setup(ch, uname, cleanup)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"nobody-home", expiring(0))
    assert ch.basic_get(q, auto_ack=True)[0] is None
    assert message_count(ch, q) == 0
    props, body = get(ch, dlq)
    assert body == b"nobody-home"
    death = props.headers["x-death"][0]
    assert (death["reason"], death["original-expiration"]) == ("expired", "0")


def test_requeued_message_keeps_its_expiry(ch: BlockingChannel) -> None:
    q = tmp_queue(ch, message_ttl=200)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"m")
    method, _props, _body = ch.basic_get(q)
    time.sleep(0.3)  # unacked messages do not expire; its deadline passes meanwhile
    ch.basic_nack(method.delivery_tag, requeue=True)
    assert wait_for(lambda: message_count(ch, q) == 0, timeout=5, what="the requeued message to expire")


def _routable(ch: BlockingChannel, name: str) -> bool:
    """A mandatory publish comes back once the queue is gone (publishing does not renew an x-expires lease)."""
    try:
        ch.basic_publish("", name, b"probe", mandatory=True)
        return True
    except pika.exceptions.UnroutableError:
        return False


def test_x_expires_deletes_an_unused_queue(ch: BlockingChannel, uname, cleanup: Cleanup) -> None:
    q = cleanup.queue(uname("expires"))
    ch.confirm_delivery()
    started = time.monotonic()
    ch.queue_declare(q, arguments={"x-expires": 300})
    assert _routable(ch, q)
    wait_for(lambda: not _routable(ch, q), timeout=5, interval=0.02, what="the queue to expire")
    assert time.monotonic() - started >= 0.29
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare(q, passive=True)
    assert info.value.reply_code == 404


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"x-message-ttl": -1}, "{value_negative,-1}"),
        ({"x-message-ttl": "10"}, '"expected integer, got longstr"'),
        ({"x-message-ttl": True}, '"expected integer, got bool"'),
        ({"x-message-ttl": 315_360_000_001}, "{value_too_large,315360000001}"),
        ({"x-expires": 0}, "{value_zero,0}"),
        ({"x-expires": -5}, "{value_negative,-5}"),
        ({"x-queue-mode": "eager"}, "\"unsupported queue mode 'eager'\""),
        ({"x-queue-mode": 1}, "{unacceptable_type,signedint}"),
        ({"x-queue-type": "Classic"}, "\"unsupported queue type 'Classic'\""),
        ({"x-queue-version": 3}, "\"unsupported queue version '3'\""),
    ],
)
def test_invalid_queue_arguments_are_406(conn: BlockingConnection, uname, arguments: dict[str, Any], problem: str):
    q = uname("bad")
    arg = next(iter(arguments))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        conn.channel().queue_declare(q, arguments=arguments)
    assert info.value.reply_code == 406
    assert info.value.reply_text == f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in vhost '/': {problem}"


@pytest.mark.parametrize(
    ("expiration", "problem"),
    [
        ("abc", "no_integer"),
        ("-1", "{value_negative,-1}"),
        ("1.5", '{leftover_string,".5"}'),
        ("315360000001", "{value_too_large,315360000001}"),
        ("99999999999999999999", "{value_too_large,\n" + " " * 44 + "99999999999999999999}"),
    ],
)
def test_invalid_expiration_closes_the_channel(conn: BlockingConnection, expiration: str, problem: str) -> None:
    ch = conn.channel()
    q = tmp_queue(ch)
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.basic_publish("", q, b"x", expiring(expiration))
    assert info.value.reply_code == 406
    assert info.value.reply_text == f"PRECONDITION_FAILED - invalid expiration '{expiration}': {problem}"


def test_no_op_arguments_are_accepted(ch: BlockingChannel) -> None:
    q = tmp_queue(ch, queue_mode="lazy", queue_version=2, queue_master_locator="min-masters", ha_policy="all")
    ch.confirm_delivery()
    ch.basic_publish("", q, b"as usual")
    assert drain(ch, q) == [b"as usual"]


def test_quorum_queue_declaration(conn: BlockingConnection, uname, cleanup: Cleanup) -> None:
    ch = conn.channel()
    q = cleanup.queue(uname("quorum"))
    ch.queue_declare(q, durable=True, arguments={
        "x-queue-type": "quorum", "x-quorum-initial-group-size": 3, "x-max-in-memory-length": 10,
        "x-queue-leader-locator": "balanced", "x-dead-letter-strategy": "at-most-once",
    })
    ch.confirm_delivery()
    ch.basic_publish("", q, b"kept", pika.BasicProperties(delivery_mode=2))
    assert drain(ch, q) == [b"kept"]
    bad = uname("quorum-transient")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        conn.channel().queue_declare(bad, durable=False, arguments={"x-queue-type": "quorum"})
    assert (info.value.reply_code, info.value.reply_text) == (
        406, f"PRECONDITION_FAILED - invalid property 'non-durable' for queue '{bad}' in vhost '/'")


def test_passive_declare_renews_the_x_expires_lease(ch: BlockingChannel, uname, cleanup: Cleanup) -> None:
    q = cleanup.queue(uname("renewed"))
    ch.queue_declare(q, arguments={"x-expires": 400})
    for _ in range(8):  # 0.8 s in all, never 0.4 s without a declaration
        time.sleep(0.1)
        ch.queue_declare(q, passive=True)
    ch.confirm_delivery()
    assert _routable(ch, q)


@pytest.mark.parametrize(
    ("first", "second", "problem"),
    [
        ({"x-queue-type": "classic"}, {}, None),
        ({}, {"x-queue-type": "classic"}, None),
        ({"x-queue-type": "quorum"}, {}, "received none but current is the value 'quorum' of type 'longstr'"),
        ({}, {"x-queue-type": "quorum"}, "received the value 'quorum' of type 'longstr' but current is none"),
        ({"x-queue-type": "quorum"}, {"x-queue-type": "classic"}, "received 'classic' but current is 'quorum'"),
        ({"x-queue-mode": "lazy"}, {}, "received none but current is the value 'lazy' of type 'longstr'"),
        ({}, {"x-queue-version": 2}, "received the value '2' of type 'signedint' but current is none"),
    ],
)
def test_redeclaring_with_other_no_op_arguments(conn: BlockingConnection, uname, cleanup: Cleanup, first, second,
                                                problem) -> None:
    q = cleanup.queue(uname("redeclare"))
    conn.channel().queue_declare(q, durable=True, arguments=first)
    if problem is None:
        conn.channel().queue_declare(q, durable=True, arguments=second)
        return
    arg = next(iter(first or second))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        conn.channel().queue_declare(q, durable=True, arguments=second)
    assert (info.value.reply_code, info.value.reply_text) == (
        406, f"PRECONDITION_FAILED - inequivalent arg '{arg}' for queue '{q}' in vhost '/': {problem}")
