"""mailslot.worker: run a handler over a queue with a chosen delivery guarantee (at-most-once,
at-least-once, exactly-once effects through an inbox in your database). See docs/exactly-once.md.

    from mailslot.worker import SQLiteInbox, Worker, run_worker

    def handle(job):                      # job.db: the open transaction; job.key: the message's key
        job.db.execute("INSERT INTO orders (id) VALUES (?)", (job.body.decode(),))
        job.publish("invoices", job.body)  # published after the commit, with a key derived from job.key

    run_worker(Worker("amqp://localhost", "orders", handle, guarantee="exactly-once",
                      inbox=SQLiteInbox("app.db")))
"""

from __future__ import annotations

from .api import DEDUP_HEADER, Guarantee, Handler, Inbox, InboxSession, Job, Output, derive_key, message_key
from .inbox_postgres import PostgresInbox
from .inbox_sqlite import SQLiteInbox
from .runner import Worker, WorkerStats, run_worker

__all__ = [
    "DEDUP_HEADER",
    "Guarantee",
    "Handler",
    "Inbox",
    "InboxSession",
    "Job",
    "Output",
    "PostgresInbox",
    "SQLiteInbox",
    "Worker",
    "WorkerStats",
    "derive_key",
    "message_key",
    "run_worker",
]
