"""mailslot.client vs aio-pika: persistent, confirmed publishing, side by side on the same broker.

    /work/venv/bin/python benchmarks/client_vs_aio_pika.py [--count 20000] [--rounds 3] [--size 256]
        [--window 1000] [--targets rabbitmq,mailslot]

Each round publishes ``--count`` persistent ``--size``-octet messages to a fresh durable queue and stops the
clock when the last confirm arrived:

* mailslot.client: ``Channel.publish_many(messages, window=W)`` (W unconfirmed in flight, pipelined);
* aio-pika: the best reasonable pattern, a channel with publisher_confirms and W concurrent
  ``exchange.publish`` calls at a time (``asyncio.gather``); a sequential await-per-publish loop is far slower.

Targets: the RabbitMQ on 127.0.0.1:5672 and a mailslot subprocess (BrokerProcess, segments store, fsync'd).
Rounds alternate the clients; prints the median msg/s of each and the ratio (the reference is measured in
the same run, never a stored number). Not a test: never run by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import aio_pika

from mailslot import client
from mailslot.bench.broker_process import BrokerProcess

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/%2F"


async def run_mailslot_client(url: str, count: int, size: int, window: int) -> float:
    q = f"bench-client-{uuid.uuid4().hex[:8]}"
    async with await client.connect(url) as conn:
        ch = await conn.channel()
        await ch.declare_queue(q, durable=True)
        body = b"x" * size
        messages = [("", q, body)] * count
        t0 = time.perf_counter()
        await ch.publish_many(messages, window=window, persistent=True)
        elapsed = time.perf_counter() - t0
        assert (await ch.declare_queue(q, passive=True))[1] == count
        await ch.delete_queue(q)
    return count / elapsed


async def run_aio_pika(url: str, count: int, size: int, window: int) -> float:
    q = f"bench-aiopika-{uuid.uuid4().hex[:8]}"
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        queue = await ch.declare_queue(q, durable=True)
        body = b"x" * size
        ex = ch.default_exchange
        t0 = time.perf_counter()
        for start in range(0, count, window):
            n = min(window, count - start)
            await asyncio.gather(*(
                ex.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=q)
                for _ in range(n)))
        elapsed = time.perf_counter() - t0
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await conn.close()
    return count / elapsed


async def bench_target(name: str, url: str, args: argparse.Namespace) -> tuple[float, float]:
    ours: list[float] = []
    theirs: list[float] = []
    # warm-up (connection set-up paths, broker JIT-less caches, page cache): not counted
    await run_mailslot_client(url, min(2000, args.count), args.size, args.window)
    await run_aio_pika(url, min(2000, args.count), args.size, args.window)
    for r in range(args.rounds):
        ours.append(await run_mailslot_client(url, args.count, args.size, args.window))
        theirs.append(await run_aio_pika(url, args.count, args.size, args.window))
        print(f"  {name} round {r + 1}: mailslot.client {ours[-1]:>9,.0f} msg/s   aio-pika {theirs[-1]:>8,.0f} msg/s",
              flush=True)
    return statistics.median(ours), statistics.median(theirs)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--targets", default="rabbitmq,mailslot")
    ap.add_argument("--store", default="segments", help="mailslot subprocess store")
    args = ap.parse_args()
    print(f"{args.count} persistent {args.size} B messages, confirms, window {args.window}, "
          f"{args.rounds} rounds, median")
    results: dict[str, tuple[float, float]] = {}
    for target in args.targets.split(","):
        if target == "rabbitmq":
            results["RabbitMQ 5672"] = await bench_target("rabbitmq", RABBITMQ, args)
        elif target == "mailslot":
            with BrokerProcess(store=args.store) as broker:
                results[f"mailslot ({args.store})"] = await bench_target("mailslot", broker.url, args)
    print()
    print(f"{'broker':<22}{'mailslot.client':>17}{'aio-pika':>12}{'ratio':>9}")
    for name, (ours, theirs) in results.items():
        print(f"{name:<22}{ours:>15,.0f}/s{theirs:>10,.0f}/s{ours / theirs:>8.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
