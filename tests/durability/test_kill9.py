"""A publisher-confirmed persistent message survives a SIGKILL of the broker.

The broker runs in a child process on the embedded SQLite store. A publisher keeps a window of
persistent messages in flight with confirms (so the broker group-commits batches), the broker is
SIGKILLed mid-stream, restarted on the same data directory, and every message that had been
confirmed must be there, once, in publish order.
"""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from .broker_process import BrokerProcess, publish_until_killed

pytestmark = pytest.mark.slow

QUEUE = "durable-orders"
STORES = ["segments", "sqlite"]  # both embedded stores must keep every confirmed message


async def _publish_until_killed(broker: BrokerProcess, kill_after: int) -> list[int]:
    confirmed: list[int] = []
    connection = await aio_pika.connect(broker.url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(QUEUE, durable=True)

    async def publish(i: int) -> None:
        await channel.default_exchange.publish(
            aio_pika.Message(str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=QUEUE
        )
        confirmed.append(i)

    try:
        await publish_until_killed(broker, publish, kill_after)
    finally:
        try:
            await asyncio.wait_for(connection.close(), 2)
        except Exception:
            pass
    return confirmed


async def _drain(url: str) -> list[int]:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, durable=True, passive=True)
        got = []
        while True:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                return got
            got.append(int(message.body))


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("kill_after", [300, 2000])
async def test_confirmed_persistent_messages_survive_sigkill(tmp_path, kill_after, store):
    broker = BrokerProcess(store=store, data_dir=tmp_path / "data")
    broker.start()
    try:
        confirmed = await _publish_until_killed(broker, kill_after)
        assert len(confirmed) >= kill_after - 50, "the publisher should have been confirmed before the kill"
        broker.start()
        recovered = await _drain(broker.url)
    finally:
        broker.kill()
    missing = set(confirmed) - set(recovered)
    assert not missing, f"{len(missing)} confirmed messages lost: {sorted(missing)[:10]}"
    assert len(recovered) == len(set(recovered)), "a message was recovered twice"
    assert recovered == sorted(recovered), "recovered messages are out of publish order"


@pytest.mark.parametrize("store", STORES)
async def test_transient_messages_and_nondurable_queues_are_gone_after_restart(tmp_path, store):
    broker = BrokerProcess(store=store, data_dir=tmp_path / "data")
    broker.start()
    try:
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            durable = await channel.declare_queue("keep", durable=True)
            await channel.declare_queue("scratch", durable=False)
            await channel.declare_exchange("events", aio_pika.ExchangeType.TOPIC, durable=True)
            await durable.bind("events", "order.*")
            await channel.default_exchange.publish(aio_pika.Message(b"transient"), routing_key="keep")
            await channel.default_exchange.publish(
                aio_pika.Message(b"persistent", delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="keep"
            )
        broker.kill()
        broker.start()
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("keep", durable=True, passive=True)
            first = await queue.get(no_ack=True)
            assert first.body == b"persistent"
            assert await queue.get(no_ack=True, fail=False) is None
            # The durable binding survived: a publish to the topic exchange reaches the queue.
            exchange = await channel.get_exchange("events")
            await exchange.publish(aio_pika.Message(b"routed"), routing_key="order.created")
            await asyncio.sleep(0.05)
            assert (await queue.get(no_ack=True)).body == b"routed"
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await channel.declare_queue("scratch", passive=True)
    finally:
        broker.kill()


@pytest.mark.parametrize("store", STORES)
async def test_sigterm_shuts_down_cleanly_and_keeps_data(tmp_path, store):
    broker = BrokerProcess(store=store, data_dir=tmp_path / "data")
    broker.start()
    connection = await aio_pika.connect(broker.url)
    closed = asyncio.get_running_loop().create_future()
    connection.close_callbacks.add(lambda _conn, exc: closed.done() or closed.set_result(exc))
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue("kept", durable=True)
    await channel.default_exchange.publish(
        aio_pika.Message(b"x", delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="kept"
    )
    assert broker.terminate() == 0
    reason = await asyncio.wait_for(closed, 5)
    assert "320" in repr(reason) or "CONNECTION_FORCED" in repr(reason)
    broker.start()
    try:
        assert await _drain_named(broker.url, "kept") == [b"x"]
    finally:
        broker.kill()


async def _drain_named(url: str, name: str) -> list[bytes]:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True, passive=True)
        out = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            out.append(message.body)
        return out
