"""Deduplicated publishing over AMQP with pika (docs/deduplication.md).

mailslot only: the reference RabbitMQ here does not have the message-deduplication plugin, so these
check the plugin's documented behaviour (its README) and mailslot's extensions, not a differential.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from helpers import drain

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def ch(mailslot_url: str) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(mailslot_url))
    channel = connection.channel()
    channel.confirm_delivery()
    yield channel
    if connection.is_open:
        connection.close()


def publish(ch: BlockingChannel, body: bytes, key: Any = None, *, exchange: str = "", routing_key: str = "q",
            message_id: str | None = None, ttl: int | None = None, mandatory: bool = False) -> None:
    """A persistent, confirmed publish; pika raises if it is nacked or (mandatory) returned."""
    headers: dict[str, Any] = {}
    if key is not None:
        headers["x-deduplication-header"] = key
    if ttl is not None:
        headers["x-cache-ttl"] = ttl
    properties = pika.BasicProperties(delivery_mode=2, headers=headers or None, message_id=message_id)
    ch.basic_publish(exchange, routing_key, body, properties, mandatory=mandatory)


def test_queue_duplicate_is_confirmed_and_not_enqueued(ch):
    ch.queue_declare("q", durable=True, arguments={"x-message-deduplication": True})
    publish(ch, b"first", "order-1")
    publish(ch, b"retry", "order-1")  # confirmed: pika would raise NackError otherwise
    publish(ch, b"other", "order-2")
    assert ch.queue_declare("q", passive=True).method.message_count == 2
    assert drain(ch, "q") == [b"first", b"other"]
    publish(ch, b"after-consume", "order-1")  # plugin queue mode: the key left with its message
    assert drain(ch, "q") == [b"after-consume"]


def test_queue_window_by_size_and_ttl(ch):
    ch.queue_declare("q", durable=True, arguments={"x-message-deduplication": True, "x-cache-size": 2})
    for key in ("a", "b"):
        publish(ch, key.encode(), key)
    assert drain(ch, "q") == [b"a", b"b"]
    publish(ch, b"a-retry", "a")  # remembered after it was consumed
    publish(ch, b"c", "c")  # pushes "a" out of the 2-key window
    publish(ch, b"a-again", "a")
    assert drain(ch, "q") == [b"c", b"a-again"]

    ch.queue_declare("t", durable=True, arguments={"x-message-deduplication": True, "x-cache-ttl": 300})
    publish(ch, b"k1", "k", routing_key="t")
    publish(ch, b"k2", "k", routing_key="t")
    assert drain(ch, "t") == [b"k1"]
    assert _retry_until_admitted(ch, "k", routing_key="t") == [b"retry"]  # the 300 ms window passed


def _retry_until_admitted(ch: BlockingChannel, key: str, **kwargs: Any) -> list[bytes]:
    """Publish ``key`` every 50 ms until the queue takes it (its window expired); the queue's bodies."""
    queue = kwargs.pop("queue", kwargs.get("routing_key", "q"))
    deadline = time.monotonic() + 5
    got: list[bytes] = []
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
        publish(ch, b"retry", key, **kwargs)
        got = drain(ch, queue)
    return got


def test_message_id_mode(ch):
    ch.queue_declare("q", durable=True, arguments={"x-message-deduplication": True, "x-deduplication-key": "message_id"})
    publish(ch, b"1", message_id="m-1")
    publish(ch, b"2", message_id="m-1")
    publish(ch, b"3", message_id="m-2")
    assert drain(ch, "q") == [b"1", b"3"]


def test_exchange_type_routes_as_fanout_and_confirms_duplicates_without_returning_them(ch):
    ch.exchange_declare("dedup", "x-message-deduplication", durable=True, arguments={"x-cache-size": 1000})
    for name in ("q1", "q2"):
        ch.queue_declare(name, durable=True)
        ch.queue_bind(name, "dedup", routing_key="bound-key")
    publish(ch, b"one", "k1", exchange="dedup", routing_key="any", mandatory=True)
    publish(ch, b"dup", "k1", exchange="dedup", routing_key="any", mandatory=True)  # no UnroutableError
    publish(ch, b"two", "k2", exchange="dedup", routing_key="", mandatory=True)
    assert drain(ch, "q1") == [b"one", b"two"]
    assert drain(ch, "q2") == [b"one", b"two"]
    publish(ch, b"later", "k1", exchange="dedup")  # the exchange window outlives the messages
    assert drain(ch, "q1") == []


def test_exchange_per_message_ttl_header(ch):
    ch.exchange_declare("dedup", "x-message-deduplication", arguments={"x-cache-size": 10, "x-cache-ttl": 60_000})
    ch.queue_declare("q")
    ch.queue_bind("q", "dedup")
    started = time.monotonic()
    publish(ch, b"short", "k", exchange="dedup", ttl=200)  # this key: 200 ms instead of 60 s
    publish(ch, b"dup", "k", exchange="dedup")
    assert drain(ch, "q") == [b"short"]
    assert _retry_until_admitted(ch, "k", exchange="dedup", queue="q") == [b"retry"]
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        ({}, "'x-cache-size' must be an integer greater than 0"),
        ({"x-cache-size": 10, "x-cache-ttl": -1}, "'x-cache-ttl' must be an integer greater than 0"),
        ({"x-cache-size": 10, "x-cache-persistence": "ssd"}, "'x-cache-persistence' must be either"),
    ],
)
def test_bad_exchange_arguments_close_the_channel_with_406(ch, arguments, text):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
        ch.exchange_declare("dedup", "x-message-deduplication", arguments=arguments)
    assert raised.value.reply_code == 406
    assert text in raised.value.reply_text


def test_bad_queue_argument_closes_the_channel_with_406_naming_it(ch):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
        ch.queue_declare("q", arguments={"x-message-deduplication": True, "x-cache-size": -3})
    assert raised.value.reply_code == 406
    assert raised.value.reply_text.startswith("PRECONDITION_FAILED - invalid arg 'x-cache-size' for queue 'q'")
