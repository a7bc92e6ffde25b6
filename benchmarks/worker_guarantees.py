"""What each worker guarantee costs: messages per second through mailslot.worker when the effect is one
row in SQLite or PostgreSQL.

    PYTHONPATH=src /work/venv/bin/python benchmarks/worker_guarantees.py [--count 3000] [--rounds 3]
        [--concurrency 16] [--no-postgres]

Each round fills a durable queue with ``--count`` persistent keyed messages on a mailslot subprocess
(segments store, fsync'd), then times a worker draining it: its handler inserts one row (at-most-once /
at-least-once: on its own autocommit connection, i.e. one durable commit per message; exactly-once: in the
worker's transaction, with the inbox row). Also measured, as the reference in the same run: a bare
mailslot.client consumer that only acks (no handler, no database). Prints the median msg/s of each and the
ratio to at-least-once on the same database. SQLite runs with synchronous=FULL (fsync per commit).
Not a test: never run by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import mailslot.client
from mailslot.bench.broker_process import BrokerProcess
from mailslot.worker import DEDUP_HEADER, Guarantee, PostgresInbox, SQLiteInbox, Worker


async def fill(url: str, queue: str, count: int) -> None:
    async with await mailslot.client.connect(url) as conn:
        ch = await conn.channel()
        await ch.declare_queue(queue)
        await ch.confirm_select()
        for i in range(0, count, 500):
            await asyncio.gather(*(ch.publish("", queue, b"x" * 64, headers={DEDUP_HEADER: f"{queue}-{j}"})
                                   for j in range(i, min(count, i + 500))))


async def bare_consumer(url: str, queue: str, count: int, concurrency: int) -> float:
    async with await mailslot.client.connect(url) as conn:
        ch = await conn.channel()
        start = time.perf_counter()
        got = 0
        async with ch.consume(queue, prefetch=concurrency) as messages:
            async for m in messages:
                await m.ack()
                got += 1
                if got == count:
                    break
        return count / (time.perf_counter() - start)


class Db:
    def __init__(self, kind: str, dsn: str, workdir: Path) -> None:
        self.kind = kind
        self.dsn = dsn
        self.path = workdir / f"bench-{uuid.uuid4().hex[:6]}.db"
        self.prefix = f"bench_{uuid.uuid4().hex[:8]}_"
        self.table = f"{self.prefix}effects"
        self.local = threading.local()
        conn = self.connect()
        if kind == "sqlite":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"CREATE TABLE {self.table} (key TEXT)")
        conn.close()

    def connect(self) -> Any:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
            conn.execute("PRAGMA synchronous=FULL")
            return conn
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)

    def inbox(self) -> Any:
        return SQLiteInbox(self.path, table_prefix=self.prefix) if self.kind == "sqlite" else \
            PostgresInbox(self.dsn, table_prefix=self.prefix)

    def handler(self, guarantee: Guarantee) -> Any:
        p = "?" if self.kind == "sqlite" else "%s"
        sql = f"INSERT INTO {self.table} (key) VALUES ({p})"
        if guarantee is Guarantee.EXACTLY_ONCE:
            return lambda job: job.db.execute(sql, (job.key,))

        def handle(job: Any) -> None:
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = self.connect()
            conn.execute(sql, (job.key,))
        return handle

    def drop(self) -> None:
        if self.kind == "postgres":
            with self.connect() as conn:
                for t in (self.table, f"{self.prefix}inbox", f"{self.prefix}outbox"):
                    conn.execute(f"DROP TABLE IF EXISTS {t}")


async def run_worker(url: str, queue: str, count: int, guarantee: Guarantee, db: Db, concurrency: int) -> float:
    worker = Worker(url, queue, db.handler(guarantee), guarantee=guarantee, concurrency=concurrency,
                    inbox=db.inbox() if guarantee is Guarantee.EXACTLY_ONCE else None)
    task = asyncio.ensure_future(worker.run())
    while worker.stats.received == 0:
        await asyncio.sleep(0.001)
    start = time.perf_counter()
    while worker.stats.handled < count:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - start
    worker.stop()
    await task
    return (count - 1) / elapsed


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    dbs = ["sqlite"] + ([] if args.no_postgres else ["postgres"])
    cases = [("bare consumer (ack only)", None, None)] + [
        (f"{g.value} / {d}", g, d) for d in dbs for g in (Guarantee.AT_MOST_ONCE, Guarantee.AT_LEAST_ONCE,
                                                          Guarantee.EXACTLY_ONCE)]
    rates: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    with tempfile.TemporaryDirectory() as tmp, BrokerProcess(store="segments") as broker:
        for r in range(args.rounds):
            for name, guarantee, kind in cases:
                queue = f"bench-{r}-{uuid.uuid4().hex[:6]}"
                await fill(broker.url, queue, args.count)
                if guarantee is None:
                    rate = await bare_consumer(broker.url, queue, args.count, args.concurrency)
                else:
                    assert kind is not None
                    db = Db(kind, args.postgres, Path(tmp))
                    try:
                        rate = await run_worker(broker.url, queue, args.count, guarantee, db, args.concurrency)
                    finally:
                        db.drop()
                rates[name].append(rate)
                print(f"round {r + 1}: {name:32} {rate:9,.0f} msg/s", flush=True)
    print(f"\n{args.count} messages, concurrency {args.concurrency}, median of {args.rounds} rounds\n")
    print("| case | msg/s | vs at-least-once on the same database |")
    print("|---|---:|---:|")
    for name, _g, kind in cases:
        med = statistics.median(rates[name])
        ref = statistics.median(rates[f"at-least-once / {kind}"]) if kind else None
        print(f"| {name} | {med:,.0f} | {'' if ref is None else f'{med / ref:.2f}x'} |")


if __name__ == "__main__":
    asyncio.run(main())
