"""mailslot.client surfaces mandatory returns (basic.return) and holds publishes while the broker has the
connection blocked (connection.blocked). Returns run against mailslot and RabbitMQ (``conn`` fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from helpers import async_wait_for
from mailslot import client
from mailslot.testing import running_broker

QueueName = Callable[[], str]


async def test_a_returned_mandatory_publish_raises_in_confirm_mode(conn: client.Connection, queue_name: QueueName) -> None:
    ch = await conn.channel()
    q = queue_name()
    await ch.declare_queue(q, durable=False)
    await ch.confirm_select()
    nowhere = queue_name()  # never declared: the default exchange cannot route to it
    with pytest.raises(client.MessageReturned) as info:
        await ch.publish("", nowhere, b"lost?", mandatory=True)
    returned = info.value.returned
    assert (returned.reply_code, returned.reply_text) == (312, "NO_ROUTE")
    assert (returned.exchange, returned.routing_key, returned.body) == ("", nowhere, b"lost?")
    # In flight together: only the unroutable one raises; the channel stays usable.
    results = await asyncio.gather(
        ch.publish("", q, b"a", mandatory=True),
        ch.publish("", nowhere, b"b", mandatory=True),
        ch.publish("", q, b"b", mandatory=True),  # the same body, routable: not the returned one
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], client.MessageReturned) and results[1].returned.routing_key == nowhere
    got = [await ch.get(q, no_ack=True) for _ in range(2)]
    assert [m.body for m in got if m is not None] == [b"a", b"b"]


async def test_return_listeners_get_every_return(conn: client.Connection, queue_name: QueueName) -> None:
    ch = await conn.channel()
    seen: list[client.ReturnedMessage] = []
    remove = ch.on_return(seen.append)
    nowhere = queue_name()
    await ch.publish("", nowhere, b"one", mandatory=True)  # no confirm mode: only the listener hears it
    await ch.publish("", nowhere, b"two", mandatory=False)  # not mandatory: silently dropped
    await ch.declare_queue(queue_name(), durable=False)  # a round trip: the return came before its reply
    assert [(r.reply_code, r.body) for r in seen] == [(312, b"one")]
    remove()
    await ch.publish("", nowhere, b"three", mandatory=True)
    await ch.declare_queue(queue_name(), durable=False)
    assert len(seen) == 1


class Readings:
    """The broker's resource readings (rss, free disk), set by the test."""

    def __init__(self) -> None:
        self.rss = 10 * 1000**2

    def __call__(self) -> tuple[int, int]:
        return self.rss, 100 * 1000**3


async def test_publishes_wait_while_the_connection_is_blocked() -> None:
    readings = Readings()
    settings = {"memory_high_watermark": "100MB", "resource_reader": readings, "resource_check_interval": 0.02}
    async with running_broker(**settings) as broker:
        conn = await client.connect(broker.amqp_url)
        ch = await conn.channel()
        await ch.declare_queue("held")
        await ch.confirm_select()
        await ch.publish("", "held", b"before")  # a publisher: the broker blocks it during an alarm
        readings.rss = 500 * 1000**2  # memory alarm
        await async_wait_for(lambda: conn.blocked)
        publish = asyncio.ensure_future(ch.publish("", "held", b"during"))
        many = asyncio.ensure_future(ch.publish_many([("", "held", b"m1"), ("", "held", b"m2")]))
        await asyncio.sleep(0.3)
        assert not publish.done() and not many.done()  # held by the client, not written into the socket
        assert broker.core.vhosts["/"].queues["held"].message_count == 1
        readings.rss = 10 * 1000**2  # the alarm clears: connection.unblocked
        await asyncio.wait_for(asyncio.gather(publish, many), 10)
        assert not conn.blocked
        assert broker.core.vhosts["/"].queues["held"].message_count == 4
        # A close while blocked ends the wait with an error instead of hanging.
        readings.rss = 500 * 1000**2  # the broker blocks the connections that have published
        await async_wait_for(lambda: conn.blocked)
        stuck = asyncio.ensure_future(ch.publish("", "held", b"never"))
        await asyncio.sleep(0.05)
        await conn.close()
        with pytest.raises(client.ConnectionLost):
            await asyncio.wait_for(stuck, 5)

