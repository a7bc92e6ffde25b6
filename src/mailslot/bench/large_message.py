"""What one large publish costs everyone else: while one connection (pika) publishes a large persistent
message with a confirm, another (aio-pika) publishes a small persistent message every ``interval`` with
a confirm and consumes them. Used by tests/integration/test_large_messages.py (a bound) and
benchmarks/large_message.py (side by side with RabbitMQ)."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field

import aio_pika
import pika

BASELINE = 20  # small messages published before the large one starts
AFTERWARDS = 60  # keep publishing small ones until at least this many in all


@dataclass
class SideTraffic:
    """The large publish's start and confirm times, and per small message (sent at, latency) samples."""

    start: float = 0.0
    end: float = 0.0
    delivered: list[tuple[float, float]] = field(default_factory=list)  # publish -> deliver
    confirmed: list[tuple[float, float]] = field(default_factory=list)  # publish -> confirm

    def during(self, samples: list[tuple[float, float]]) -> list[float]:
        """Latencies (ms, sorted) of the small messages published while the large one was in flight."""
        return sorted(1000 * lat for at, lat in samples if self.start <= at <= self.end)

    def summary(self) -> dict[str, float]:
        out = {"large publish+confirm s": self.end - self.start}
        for name, samples in (("deliver", self.delivered), ("confirm", self.confirmed)):
            during = self.during(samples)
            if during:
                out[f"{name} median ms"] = statistics.median(during)
                out[f"{name} max ms"] = during[-1]
        return out


def run(url: str, size: int, interval: float = 0.01) -> SideTraffic:
    """One round against the broker at ``url`` (queues named with a uuid, deleted afterwards)."""
    tag = uuid.uuid4().hex[:8]
    large_queue, small_queue = f"lm-large-{tag}", f"lm-small-{tag}"
    result = SideTraffic()
    done = threading.Event()

    def publish_large() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            channel = connection.channel()
            channel.queue_declare(large_queue, durable=True)
            channel.confirm_delivery()
            body = b"L" * size
            result.start = time.monotonic()
            channel.basic_publish("", large_queue, body, pika.BasicProperties(delivery_mode=2))
            result.end = time.monotonic()
            channel.queue_delete(large_queue)
        finally:
            done.set()
            connection.close()

    async def small() -> None:
        connection = await aio_pika.connect(url)
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(small_queue, durable=True)
        sent: dict[int, float] = {}

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            n = int(message.body)
            result.delivered.append((sent[n], time.monotonic() - sent[n]))
            await message.ack()

        await queue.consume(on_message)
        thread = threading.Thread(target=publish_large, daemon=True)
        n = 0
        while not done.is_set() or n < AFTERWARDS:
            if n == BASELINE:
                thread.start()
            sent[n] = time.monotonic()
            await channel.default_exchange.publish(
                aio_pika.Message(str(n).encode(), delivery_mode=2), routing_key=small_queue
            )
            result.confirmed.append((sent[n], time.monotonic() - sent[n]))
            n += 1
            await asyncio.sleep(interval)
        deadline = time.monotonic() + 30
        while len(result.delivered) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await queue.delete(if_unused=False, if_empty=False)
        await connection.close()
        thread.join(60)

    asyncio.run(small())
    return result
