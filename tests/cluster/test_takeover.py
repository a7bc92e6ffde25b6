"""kill -9 of a node: another node takes its queues over within seconds and delivers every confirmed
message (real ``mailslot serve --cluster`` processes on one PostgreSQL schema)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest

from helpers import async_wait_for
from mailslot.bench.broker_process import BrokerProcess

from .clients import consume_until

pytestmark = pytest.mark.slow

LEASE_TTL = 3.0


async def _publish(channel: aio_pika.abc.AbstractChannel, queue: str, bodies: list[bytes]) -> None:
    await asyncio.gather(*(
        channel.default_exchange.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                         routing_key=queue)
        for body in bodies
    ))


async def test_a_killed_nodes_queues_are_taken_over_and_every_confirmed_message_is_delivered(
    node_process: Callable[..., BrokerProcess],
) -> None:
    a = node_process("a", lease_ttl=LEASE_TTL)
    orders = [f"order-{i}".encode() for i in range(300)]
    invoices = [f"invoice-{i}".encode() for i in range(50)]
    connection_a = await aio_pika.connect(a.url)
    publisher = await connection_a.channel(publisher_confirms=True)
    await publisher.declare_queue("orders", durable=True)  # declared on a: a owns them
    await publisher.declare_queue("invoices", durable=True)
    await _publish(publisher, "orders", orders)  # every one confirmed: committed by a
    await _publish(publisher, "invoices", invoices)

    # A consumer on a holds 10 deliveries without acknowledging them.
    held: list[bytes] = []
    consumer_a = await connection_a.channel()
    await consumer_a.set_qos(prefetch_count=10)
    queue_a = await consumer_a.get_queue("orders")

    async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        held.append(message.body)

    await queue_a.consume(hold)
    await async_wait_for(lambda: len(held) == 10, what="10 deliveries on node a")
    # Batches commit in order: once this confirm is back, a's record of those deliveries is committed.
    await _publish(publisher, "invoices", [b"barrier"])
    invoices.append(b"barrier")

    b = node_process("b", lease_ttl=LEASE_TTL)  # started after the declares: it loads both queues
    got: dict[str, list[tuple[bytes, bool]]] = {"orders": [], "invoices": []}
    first_delivery: list[float] = []
    connection_b = await aio_pika.connect(b.url)
    consumer_b = await connection_b.channel()
    await consumer_b.set_qos(prefetch_count=100)
    for name in got:
        queue_b = await consumer_b.declare_queue(name, durable=True, passive=True)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage, name: str = name) -> None:
            if not first_delivery:
                first_delivery.append(time.monotonic())
            got[name].append((message.body, message.redelivered))
            await message.ack()

        await queue_b.consume(on_message)
    assert got == {"orders": [], "invoices": []}, "b served a queue a still owns"

    killed_at = time.monotonic()
    a.kill()
    try:
        await async_wait_for(lambda: len(got["orders"]) >= len(orders) and len(got["invoices"]) >= len(invoices),
                             timeout=6 * LEASE_TTL, what=lambda: f"every confirmed message on b (got "
                             f"{len(got['orders'])} orders, {len(got['invoices'])} invoices)")
    finally:
        await connection_b.close()
    takeover = first_delivery[0] - killed_at
    print(f"\nfirst delivery on b {takeover:.2f} s after kill -9 of a (lease TTL {LEASE_TTL} s)")
    assert takeover < 2 * LEASE_TTL, f"took {takeover:.2f} s"
    for name, published in (("orders", orders), ("invoices", invoices)):
        bodies = [body for body, _ in got[name]]
        assert sorted(bodies) == sorted(published), f"{name}: lost or duplicated"
        assert bodies == published, f"{name}: not in publish order"
    # What a delivered and nobody acknowledged comes back flagged; nothing else does.
    redelivered = {body for body, flag in got["orders"] + got["invoices"] if flag}
    assert redelivered == set(held)
    await asyncio.gather(connection_a.close(), return_exceptions=True)


async def _consume(url: str, queue: str, count: int) -> list[bytes]:
    """``count`` messages of ``queue`` through the node at ``url`` (acked), whichever node owns it."""
    return await consume_until(url, queue, lambda got: len(got) >= count, lambda got: f"{count} of {queue} ({len(got)})")


async def test_every_node_killed_at_once_keeps_every_confirmed_message(
    node_process: Callable[..., BrokerProcess], tmp_path: Any,
) -> None:
    secret = ("--cluster-secret", "restart-test-secret-0123456789")
    a = node_process("a", "--cluster-link", f"unix:{tmp_path}/a.sock", *secret, lease_ttl=LEASE_TTL)
    b = node_process("b", "--cluster-link", f"unix:{tmp_path}/b.sock", *secret, lease_ttl=LEASE_TTL)
    published: dict[str, list[bytes]] = {}
    for node, queue in ((a, "q-a"), (b, "q-b")):  # each declared on, so owned by, its own node
        connection = await aio_pika.connect(node.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.declare_queue(queue, durable=True)
            published[queue] = [f"{queue}-{i}".encode() for i in range(200)]
            await _publish(channel, queue, published[queue])
    a.kill()
    b.kill()
    a.start()
    b.start()
    for queue in published:  # both through a: one it owns again, one served through it from b (or taken over)
        assert sorted(await _consume(a.url, queue, len(published[queue]))) == sorted(published[queue])
