"""A publisher-confirmed persistent message survives a SIGKILL of the broker.

The broker runs in a child process on each durable store (segments, SQLite, PostgreSQL). A publisher keeps a window of
persistent messages in flight with confirms (so the broker group-commits batches), the broker is
SIGKILLed mid-stream, restarted on the same data directory, and every message that had been
confirmed must be there, once, in publish order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest

from helpers import async_wait_for

from .broker_process import BrokerProcess, publish_until_killed

pytestmark = pytest.mark.slow

QUEUE = "durable-orders"
STORES = ["segments", "sqlite", "postgres"]  # every durable store must keep every confirmed message


@pytest.fixture
def make_broker(request: pytest.FixtureRequest, tmp_path: Any) -> Callable[[str], BrokerProcess]:
    """``make_broker(store)``: a broker process on a data directory (or, for PostgreSQL, a schema) of
    this test's own, which survives its restarts."""

    def make(store: str) -> BrokerProcess:
        extra: tuple[str, ...] = ()
        if store == "postgres":
            pg = request.getfixturevalue("postgres_settings")
            extra = ("--postgres-dsn", pg.dsn, "--postgres-schema", pg.schema, "--node-name", pg.node_name)
        return BrokerProcess(store=store, data_dir=tmp_path / "data", extra_args=extra)

    return make


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
async def test_confirmed_persistent_messages_survive_sigkill(make_broker, kill_after, store):
    broker = make_broker(store)
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
async def test_transient_messages_and_nondurable_queues_are_gone_after_restart(make_broker, store):
    broker = make_broker(store)
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
            routed = await async_wait_for(lambda: queue.get(no_ack=True, fail=False), what="the routed message")
            assert routed.body == b"routed"
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await channel.declare_queue("scratch", passive=True)
    finally:
        broker.kill()


@pytest.mark.parametrize("store", STORES)
async def test_sigterm_shuts_down_cleanly_and_keeps_data(make_broker, store):
    broker = make_broker(store)
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
