"""Scheduled delayed messages wait on disk, not in the broker's memory (a light version of
benchmarks/delayed_memory.py): the RSS of a broker process grows far less than the bodies it schedules."""

from __future__ import annotations

import asyncio

import aio_pika
import psutil
import pytest

from .broker_process import BrokerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

COUNT = 20_000
SIZE = 1024
MB = 1024 * 1024


async def _schedule(exchange: aio_pika.abc.AbstractExchange, count: int, delay_ms: tuple[int, int]) -> None:
    sem = asyncio.Semaphore(500)
    body = b"\x00" * SIZE
    low, high = delay_ms

    async def one(i: int) -> None:
        async with sem:
            message = aio_pika.Message(body, headers={"x-delay": low + (i * 7919) % (high - low)},
                                       delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await exchange.publish(message, routing_key="due")

    await asyncio.gather(*(one(i) for i in range(count)))


async def test_scheduled_bodies_are_not_held_in_memory(tmp_path):
    broker = BrokerProcess(store="segments", data_dir=tmp_path / "data")
    broker.start()
    try:
        process = psutil.Process(broker.pid)
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(
                "delayed", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
            queue = await channel.declare_queue("due", durable=True)
            await queue.bind(exchange, "due")
            await _schedule(exchange, 2_000, (100, 500))  # warm-up: released and consumed below
            for _ in range(2_000):
                message = await queue.get(no_ack=True, fail=False, timeout=5)
                while message is None:
                    await asyncio.sleep(0.05)
                    message = await queue.get(no_ack=True, fail=False, timeout=5)
            await asyncio.sleep(1)
            before = process.memory_info().rss
            await _schedule(exchange, COUNT, (120_000, 180_000))  # none falls due during the test
            await asyncio.sleep(1)
            growth = process.memory_info().rss - before
            assert await queue.get(no_ack=True, fail=False) is None  # nothing released early
    finally:
        broker.kill()
    bodies = COUNT * SIZE
    print(f"RSS growth {growth / MB:.1f} MB for {COUNT:,} scheduled messages ({bodies / MB:.1f} MB of bodies)")
    assert growth < bodies * 0.3, f"RSS grew {growth / MB:.1f} MB for {bodies / MB:.1f} MB of scheduled bodies"
