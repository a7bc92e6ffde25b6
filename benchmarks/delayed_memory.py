"""Delayed-message memory benchmark (not a test): are scheduled messages kept on disk, not in RAM?

    python benchmarks/delayed_memory.py [--count 100000] [--size 1024] [--min-delay 10] [--max-delay 60]
                                        [--store segments] [--no-drain] [--limit-mb 40]

Starts a fresh mailslot in a child process (``python -m mailslot serve``, temp data dir), declares a durable
``x-delayed-message`` exchange (x-delayed-type direct) bound to a durable queue, warms the broker up with a
few thousand short-delay messages (consumed), then publishes --count persistent messages of --size bytes
with ``x-delay`` uniform in [--min-delay, --max-delay] seconds, with publisher confirms (window 1000).

Prints the broker's RSS before and after scheduling, the growth per scheduled message, and the growth as a
ratio of the bodies' total size (the reference: what a broker holding every body in memory would need at
least). Unless --no-drain, then consumes every message as it falls due and checks that each arrives once
and not before its due time, with the peak RSS while releasing. Passes when the scheduling growth is under
--limit-mb.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import struct
import sys
import time
from pathlib import Path

import aio_pika

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _broker import MailslotProcess
from _common import MB, RssSampler

WINDOW = 1000
STAMP = struct.Struct(">Qd")  # id, due (epoch seconds, as the publisher computed it)


async def declare(channel: aio_pika.abc.AbstractChannel) -> tuple[aio_pika.abc.AbstractExchange, str]:
    exchange = await channel.declare_exchange(
        "bench-delayed", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"}
    )
    queue = await channel.declare_queue("bench-delayed-q", durable=True)
    await queue.bind(exchange, "due")
    return exchange, queue.name


async def publish(exchange: aio_pika.abc.AbstractExchange, delays_ms: list[int], size: int, first: int) -> float:
    padding = b"\x00" * (size - STAMP.size)
    sem = asyncio.Semaphore(WINDOW)
    start = time.monotonic()

    async def one(i: int, delay_ms: int) -> None:
        async with sem:
            body = STAMP.pack(first + i, time.time() + delay_ms / 1000) + padding
            await exchange.publish(
                aio_pika.Message(body, headers={"x-delay": delay_ms}, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="due",
            )

    await asyncio.gather(*(one(i, d) for i, d in enumerate(delays_ms)))
    return len(delays_ms) / (time.monotonic() - start)


class Consumer:
    """Consumes and acks as messages fall due, checking each arrives once and not before its due time."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.duplicates = 0
        self.early = 0

    async def run(self, channel: aio_pika.abc.AbstractChannel, queue: str, until: int, timeout: float) -> None:
        done = asyncio.Event()

        def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            i, due = STAMP.unpack_from(message.body)
            if time.time() < due:
                self.early += 1
            if i in self.seen:
                self.duplicates += 1
            self.seen.add(i)
            if len(self.seen) >= until:
                done.set()

        q = await channel.get_queue(queue)
        tag = await q.consume(on_message, no_ack=True)  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            pass
        await q.cancel(tag)


async def main(args: argparse.Namespace) -> int:
    broker = MailslotProcess(store=args.store)
    broker.start()
    rss = RssSampler(broker.pid, interval=0.25)
    try:
        connection = await aio_pika.connect(broker.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange, queue = await declare(channel)
            consumer_channel = await connection.channel()
            consumer = Consumer()
            warm = 5_000  # warm the broker up (code paths, buffers, allocator) on short delays, then consume
            await publish(exchange, [random.randint(200, 1_000) for _ in range(warm)], args.size, 0)
            await consumer.run(consumer_channel, queue, warm, timeout=30)
            assert len(consumer.seen) == warm, f"warm-up: {len(consumer.seen)}/{warm} arrived"
            await asyncio.sleep(2)
            before = max(rss.sample(), rss.sample())
            rng = random.Random(7)
            delays = [rng.randint(args.min_delay * 1000, args.max_delay * 1000) for _ in range(args.count)]
            total = warm + args.count
            # Consumers are there all along, so what falls due while scheduling does not pile up in the queue.
            draining = asyncio.create_task(consumer.run(consumer_channel, queue, total, args.max_delay + 120))
            rss.start()
            t0 = time.monotonic()
            rate = await publish(exchange, delays, args.size, warm)
            scheduled_in = time.monotonic() - t0
            await asyncio.sleep(2)  # group commits and GC settle
            after = max(rss.sample(), rss.sample())
            released = len(consumer.seen) - warm
            growth = after - before
            waiting = args.count - released
            bodies = waiting * args.size
            print(f"store: {args.store}; {args.count:,} delayed persistent messages of {args.size} B, x-delay "
                  f"{args.min_delay}-{args.max_delay} s, confirms (window {WINDOW})")
            print(f"scheduling: {rate:,.0f} msg/s confirmed ({scheduled_in:.1f} s); {released:,} already due and "
                  f"consumed, {waiting:,} scheduled")
            print(f"RSS before: {before / MB:.1f} MB   after scheduling: {after / MB:.1f} MB   "
                  f"growth: {growth / MB:.1f} MB = {growth / max(waiting, 1):.0f} B per scheduled message")
            print(f"growth / bodies of the scheduled messages ({bodies / MB:.1f} MB): {growth / max(bodies, 1):.3f}x")
            ok = growth < args.limit_mb * MB
            if args.drain:
                await draining
                got = len(consumer.seen) - warm
                print(f"drain: {got:,}/{args.count:,} arrived, {consumer.duplicates} duplicates, "
                      f"{consumer.early} before due; peak RSS while scheduling and releasing {rss.peak() / MB:.1f} MB")
                ok = ok and got == args.count and not consumer.duplicates and not consumer.early
            else:
                draining.cancel()
            print("PASS" if ok else "FAIL", f"(growth limit {args.limit_mb} MB)")
            return 0 if ok else 1
    finally:
        rss.stop()
        broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--min-delay", type=int, default=10, help="seconds")
    parser.add_argument("--max-delay", type=int, default=60, help="seconds")
    parser.add_argument("--store", default="segments", choices=["segments", "sqlite"])
    parser.add_argument("--limit-mb", type=float, default=40.0)
    parser.add_argument("--no-drain", dest="drain", action="store_false")
    sys.exit(asyncio.run(main(parser.parse_args())))
