"""What a 100 MB publish costs everyone else (not a test): while one connection publishes one large
persistent message with a confirm, another publishes a small persistent message every 10 ms (with a
confirm) and consumes them. Prints, for the small messages sent while the large one was in flight, the
publish -> deliver and publish -> confirm latencies, on mailslot and on the reference RabbitMQ in the same
run, alternating, median over the rounds.

    flock /tmp/mailslot-bench.lock python benchmarks/large_message.py [--size 100] [--rounds 5]
    python benchmarks/large_message.py --tree /tmp/before/src   # mailslot from another source tree

The broker is ``mailslot serve`` (uvloop, segment log) in a subprocess with --max-message-size 128 MiB;
RabbitMQ is the one on 127.0.0.1:5672 (3.10: 128 MiB default), with uuid-named queues deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
import uuid

import aio_pika
import pika

from mailslot.bench.broker_process import BrokerProcess

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
INTERVAL = 0.01  # one small message every 10 ms


def one_round(url: str, size: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    big_queue, small_queue = f"lm-big-{tag}", f"lm-small-{tag}"
    window: list[float] = []
    done = threading.Event()

    def publish_big() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        channel.queue_declare(big_queue, durable=True)
        channel.confirm_delivery()
        body = b"B" * size
        window.append(time.monotonic())
        channel.basic_publish("", big_queue, body, pika.BasicProperties(delivery_mode=2))
        window.append(time.monotonic())
        done.set()
        channel.queue_delete(big_queue)
        connection.close()

    async def small() -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        connection = await aio_pika.connect(url)
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(small_queue, durable=True)
        sent: dict[int, float] = {}
        delivered: list[tuple[float, float]] = []
        confirmed: list[tuple[float, float]] = []

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            n = int(message.body)
            delivered.append((sent[n], time.monotonic() - sent[n]))
            await message.ack()

        await queue.consume(on_message)
        thread = threading.Thread(target=publish_big)
        n = 0
        while not done.is_set() or n < 60:
            if n == 20:
                thread.start()
            sent[n] = time.monotonic()
            await channel.default_exchange.publish(aio_pika.Message(str(n).encode(), delivery_mode=2), routing_key=small_queue)
            confirmed.append((sent[n], time.monotonic() - sent[n]))
            n += 1
            await asyncio.sleep(INTERVAL)
        while len(delivered) < n:
            await asyncio.sleep(0.01)
        await queue.delete(if_unused=False, if_empty=False)
        await connection.close()
        thread.join()
        return delivered, confirmed

    delivered, confirmed = asyncio.run(small())
    start, end = window
    out = {"big publish+confirm s": end - start}
    for name, samples in (("deliver", delivered), ("confirm", confirmed)):
        during = sorted(1000 * lat for at, lat in samples if start <= at <= end)
        if during:
            out[f"{name} median ms"] = statistics.median(during)
            out[f"{name} max ms"] = during[-1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=100, help="MB")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tree", help="run mailslot from this source tree (PYTHONPATH) instead")
    args = ap.parse_args()
    size = args.size * 1_000_000
    results: dict[str, list[dict[str, float]]] = {"mailslot": [], "rabbitmq": []}
    for r in range(args.rounds):
        for name in ("mailslot", "rabbitmq") if r % 2 == 0 else ("rabbitmq", "mailslot"):
            if name == "rabbitmq":
                results[name].append(one_round(RABBITMQ_URL, size))
                continue
            env = os.environ.get("PYTHONPATH")
            if args.tree:
                os.environ["PYTHONPATH"] = args.tree
            try:
                with BrokerProcess(extra_args=("--max-message-size", str(128 * 1024 * 1024))) as broker:
                    results[name].append(one_round(broker.url, size))
            finally:
                if env is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = env
            print(f"round {r + 1}: mailslot {results['mailslot'][-1]}", flush=True)
    keys = sorted({k for rounds in results.values() for row in rounds for k in row})
    print(f"\n{args.size} MB publish, small messages every {INTERVAL * 1000:.0f} ms meanwhile; medians of {args.rounds} rounds")
    print(f"{'':28} {'mailslot':>10} {'rabbitmq':>10} {'ratio':>7}")
    for key in keys:
        m = statistics.median(row[key] for row in results["mailslot"] if key in row)
        q = statistics.median(row[key] for row in results["rabbitmq"] if key in row)
        print(f"{key:28} {m:10.1f} {q:10.1f} {m / q if q else float('nan'):7.2f}")


if __name__ == "__main__":
    main()
