"""A node paused (SIGSTOP) past its lease, taken over, then resumed (SIGCONT): its writes are refused by
fencing, it stops serving the queue and says so, and nothing is lost or delivered by two owners.
Real ``mailslot serve --cluster`` processes on one PostgreSQL schema."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import aio_pika
import pytest

from helpers import async_wait_for
from mailslot.bench.broker_process import BrokerProcess

pytestmark = pytest.mark.slow

LEASE_TTL = 2.0


async def test_a_paused_owner_is_taken_over_and_fenced_when_it_resumes(
    node_process: Callable[..., BrokerProcess],
) -> None:
    a = node_process("a", lease_ttl=LEASE_TTL)
    bodies = [f"m-{i}".encode() for i in range(50)]
    connection_a = await aio_pika.connect(a.url)
    publisher = await connection_a.channel(publisher_confirms=True)
    await publisher.declare_queue("orders", durable=True)
    await asyncio.gather(*(publisher.default_exchange.publish(aio_pika.Message(body, delivery_mode=2), "orders")
                           for body in bodies))
    held: list[bytes] = []
    consumer_a = await connection_a.channel()
    await consumer_a.set_qos(prefetch_count=5)

    async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        held.append(message.body)  # never acked: a's consumer keeps 5

    await (await consumer_a.get_queue("orders")).consume(hold)
    await async_wait_for(lambda: len(held) == 5, what="5 deliveries on a")

    b = node_process("b", lease_ttl=LEASE_TTL)
    got: list[bytes] = []
    connection_b = await aio_pika.connect(b.url)
    channel_b = await connection_b.channel()

    async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        got.append(message.body)
        await message.ack()

    await (await channel_b.declare_queue("orders", durable=True, passive=True)).consume(take)

    a.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        await async_wait_for(lambda: len(got) >= len(bodies), timeout=8 * LEASE_TTL,
                             what=lambda: f"b to take over and deliver everything ({len(got)})")
    finally:
        a.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    assert sorted(got) == sorted(bodies)  # once each; the 5 a had delivered are among them

    # a wakes up believing it owns the queue; its first renewal tells it otherwise.
    await async_wait_for(lambda: any("lost the lease of queue 'orders'" in line for line in a.output),
                         timeout=4 * LEASE_TTL, what="a to notice it lost the queue")
    for body in (b"after-resume-1", b"after-resume-2"):  # a must not confirm what it cannot store
        with pytest.raises(aio_pika.exceptions.DeliveryError):
            await publisher.default_exchange.publish(aio_pika.Message(body, delivery_mode=2), "orders")
    await asyncio.sleep(0)
    assert b"after-resume-1" not in got and b"after-resume-2" not in got
    await asyncio.gather(connection_a.close(), connection_b.close(), return_exceptions=True)
