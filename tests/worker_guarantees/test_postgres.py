"""Exactly-once on PostgreSQL (psycopg 3): repeats and two copies of one key in flight at once."""

from __future__ import annotations

import pytest

from helpers import async_wait_for
from mailslot.worker import PostgresInbox, Worker

from .helpers import publish_keyed, queue_depth, running

pytestmark = pytest.mark.timeout(60)


async def test_postgres_exactly_once_with_concurrent_copies_of_a_key(broker_url, channel, pg):
    import psycopg

    dsn, prefix = pg
    effects = f"{prefix}effects"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {effects} (k TEXT, redelivered BOOLEAN)")
    inbox = PostgresInbox(dsn, table_prefix=prefix)

    def handler(job):
        job.db.execute(f"INSERT INTO {effects} VALUES (%s, %s)", (job.key, job.redelivered))
        job.db.execute("SELECT pg_sleep(0.05)")  # keep the transaction open while the copy arrives
        if job.key == "fail-once" and not job.redelivered:
            raise RuntimeError("transient")

    keys = [f"k{i}" for i in range(10)]
    # every key twice, back to back: with 8 in flight the copies are processed concurrently
    await publish_keyed(channel, "pgq", [k for k in keys for _ in (0, 1)] + ["fail-once"])
    # two workers (two processes' worth: each serializes only its own copies of a key), so copies of a
    # key meet in PostgreSQL, where the second waits on the first's inbox row
    w1, w2 = (Worker(broker_url, "pgq", handler, guarantee="exactly-once", inbox=inbox, concurrency=4)
              for _ in range(2))
    async with running(w1), running(w2):
        await async_wait_for(lambda: sum(w.stats.handled + w.stats.already_processed for w in (w1, w2)) == 21,
                         timeout=30)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT k, count(*) FROM {effects} GROUP BY k ORDER BY k").fetchall()
    assert rows == sorted([(k, 1) for k in [*keys, "fail-once"]])
    assert w1.stats.already_processed + w2.stats.already_processed == 10
    assert w1.stats.failed + w2.stats.failed == 1
    assert await queue_depth(channel, "pgq") == 0
