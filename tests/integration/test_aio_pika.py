"""aio-pika scenarios (robust connection, confirms, prefetch, RPC over direct reply-to, iterators)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aio_pika
import aiormq.exceptions
import pytest
from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from conftest import Cleanup
from helpers import async_wait_for

pytestmark = pytest.mark.timeout(30)


async def counts(ch: aio_pika.abc.AbstractChannel, queue: str) -> tuple[int, int]:
    """(message_count, consumer_count) from a real passive queue.declare on the wire.

    aio-pika 10's ``declare_queue(passive=True)`` did not reflect the broker's counts (returned 0 for a queue
    holding messages), so the counts are read through the underlying aiormq channel."""
    underlay = await ch.get_underlay_channel()
    ok = await underlay.queue_declare(queue, passive=True)
    return ok.message_count, ok.consumer_count


@pytest.fixture
async def conn(broker_url: str) -> AsyncIterator[AbstractRobustConnection]:
    c = await aio_pika.connect_robust(broker_url, timeout=5)
    try:
        yield c
    finally:
        await c.close()


async def test_robust_declare_publish_confirm_consume(conn: AbstractRobustConnection,
                                                      uname: Callable[[str], str], cleanup: Cleanup) -> None:
    n = 2000
    ch = await conn.channel(publisher_confirms=True)
    q = await ch.declare_queue(cleanup.queue(uname("q")), durable=True)
    confirms = await asyncio.gather(*(
        ch.default_exchange.publish(Message(b"%d" % i, delivery_mode=DeliveryMode.PERSISTENT), routing_key=q.name)
        for i in range(n)
    ))
    assert all(isinstance(c, aiormq.spec.Basic.Ack) for c in confirms)
    assert await counts(ch, q.name) == (n, 0)

    cch = await conn.channel()
    await cch.set_qos(prefetch_count=50)
    cq = await cch.get_queue(q.name)
    got: list[bytes] = []
    max_in_flight = 0
    in_flight = 0
    done = asyncio.Event()

    async def on_message(msg: AbstractIncomingMessage) -> None:
        nonlocal in_flight, max_in_flight
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        assert msg.delivery_mode == DeliveryMode.PERSISTENT
        assert msg.redelivered is False
        got.append(msg.body)
        await msg.ack()
        in_flight -= 1
        if len(got) == n:
            done.set()

    await cq.consume(on_message)
    await asyncio.wait_for(done.wait(), 15)
    assert got == [b"%d" % i for i in range(n)]
    assert max_in_flight <= 50
    assert await counts(ch, q.name) == (0, 1)


async def test_prefetch_window(conn: AbstractRobustConnection) -> None:
    ch = await conn.channel()
    q = await ch.declare_queue("", exclusive=True)
    for i in range(5):
        await ch.default_exchange.publish(Message(b"%d" % i), routing_key=q.name)
    await ch.set_qos(prefetch_count=2)
    held: list[AbstractIncomingMessage] = []

    async def hold(msg: AbstractIncomingMessage) -> None:
        held.append(msg)

    await q.consume(hold)
    await async_wait_for(lambda: len(held) >= 2)
    # No negative window: the broker's own count says what it kept back (ready = not delivered), asked
    # on the same channel after the deliveries it sent before the answer.
    assert await counts(ch, q.name) == (3, 1)
    assert [m.body for m in held] == [b"0", b"1"]
    await held[1].ack(multiple=True)
    await async_wait_for(lambda: len(held) >= 4)
    assert await counts(ch, q.name) == (1, 1)
    assert [m.body for m in held] == [b"0", b"1", b"2", b"3"]


async def test_rpc_direct_reply_to(conn: AbstractRobustConnection, broker_url: str) -> None:
    server_conn = await aio_pika.connect_robust(broker_url, timeout=5)
    try:
        sch = await server_conn.channel()
        rpc_q = await sch.declare_queue("", exclusive=True)
        seen_reply_to: list[str | None] = []

        async def serve(msg: AbstractIncomingMessage) -> None:
            async with msg.process():
                seen_reply_to.append(msg.reply_to)
                assert msg.reply_to is not None
                await sch.default_exchange.publish(
                    Message(msg.body[::-1], correlation_id=msg.correlation_id), routing_key=msg.reply_to)

        await rpc_q.consume(serve)

        ch = await conn.channel()
        reply_q = await ch.get_queue("amq.rabbitmq.reply-to", ensure=False)
        loop = asyncio.get_running_loop()
        pending: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(msg: AbstractIncomingMessage) -> None:
            assert msg.correlation_id is not None
            pending.pop(msg.correlation_id).set_result(msg.body)

        await reply_q.consume(on_reply, no_ack=True)
        results = []
        for i in range(3):
            corr = f"c{i}"
            pending[corr] = loop.create_future()
            await ch.default_exchange.publish(
                Message(b"abc%d" % i, correlation_id=corr, reply_to="amq.rabbitmq.reply-to"),
                routing_key=rpc_q.name)
            results.append(await asyncio.wait_for(pending[corr], 5))
        assert results == [b"0cba", b"1cba", b"2cba"]
        assert all(r and r.startswith("amq.rabbitmq.reply-to.") for r in seen_reply_to)
        assert len(set(seen_reply_to)) == 1  # one rewritten address per consuming channel
    finally:
        await server_conn.close()


async def test_iterator_consumption(conn: AbstractRobustConnection) -> None:
    ch = await conn.channel(publisher_confirms=True)
    q = await ch.declare_queue("", exclusive=True)
    for i in range(10):
        await ch.default_exchange.publish(Message(b"%d" % i), routing_key=q.name)
    await ch.set_qos(prefetch_count=3)
    got = []
    async with q.iterator() as it:
        async for msg in it:
            async with msg.process():
                got.append(msg.body)
            if len(got) == 10:
                break
    assert got == [b"%d" % i for i in range(10)]
    assert await counts(ch, q.name) == (0, 0)


async def test_nack_requeue_then_get(conn: AbstractRobustConnection) -> None:
    ch = await conn.channel(publisher_confirms=True)
    q = await ch.declare_queue("", exclusive=True)
    for b in (b"1", b"2", b"3"):
        await ch.default_exchange.publish(Message(b), routing_key=q.name)
    m1 = await q.get(no_ack=False)
    m2 = await q.get(no_ack=False)
    await m1.nack(requeue=True)
    again = await q.get(no_ack=True)
    assert (again.body, again.redelivered) == (b"1", True)
    nxt = await q.get(no_ack=True)
    assert (nxt.body, nxt.redelivered) == (b"3", False)
    await m2.ack()
    assert await q.get(fail=False) is None


async def test_channel_close_on_404(conn: AbstractRobustConnection, uname: Callable[[str], str]) -> None:
    ch = await conn.channel()
    name = uname("missing")
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as info:
        await ch.declare_queue(name, passive=True)
    assert info.value.args[0] == f"NOT_FOUND - no queue '{name}' in vhost '/'"
    # The connection survives a channel-level error; a new channel works.
    ch2 = await conn.channel()
    q = await ch2.declare_queue("", exclusive=True)  # aio-pika names it client-side ("amq_<hex>")
    assert await counts(ch2, q.name) == (0, 0)


async def test_in_loop_broker_round_trip(async_broker_url: str) -> None:
    """mailslot.testing.running_broker runs in the test's loop: a client on the same loop must not deadlock."""
    c = await aio_pika.connect_robust(async_broker_url, timeout=5)
    try:
        ch = await c.channel(publisher_confirms=True)
        q = await ch.declare_queue("", exclusive=True)
        await ch.default_exchange.publish(Message(b"hi", delivery_mode=DeliveryMode.PERSISTENT), routing_key=q.name)
        msg = await q.get(no_ack=False)
        assert msg.body == b"hi"
        await msg.ack()
    finally:
        await c.close()
