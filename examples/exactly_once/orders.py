"""Exactly-once effects: every order becomes exactly one row in orders.db and one invoice message, even
when the producer publishes an order twice (a retry after a lost confirm) or the worker is killed and the
broker redelivers.

    python examples/exactly_once/orders.py [AMQP_URL] [DB_FILE]

or, as a long-running worker on your own queue:

    mailslot worker orders:handle -q orders --guarantee exactly-once --sqlite orders.db   # from this directory
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys

import mailslot.client
from mailslot.worker import DEDUP_HEADER, SQLiteInbox, Worker


def setup(db_file: str) -> SQLiteInbox:
    inbox = SQLiteInbox(db_file)  # creates mailslot_inbox / mailslot_outbox next to your tables
    with sqlite3.connect(db_file) as db:
        db.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, amount INTEGER)")
    return inbox


def handle(job):
    """Runs inside the worker's database transaction: the row and the inbox key commit together."""
    order_id, amount = job.body.decode().split(":")
    job.db.execute("INSERT INTO orders (id, amount) VALUES (?, ?)", (order_id, int(amount)))
    job.publish("invoices", f"invoice for {order_id}".encode())  # sent after the commit, key derived from the order's


async def demo(url: str, db_file: str, count: int = 10) -> list[tuple[str, int]]:
    inbox = setup(db_file)
    async with await mailslot.client.connect(url) as conn:
        ch = await conn.channel()
        await ch.declare_queue("orders")
        await ch.declare_queue("invoices")
        await ch.confirm_select()
        for i in range(count):
            copies = 2 if i % 3 == 0 else 1  # every third order is published twice: a producer retry
            for _ in range(copies):
                await ch.publish("", "orders", f"order-{i}:{10 * i}".encode(), headers={DEDUP_HEADER: f"order-{i}"})
        worker = Worker(url, "orders", handle, guarantee="exactly-once", inbox=inbox, concurrency=4)
        run = asyncio.ensure_future(worker.run())
        while worker.stats.handled + worker.stats.already_processed < count + (count + 2) // 3:
            await asyncio.sleep(0.05)
        worker.stop()
        await run
        print(f"handled {worker.stats.handled}, recognised as already processed {worker.stats.already_processed}")
    with sqlite3.connect(db_file) as db:
        rows = db.execute("SELECT id, amount FROM orders ORDER BY amount").fetchall()
    print(f"{len(rows)} rows in orders for {count} orders")
    return rows


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MAILSLOT_URL", "amqp://guest:guest@localhost:5672/%2F")
    asyncio.run(demo(url, sys.argv[2] if len(sys.argv) > 2 else "orders.db"))
