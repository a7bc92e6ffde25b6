"""The exactly-once inbox in a PostgreSQL database, with psycopg 3 (``pip install 'mailslot[worker]'``).

Each in-flight message uses its own connection. The inbox key is inserted first in the transaction
(``INSERT ... ON CONFLICT DO NOTHING``): a second delivery of the same key waits on the first one's row
lock and, once that commits, finds the key and is acknowledged without running the handler; if the first
rolls back, the second runs it.
"""

from __future__ import annotations

from typing import Any

from . import _sql

SCHEMA = """
CREATE TABLE IF NOT EXISTS {inbox} (
    key TEXT PRIMARY KEY,
    processed_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS {outbox} (
    key TEXT NOT NULL,
    idx INTEGER NOT NULL,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body BYTEA NOT NULL,
    headers TEXT,
    out_key TEXT,
    PRIMARY KEY (key, idx)
);
"""


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("PostgresInbox needs psycopg 3: pip install 'mailslot[worker]'") from exc
    return psycopg


class PostgresInbox:
    """``PostgresInbox("postgresql://user@host/db")``: creates ``mailslot_inbox`` / ``mailslot_outbox``
    if missing. Commits are as durable as the server's ``synchronous_commit`` makes them (on by default)."""

    def __init__(self, dsn: str, *, table_prefix: str = "mailslot_") -> None:
        if not table_prefix.replace("_", "").isalnum():
            raise ValueError("table_prefix: letters, digits and _ only")
        self.dsn = dsn
        self.inbox_table = f"{table_prefix}inbox"
        self.outbox_table = f"{table_prefix}outbox"
        with self._connect() as conn:
            # Two workers starting at once may race on CREATE TABLE IF NOT EXISTS; a lock serializes them.
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (self.inbox_table,))
            try:
                for statement in SCHEMA.format(inbox=self.inbox_table, outbox=self.outbox_table).split(";"):
                    if statement.strip():
                        conn.execute(statement)
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (self.inbox_table,))

    def _connect(self) -> Any:
        return _psycopg().connect(self.dsn, autocommit=True)

    def session(self) -> _sql.SqlInboxSession:
        return _sql.SqlInboxSession(self._connect(), p="%s", begin="BEGIN", inbox=self.inbox_table,
                                    outbox=self.outbox_table)

    def prune(self, older_than: float) -> int:
        with self._connect() as conn:
            return _sql.prune(conn, self.inbox_table, "%s", older_than)

    def __repr__(self) -> str:
        return f"PostgresInbox({self.dsn!r})"
