"""The deduplication window survives a restart and a SIGKILL (docs/deduplication.md).

A producer publishes N keyed persistent messages with confirms, the broker is SIGKILLed mid-stream
and restarted on the same data directory, and the producer retries every message it has no confirm
for (and then, to be thorough, every message). Exactly N messages must be in the queue: none lost
(a key committed without its message would turn the retry into a dropped duplicate) and none twice
(a message committed without its key would let the retry in again).
"""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest

from .broker_process import BrokerProcess, publish_until_killed

pytestmark = pytest.mark.slow

STORES = ["segments", "sqlite"]
N = 1500
QUEUE = "orders"
EXCHANGE = "orders-dedup"


async def _declare(channel: aio_pika.abc.AbstractChannel, mode: str) -> aio_pika.abc.AbstractExchange:
    if mode == "queue":
        await channel.declare_queue(QUEUE, durable=True, arguments={"x-message-deduplication": True})
        return channel.default_exchange
    queue = await channel.declare_queue(QUEUE, durable=True)
    exchange = await channel.declare_exchange(
        EXCHANGE, "x-message-deduplication", durable=True, arguments={"x-cache-size": 10 * N}
    )
    await queue.bind(exchange)
    return exchange


def _message(i: int) -> aio_pika.Message:
    return aio_pika.Message(
        str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT, headers={"x-deduplication-header": f"order-{i}"}
    )


async def _publish_until_killed(broker: BrokerProcess, mode: str, kill_after: int) -> set[int]:
    confirmed: set[int] = set()
    connection = await aio_pika.connect(broker.url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await _declare(channel, mode)

    async def publish(i: int) -> None:
        await exchange.publish(_message(i), routing_key=QUEUE)
        confirmed.add(i)

    try:
        await publish_until_killed(broker, publish, kill_after, total=N)
    finally:
        try:
            await asyncio.wait_for(connection.close(), 2)
        except Exception:
            pass
    return confirmed


async def _retry(url: str, mode: str, indices: list[int]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await _declare(channel, mode)
        for start in range(0, len(indices), 100):
            await asyncio.gather(*(exchange.publish(_message(i), routing_key=QUEUE) for i in indices[start : start + 100]))


async def _drain(url: str) -> list[int]:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, durable=True, passive=True)
        got = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            got.append(int(message.body))
        return got


async def _count(url: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, durable=True, passive=True)
        return int(queue.declaration_result.message_count or 0)


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("mode", ["queue", "exchange"])
async def test_retry_after_sigkill_gives_exactly_once(tmp_path, store, mode):
    broker = BrokerProcess(store=store, data_dir=tmp_path / "data")
    broker.start()
    try:
        confirmed = await _publish_until_killed(broker, mode, kill_after=N // 2)
        assert len(confirmed) >= N // 2 - 50, "the producer should have been confirmed before the kill"
        assert len(confirmed) < N, "the kill came too late to test anything"
        broker.start()
        await _retry(broker.url, mode, [i for i in range(N) if i not in confirmed])
        assert await _count(broker.url) == N
        await _retry(broker.url, mode, list(range(N)))  # a producer that retries everything
        got = await _drain(broker.url)
    finally:
        broker.kill()
    assert len(got) == N, f"{len(got)} messages for {N} keys"
    assert sorted(got) == list(range(N)), "lost or duplicated messages"


@pytest.mark.parametrize("store", STORES)
async def test_window_survives_a_restart_with_its_size_and_ttl(tmp_path, store):
    broker = BrokerProcess(store=store, data_dir=tmp_path / "data")
    broker.start()
    try:
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            queue = await channel.declare_queue(
                "w", durable=True, arguments={"x-message-deduplication": True, "x-cache-size": 3}
            )
            short = await channel.declare_queue(
                "short", durable=True, arguments={"x-message-deduplication": True, "x-cache-ttl": 1500}
            )
            for key in ("a", "b", "c", "d"):  # "a" falls out of the 3-key window
                await channel.default_exchange.publish(_keyed(key), routing_key="w")
            await channel.default_exchange.publish(_keyed("s"), routing_key="short")
            while await queue.get(no_ack=True, fail=False) is not None:  # consumed: the window stays
                pass
            await short.get(no_ack=True)
            published = time.monotonic()
            # A confirmed publish: the batch it is confirmed with holds the gets' removals too.
            await channel.default_exchange.publish(aio_pika.Message(b"sync"), routing_key="nowhere", mandatory=False)
        broker.kill()
        broker.start()
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            for key in ("b", "c", "d", "a"):  # ("a" last: admitting it pushes "b" out of the window)
                await channel.default_exchange.publish(_keyed(key), routing_key="w")
            await channel.default_exchange.publish(_keyed("s"), routing_key="short")  # still inside 1.5 s
            queue = await channel.declare_queue("w", durable=True, passive=True)
            got = []
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                got.append(message.body)
            assert got == [b"a"]
            short = await channel.declare_queue("short", durable=True, passive=True)
            assert await short.get(no_ack=True, fail=False) is None or time.monotonic() - published > 1.5
            await asyncio.sleep(max(0.0, 1.7 - (time.monotonic() - published)))
            broker.kill()  # the expiry must come from the stored deadline, not from a timer of this run
        broker.start()
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.default_exchange.publish(_keyed("s"), routing_key="short")
            short = await channel.declare_queue("short", durable=True, passive=True)
            message = await short.get(no_ack=True, fail=False)
            assert message is not None and message.body == b"s", "an expired key must let the message in"
    finally:
        broker.kill()


def _keyed(key: str) -> aio_pika.Message:
    return aio_pika.Message(
        key.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT, headers={"x-deduplication-header": key}
    )
