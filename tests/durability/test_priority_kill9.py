"""Priority queues and single-active-consumer queues survive a SIGKILL of the broker.

The broker runs in a child process on each embedded store. Persistent messages of mixed priorities are
published with confirms (one nacked back, so it is flagged redelivered), the broker is SIGKILLed and
restarted on the same data directory: every confirmed message is there once, in priority-then-publish
order, and the single-active-consumer queue still gives everything to one consumer.
"""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from helpers import async_wait_for

from .broker_process import BrokerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

STORES = ["segments", "sqlite"]
PRIORITIES = [(i * 5) % 8 for i in range(300)]  # levels 0..7, interleaved; max is 5, so 6 and 7 count as 5


def persistent(body: str, priority: int) -> aio_pika.Message:
    return aio_pika.Message(body.encode(), priority=priority, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


@pytest.mark.parametrize("store", STORES)
async def test_priority_order_and_single_active_consumer_survive_sigkill(tmp_path, store):
    broker = BrokerProcess(store=store, data_dir=tmp_path / "data")
    broker.start()
    try:
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            jobs = await channel.declare_queue("jobs", durable=True, arguments={"x-max-priority": 5})
            await channel.declare_queue("serial", durable=True, arguments={"x-single-active-consumer": True})
            await asyncio.gather(
                *(channel.default_exchange.publish(persistent(f"{i:03d}", p), "jobs") for i, p in enumerate(PRIORITIES))
            )
            for i in range(10):
                await channel.default_exchange.publish(persistent(f"s{i}", 0), "serial")
            taken = await jobs.get(no_ack=False)  # the first one in priority order: back, redelivered
            await taken.nack(requeue=True)
            # A requeue has no confirm: a confirmed publish after it is committed in the same batch or a later one.
            await channel.declare_queue("barrier", durable=True)
            await channel.default_exchange.publish(persistent("barrier", 0), "barrier")
        broker.kill()
        broker.start()

        expected = [f"{i:03d}" for i, _ in sorted(enumerate(PRIORITIES), key=lambda item: (-min(item[1], 5), item[0]))]
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel()
            jobs = await channel.declare_queue("jobs", durable=True, arguments={"x-max-priority": 5})
            got, redelivered = [], []
            while (message := await jobs.get(no_ack=True, fail=False)) is not None:
                got.append(message.body.decode())
                redelivered.append(message.redelivered)
            assert got == expected
            assert redelivered == [True] + [False] * (len(expected) - 1)

            serial = await channel.declare_queue("serial", durable=True, arguments={"x-single-active-consumer": True})
            seen: dict[str, list[str]] = {"first": [], "second": []}
            for tag in seen:
                async def on_message(message: aio_pika.abc.AbstractIncomingMessage, tag: str = tag) -> None:
                    seen[tag].append(message.body.decode())
                    await message.ack()

                await serial.consume(on_message, consumer_tag=tag)
            await async_wait_for(lambda: len(seen["first"]) == 10, what="the active consumer's ten")
            assert seen == {"first": [f"s{i}" for i in range(10)], "second": []}
    finally:
        broker.kill()
