"""Publishing to delayed-message and deduplicating exchanges in a cluster (not a test; prints ratios).

    flock /tmp/mailslot-bench.lock python benchmarks/cluster_exchanges.py [--rounds 3] [--messages 4000]

One aio-pika publisher (confirms, window 500, 256 B persistent messages, a new key each for the
deduplicating exchange, ``x-delay`` 10 minutes for the delayed one) against:

* single: one broker, ``--store postgres`` without ``--cluster`` (the reference);
* owner: node a of a two-node cluster (link on a Unix socket), which declared the exchange (owns the
  deduplicating exchange's window; holds its own delayed schedule);
* other: node b of the same cluster: a deduplicating publish is forwarded to a and confirmed after a's
  COMMIT; a delayed publish is written to b's own schedule (no forwarding).

Rounds alternate the order. Reported: medians of messages a second and per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid

import aio_pika
import psycopg
from psycopg import sql

from mailslot.bench.broker_process import BrokerProcess

DSN = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "benchmark-cluster-secret-0123456789"
WINDOW = 500
BODY = b"x" * 256


async def _declare(url: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        dedup = await channel.declare_exchange("once", "x-message-deduplication", durable=True,
                                               arguments={"x-cache-size": 10_000_000})
        later = await channel.declare_exchange("later", "x-delayed-message", durable=True,
                                               arguments={"x-delayed-type": "direct"})
        queue = await channel.declare_queue("sink", durable=True)
        await queue.bind(dedup)
        await queue.bind(later, "k")


async def _rate(url: str, exchange: str, count: int, tag: str) -> float:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)

        def message(i: int) -> aio_pika.Message:
            headers = {"x-delay": 600_000} if exchange == "later" else {"x-deduplication-header": f"{tag}-{i}"}
            return aio_pika.Message(BODY, delivery_mode=2, headers=headers)

        for attempt in range(200):  # the other node knows the exchange and its owner (sync, lease poll)
            try:
                await target.publish(message(-1 - attempt), routing_key="k", mandatory=False)
                break
            except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.ChannelClosed):
                await asyncio.sleep(0.1)
                channel = await connection.channel(publisher_confirms=True)
                target = await channel.get_exchange(exchange, ensure=False)
        started = time.perf_counter()
        for first in range(0, count, WINDOW):
            await asyncio.gather(*(target.publish(message(i), routing_key="k", mandatory=False)
                                   for i in range(first, min(count, first + WINDOW))))
        return count / (time.perf_counter() - started)


def _schema() -> str:
    name = "bench_exchanges_" + uuid.uuid4().hex[:12]
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    return name


def _drop(schema: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=4000)
    args = parser.parse_args()
    single_schema, cluster_schema = _schema(), _schema()
    links = tempfile.mkdtemp(prefix="mailslot-links-")

    processes: list[BrokerProcess] = []

    def start(*extra: str) -> BrokerProcess:
        process = BrokerProcess(store="postgres", extra_args=("--postgres-dsn", DSN, *extra))
        processes.append(process)
        return process.start()

    def node(name: str) -> BrokerProcess:
        return start("--postgres-schema", cluster_schema, "--node-name", name, "--cluster",
                     "--cluster-link", f"unix:{links}/{name}.sock", "--cluster-secret", SECRET)

    results: dict[str, list[float]] = {}
    try:
        single = start("--postgres-schema", single_schema)
        a = node("a")
        b = node("b")
        await _declare(single.url)
        await _declare(a.url)
        cases = [(f"{exchange} {where}", url, exchange) for exchange in ("once", "later")
                 for where, url in (("single", single.url), ("owner", a.url), ("other", b.url))]
        for round_no in range(args.rounds):
            for name, url, exchange in cases if round_no % 2 == 0 else list(reversed(cases)):
                rate = await _rate(url, exchange, args.messages, f"{name}-{round_no}")
                results.setdefault(name, []).append(rate)
    finally:
        for process in processes:
            process.stop()
        _drop(single_schema)
        _drop(cluster_schema)
    for name, rates in results.items():
        print(f"{name:14} median {statistics.median(rates):8.0f} msg/s   rounds {', '.join(f'{r:.0f}' for r in rates)}")
    for exchange in ("once", "later"):
        for where in ("owner", "other"):
            ratios = [x / y for x, y in zip(results[f"{exchange} {where}"], results[f"{exchange} single"], strict=True)]
            print(f"{exchange} {where} / single: median {statistics.median(ratios):.2f}x "
                  f"({', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    asyncio.run(main())
