"""x-single-active-consumer through pika on mailslot and RabbitMQ 3.10 (same assertions on both), and its
report in the HTTP API and ``mailslot queues`` (mailslot only).

Each consumer has its own connection, so what one gets cannot hide behind another's callbacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import aio_pika
import aiohttp
import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from typer.testing import CliRunner

from conftest import Cleanup
from helpers import wait_for
from mailslot.cli.main import app
from mailslot.testing import running_broker

pytestmark = pytest.mark.timeout(60)

SAC = {"x-single-active-consumer": True}
QUIET = 0.3  # seconds of nothing arriving before "nobody else got anything" is believed


class Consumer:
    def __init__(self, url: str, queue: str, tag: str, prefetch: int) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.basic_qos(prefetch_count=prefetch)
        self.got: list[tuple[str, bool, int]] = []  # (body, redelivered, delivery tag)
        self.tag = tag
        self.channel.basic_consume(queue, self._on_message, consumer_tag=tag)

    def _on_message(self, _ch: Any, method: Any, _props: Any, body: bytes) -> None:
        self.got.append((body.decode(), method.redelivered, method.delivery_tag))

    def pump(self, seconds: float = 0.0) -> None:
        if self.connection.is_open:
            self.connection.process_data_events(seconds)

    def bodies(self) -> list[tuple[str, bool]]:
        return [(body, redelivered) for body, redelivered, _ in self.got]

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


@pytest.fixture
def consumers(broker_url: str) -> Iterator[Callable[[str, str, int], Consumer]]:
    made: list[Consumer] = []

    def make(queue: str, tag: str, prefetch: int) -> Consumer:
        consumer = Consumer(broker_url, queue, tag, prefetch)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close()


def settle(all_consumers: list[Consumer], until: Callable[[], bool]) -> None:
    """Pump every consumer until ``until()``, then a little longer so nothing more is on the way."""
    wait_for(lambda: ([c.pump(0.02) for c in all_consumers], until())[1], what="deliveries")
    for c in all_consumers:
        c.pump(QUIET / len(all_consumers))


def test_one_consumer_at_a_time_and_takeover_in_registration_order(
    ch: BlockingChannel, consumers, uname, cleanup: Cleanup
) -> None:
    q = cleanup.queue(uname("q"))
    ch.queue_declare(q, arguments=SAC)
    a, c, b = consumers(q, "a", 2), consumers(q, "c", 2), consumers(q, "b", 2)  # registered a, c, b
    everyone = [a, b, c]
    ch.confirm_delivery()
    for i in range(6):
        ch.basic_publish("", q, b"m%d" % i)
    settle(everyone, lambda: len(a.got) == 2)
    assert (a.bodies(), b.bodies(), c.bodies()) == ([("m0", False), ("m1", False)], [], [])

    a.channel.basic_cancel("a")  # m0 and m1 stay unacked on a's channel
    for consumer in everyone:
        consumer.pump(QUIET / 3)
    # As RabbitMQ 3.10, a cancel alone does not start the next consumer; the queue's next requeue does.
    assert (c.bodies(), b.bodies()) == ([], [])
    a.channel.basic_nack(a.got[1][2], requeue=True)  # m1 goes back to its place, before m2
    settle(everyone, lambda: len(c.got) == 2)
    assert (c.bodies(), b.bodies()) == ([("m1", True), ("m2", False)], [])

    a.close()  # m0 is requeued; c is at its prefetch limit
    c.channel.basic_ack(c.got[-1][2], multiple=True)
    settle(everyone, lambda: len(c.got) == 4)
    assert c.bodies()[2:] == [("m0", True), ("m3", False)]
    assert b.bodies() == []

    c.close()  # pika cancels, then closes: the next consumer gets the two unacked first, in order
    settle(everyone, lambda: len(b.got) == 2)
    assert b.bodies() == [("m0", True), ("m3", True)]
    b.channel.basic_ack(b.got[-1][2], multiple=True)
    settle(everyone, lambda: len(b.got) == 4)
    assert b.bodies()[2:] == [("m4", False), ("m5", False)]


def test_an_exclusive_consumer_is_refused(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = str(ch.queue_declare("", exclusive=True, arguments=SAC).method.queue)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
        conn.channel().basic_consume(q, lambda *_: None, exclusive=True)
    assert raised.value.reply_code == 403
    assert raised.value.reply_text == f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"


@pytest.mark.parametrize(("value", "kind"), [(1, "signedint"), ("true", "longstr")])
def test_a_non_boolean_is_refused_with_rabbitmqs_text(conn: BlockingConnection, value: Any, kind: str) -> None:
    name = "mailslot-test.sac-406"  # never created: the declaration fails
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
        conn.channel().queue_declare(name, exclusive=True, arguments={"x-single-active-consumer": value})
    assert raised.value.reply_code == 406
    assert raised.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue '{name}' in vhost '/': "
        f"{{unacceptable_type,{kind}}}"
    )


# ---- the report (mailslot only) ------------------------------------------------------------------------


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def _ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    await message.ack()


async def test_the_active_consumer_is_reported_by_the_http_api_and_the_cli() -> None:
    guest = {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}  # guest:guest
    async with running_broker(http_port=0) as broker, aiohttp.ClientSession(headers=guest) as http:
        base = broker.http_url
        connection = await aio_pika.connect(broker.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("orders", arguments=SAC)
            plain = await channel.declare_queue("plain")
            first = await queue.consume(_ack, consumer_tag="first")
            await queue.consume(_ack, consumer_tag="second")
            await plain.consume(_ack, consumer_tag="p1")

            listed = {q["name"]: q for q in await _get(http, f"{base}/api/queues")}
            assert listed["orders"]["single_active_consumer_tag"] == "first"
            assert listed["plain"]["single_active_consumer_tag"] is None
            detail = await _get(http, f"{base}/api/queues/%2F/orders")
            assert [(c["consumer_tag"], c["active"], c["activity_status"]) for c in detail["consumer_details"]] == [
                ("first", True, "single_active"),
                ("second", False, "waiting"),
            ]
            detail = await _get(http, f"{base}/api/queues/%2F/plain")
            assert [(c["consumer_tag"], c["active"], c["activity_status"]) for c in detail["consumer_details"]] == [
                ("p1", True, "up")
            ]

            result = await asyncio.to_thread(
                CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke, app, ["queues", "--url", base]
            )
            assert result.exit_code == 0, result.output
            assert "orders (active: first)" in result.output

            await queue.cancel(first)
            detail = await _get(http, f"{base}/api/queues/%2F/orders")
            assert detail["single_active_consumer_tag"] == "second"
            assert [(c["consumer_tag"], c["activity_status"]) for c in detail["consumer_details"]] == [
                ("second", "single_active")
            ]
