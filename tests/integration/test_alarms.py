"""Resource alarms through real clients on real sockets (in-process broker, mailslot only).

RabbitMQ is not a differential reference here: its watermark cannot be set from these tests (no
rabbitmqctl access), so these assert RabbitMQ's documented behaviour (docs/backpressure.md):
publishers get connection.blocked and are not read, consumers are served, unblocked when clear.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aio_pika
import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from helpers import async_wait_for
from mailslot.bootstrap import BrokerServer
from mailslot.testing import broker_in_thread, running_broker

pytestmark = pytest.mark.timeout(30)

INTERVAL = 0.05  # resource check period for these tests (1 s by default)
HUGE = "1TB"  # a memory watermark no test process reaches


class FakeReadings:
    """resource_reader for the broker: (rss bytes, free disk bytes) set by the test."""

    def __init__(self) -> None:
        self.rss = 50 * 1000**2
        self.free_disk = 100 * 1000**3
        self.reads = 0  # resource checks the broker made: a barrier for "nothing changed meanwhile"

    def __call__(self) -> tuple[int, int]:
        self.reads += 1
        return self.rss, self.free_disk


class Publisher:
    """A pika BlockingConnection that records connection.blocked / unblocked."""

    def __init__(self, url: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.blocked: list[str] = []
        self.unblocked = 0
        self.conn.add_on_connection_blocked_callback(
            lambda _c, frame: self.blocked.append(frame.method.reason)
        )
        self.conn.add_on_connection_unblocked_callback(lambda _c, _f: self._unblock())
        self.channel = self.conn.channel()

    def _unblock(self) -> None:
        self.unblocked += 1

    def wait(self, predicate: Callable[[], object], timeout: float = 5.0) -> None:
        """Let pika read frames (its callbacks run inside process_data_events) until predicate()."""
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= end:
                raise AssertionError(f"timed out after {timeout}s waiting for {predicate!r}")
            self.conn.process_data_events(time_limit=0.02)

    def publish(self, queue: str, bodies: list[str]) -> None:
        for body in bodies:
            self.channel.basic_publish("", queue, body.encode())

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()


def drain(channel: BlockingChannel, queue: str, idle: float = 0.3) -> list[str]:
    """Everything the queue delivers until it stays quiet for ``idle`` seconds."""
    got: list[str] = []
    for method, _props, body in channel.consume(queue, auto_ack=True, inactivity_timeout=idle):
        if method is None:
            break
        got.append(body.decode())
    channel.cancel()
    return got


def _scenario(
    broker: BrokerServer, set_alarm: Callable[[], None], clear_alarm: Callable[[], None], reason: str
) -> None:
    url = broker.amqp_url
    publisher = Publisher(url)
    consumer: BlockingConnection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        cch = consumer.channel()
        cch.queue_declare("alarmed")
        before = [f"before-{i}" for i in range(50)]
        publisher.publish("alarmed", before)
        publisher.wait(lambda: cch.queue_declare("alarmed", passive=True).method.message_count == 50)

        set_alarm()
        publisher.wait(lambda: publisher.blocked)
        assert publisher.blocked == [reason]
        assert publisher.unblocked == 0

        # The blocked publisher's messages stall in its socket: the broker is not reading it.
        during = [f"during-{i}" for i in range(10)]
        publisher.publish("alarmed", during)

        # A consumer-only connection keeps being read and served: the backlog drains.
        assert drain(cch, "alarmed") == before
        assert cch.queue_declare("alarmed", passive=True).method.message_count == 0

        clear_alarm()
        publisher.wait(lambda: publisher.unblocked)
        assert publisher.blocked == [reason]  # blocked once per alarm period
        assert drain(cch, "alarmed") == during

        # Publishing works normally again.
        publisher.publish("alarmed", ["after"])
        assert drain(cch, "alarmed") == ["after"]
    finally:
        publisher.close()
        if consumer.is_open:
            consumer.close()


def test_memory_alarm_blocks_publishers_and_serves_consumers() -> None:
    with broker_in_thread(resource_check_interval=INTERVAL, memory_high_watermark=HUGE) as broker:
        _scenario(
            broker,
            lambda: broker.set_resource_limits(memory_high_watermark="1MB"),  # below any real RSS
            lambda: broker.set_resource_limits(memory_high_watermark=HUGE),
            "low on memory",
        )
        assert broker.alarms == frozenset()


def test_disk_alarm_from_a_fake_free_space_reading() -> None:
    readings = FakeReadings()
    with broker_in_thread(resource_check_interval=INTERVAL, resource_reader=readings) as broker:

        def set_alarm() -> None:
            readings.free_disk = 10 * 1000**2  # below the 50MB default

        def clear_alarm() -> None:
            readings.free_disk = 60 * 1000**2

        _scenario(broker, set_alarm, clear_alarm, "low on disk")


def test_both_alarms_give_the_joined_reason_and_unblock_only_when_both_clear() -> None:
    readings = FakeReadings()
    with broker_in_thread(
        resource_check_interval=INTERVAL, resource_reader=readings, memory_high_watermark="100MB"
    ) as broker:
        publisher = Publisher(broker.amqp_url)
        try:
            publisher.channel.queue_declare("both")
            publisher.publish("both", ["x"])
            readings.rss, readings.free_disk = 200 * 1000**2, 1
            publisher.wait(lambda: publisher.blocked)
            assert publisher.blocked == ["low on memory & low on disk"]
            readings.rss = 1
            with pytest.raises(AssertionError):
                publisher.wait(lambda: publisher.unblocked, timeout=0.3)  # disk still low
            readings.free_disk = 100 * 1000**3
            publisher.wait(lambda: publisher.unblocked)
            assert publisher.channel.queue_declare("both", passive=True).method.message_count == 1
        finally:
            publisher.close()


def test_a_connection_that_first_publishes_during_an_alarm_is_blocked_then() -> None:
    readings = FakeReadings()
    readings.free_disk = 1
    with broker_in_thread(resource_check_interval=INTERVAL, resource_reader=readings) as broker:
        publisher = Publisher(broker.amqp_url)
        try:
            # Not blocked while it only declares (it has not published).
            assert publisher.channel.queue_declare("late").method.message_count == 0
            assert publisher.blocked == []
            publisher.publish("late", ["first"])
            publisher.wait(lambda: publisher.blocked)
            assert publisher.blocked == ["low on disk"]
            readings.free_disk = 100 * 1000**3
            publisher.wait(lambda: publisher.unblocked)
            assert publisher.channel.queue_declare("late", passive=True).method.message_count == 1
        finally:
            publisher.close()


async def test_aio_pika_sees_blocked_and_unblocked(caplog: pytest.LogCaptureFixture) -> None:
    readings = FakeReadings()
    async with running_broker(resource_check_interval=INTERVAL, resource_reader=readings) as broker:
        connection = await aio_pika.connect(broker.amqp_url)
        try:
            channel = await channel_with_queue(connection, "aio")
            await channel.default_exchange.publish(aio_pika.Message(b"one"), routing_key="aio")
            readings.free_disk = 1
            amqp = connection.transport.connection  # the aiormq connection aio-pika drives
            await async_wait_for(
                lambda: "was blocked by" in caplog.text, what="aiormq logs connection.blocked"
            )
            assert "low on disk" in caplog.text
            ready = asyncio.ensure_future(amqp.ready())  # aiormq: resolves once unblocked
            checks = readings.reads
            await async_wait_for(lambda: readings.reads >= checks + 2, what="two more resource checks")
            await asyncio.sleep(0)  # let aiormq take any frame already read
            assert not ready.done()  # the broker re-checked twice, still low on disk: still blocked
            readings.free_disk = 100 * 1000**3
            await asyncio.wait_for(ready, 5)
            queue = await channel.declare_queue("aio", passive=True)
            assert queue.declaration_result.message_count == 1
        finally:
            await connection.close()


async def channel_with_queue(
    connection: aio_pika.abc.AbstractConnection, name: str
) -> aio_pika.abc.AbstractChannel:
    channel = await connection.channel()
    await channel.declare_queue(name)
    return channel
