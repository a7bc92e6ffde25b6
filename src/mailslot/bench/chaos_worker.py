"""The worker process of the chaos runs (``python -m mailslot.bench.chaos_worker``): a
:class:`mailslot.worker.Worker` whose effect is one row per handled message in ``effects`` (SQLite or
PostgreSQL), with one optional forced crash at the worst point for its guarantee:

- at-most-once: SIGKILL inside the handler, before the effect (the message was already acked: lost);
- at-least-once: SIGKILL after the effect committed, before the ack (it runs again: a duplicate);
- exactly-once: SIGKILL after the transaction committed, before the ack (a repeat the inbox catches).

The crash happens once per run (a marker file remembers it) at the first delivery of ``--crash-key``.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

from mailslot.worker import Guarantee, Job, PostgresInbox, SQLiteInbox, Worker, run_worker


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Effects:
    """Writes the effect row: in the worker's transaction (exactly-once) or on its own connection."""

    def __init__(self, db: str, table: str, crash_key: str | None, marker: Path) -> None:
        self.db = db
        self.table = table
        self.crash_key = crash_key
        self.marker = marker
        self.local = threading.local()
        self.p = "?" if db.startswith("sqlite:") else "%s"

    def _own_connection(self) -> Any:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            if self.db.startswith("sqlite:"):
                conn = sqlite3.connect(self.db[7:], timeout=60, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA synchronous=FULL")
            else:
                import psycopg

                conn = psycopg.connect(self.db[9:], autocommit=True)
            self.local.conn = conn
        return conn

    def crash_now(self, job: Job) -> bool:
        if job.key != self.crash_key or self.marker.exists():
            return False
        self.marker.write_text("crashed")
        return True

    def write(self, job: Job, conn: Any) -> None:
        attempt = (job.headers.get("attempt") or 0)
        conn.execute(f"INSERT INTO {self.table} (key, attempt, redelivered) VALUES ({self.p}, {self.p}, {self.p})",
                     (job.key, int(attempt), int(job.redelivered)))

    def handler_for(self, guarantee: Guarantee) -> Any:
        if guarantee is Guarantee.EXACTLY_ONCE:
            return lambda job: self.write(job, job.db)

        def handle(job: Job) -> None:
            if guarantee is Guarantee.AT_MOST_ONCE and self.crash_now(job):
                _die()
            self.write(job, self._own_connection())  # autocommit: the effect is durable here
            if guarantee is Guarantee.AT_LEAST_ONCE and self.crash_now(job):
                _die()
        return handle

    def after_commit(self, job: Job) -> None:
        if self.crash_now(job):
            _die()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, action="append", help="a broker URL; repeated: the nodes of a cluster")
    ap.add_argument("--queue", required=True)
    ap.add_argument("--guarantee", required=True, choices=[g.value for g in Guarantee])
    ap.add_argument("--db", required=True, help="sqlite:PATH or postgres:DSN")
    ap.add_argument("--table", default="effects")
    ap.add_argument("--inbox-prefix", default="mailslot_")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--crash-key")
    ap.add_argument("--marker", default="crash.marker")
    args = ap.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # a stuck run: `kill -USR1 <pid>` dumps every thread's stack
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    guarantee = Guarantee(args.guarantee)
    effects = Effects(args.db, args.table, args.crash_key, Path(args.marker))
    inbox: SQLiteInbox | PostgresInbox | None = None
    if guarantee is Guarantee.EXACTLY_ONCE:
        inbox = (SQLiteInbox(args.db[7:], table_prefix=args.inbox_prefix) if args.db.startswith("sqlite:")
                 else PostgresInbox(args.db[9:], table_prefix=args.inbox_prefix))
    urls = args.url if len(args.url) > 1 else args.url[0]
    worker = Worker(urls, args.queue, effects.handler_for(guarantee), guarantee=guarantee, inbox=inbox,
                    concurrency=args.concurrency, shutdown_timeout=10,
                    after_commit=effects.after_commit if guarantee is Guarantee.EXACTLY_ONCE else None)
    print("chaos worker ready", file=sys.stderr, flush=True)
    run_worker(worker)


if __name__ == "__main__":
    main()
