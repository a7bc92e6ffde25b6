"""Confirmed persistent delayed messages survive a SIGKILL of the broker (the plugin's weak point).

The broker runs in a child process on an embedded store. A publisher sends persistent messages with
x-delay spread over a few seconds to a durable x-delayed-message exchange, with confirms. While the broker
is releasing them into a durable queue, it is SIGKILLed, then restarted on the same data directory. Every
confirmed message must then arrive exactly once (some from the queue, released before the kill, the rest
from the rebuilt schedule) and none before its due time.
"""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest

from .broker_process import BrokerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

EXCHANGE = "delayed-orders"
QUEUE = "delayed-orders-q"
COUNT = 1500
WINDOW = 50


async def _declare(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractQueue:
    exchange = await channel.declare_exchange(
        EXCHANGE, "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"}
    )
    queue = await channel.declare_queue(QUEUE, durable=True)
    await queue.bind(exchange, "orders")
    return queue


async def _publish(url: str) -> dict[int, float]:
    """Publish COUNT delayed messages (delays 0.5 s .. 4 s, interleaved); returns confirmed id -> due time."""
    connection = await aio_pika.connect(url)
    confirmed: dict[int, float] = {}
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await _declare(channel)
        exchange = await channel.get_exchange(EXCHANGE)

        async def publish(i: int) -> None:
            delay_ms = 500 + (i * 7919) % 3500  # not in publish order: the heap has work to do
            due = time.time() + delay_ms / 1000
            await exchange.publish(
                aio_pika.Message(
                    f"{i}:{due}".encode(), headers={"x-delay": delay_ms},
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="orders",
            )
            confirmed[i] = due

        for start in range(0, COUNT, WINDOW):
            await asyncio.gather(*(publish(i) for i in range(start, min(start + WINDOW, COUNT))))
    return confirmed


async def _consume(url: str, expected: int, timeout: float) -> list[tuple[int, float, float]]:
    """(id, due, arrival) of every delivery until ``expected`` arrived and the queue stays quiet."""
    got: list[tuple[int, float, float]] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        queue = await _declare(channel)
        deadline = time.monotonic() + timeout
        async with queue.iterator() as messages:
            while time.monotonic() < deadline:
                try:
                    message = await asyncio.wait_for(messages.__anext__(), 1.0)
                except TimeoutError:
                    if len(got) >= expected:
                        break  # a quiet second after everything arrived: no duplicates still coming
                    continue
                arrived = time.time()
                i, due = message.body.decode().split(":")
                got.append((int(i), float(due), arrived))
                await message.ack()
    return got


@pytest.mark.parametrize("store", ["segments", "sqlite"])
async def test_confirmed_delayed_messages_arrive_once_and_not_early_after_sigkill(tmp_path, store):
    broker = BrokerProcess(store=store, data_dir=tmp_path / "data")
    broker.start()
    try:
        confirmed = await _publish(broker.url)
        assert len(confirmed) == COUNT
        # Kill while releases are going on: some are in the queue, some still scheduled.
        first_due = min(confirmed.values())
        await asyncio.sleep(max(0.0, first_due - time.time()) + 1.0)
        broker.kill()
        broker.start()
        got = await _consume(broker.url, COUNT, timeout=30)
    finally:
        broker.kill()
    ids = [i for i, _, _ in got]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} delayed messages arrived twice"
    missing = set(confirmed) - set(ids)
    assert not missing, f"{len(missing)} confirmed delayed messages lost: {sorted(missing)[:10]}"
    early = [(i, round(due - arrived, 3)) for i, due, arrived in got if arrived < due]
    assert not early, f"released before due: {early[:10]}"
