"""The exactly-once inbox in a SQLite database (the user's own file, next to their tables).

Every in-flight message gets its own connection; ``BEGIN IMMEDIATE`` takes SQLite's single write lock
at the start of the transaction, so the writes of concurrent messages are serialized (WAL lets readers
go on meanwhile) and two deliveries of one key can never both pass the inbox check.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from . import _sql

SCHEMA = """
CREATE TABLE IF NOT EXISTS {inbox} (
    key TEXT PRIMARY KEY,
    processed_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {outbox} (
    key TEXT NOT NULL,
    idx INTEGER NOT NULL,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body BLOB NOT NULL,
    headers TEXT,
    out_key TEXT,
    PRIMARY KEY (key, idx)
);
"""


class SQLiteInbox:
    """``SQLiteInbox("app.db")``: creates ``mailslot_inbox`` / ``mailslot_outbox`` if missing.

    ``synchronous="FULL"`` (default) fsyncs each commit, so a processed key survives a power loss, not only
    a process crash; "NORMAL" in WAL mode survives a crash of the process but may lose the last commits
    on power loss (and the worker would then run those messages again: at-least-once, not exactly-once).
    ``busy_timeout`` (seconds) is how long a transaction waits for the write lock.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", busy_timeout: float = 60.0,
                 table_prefix: str = "mailslot_") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        if not table_prefix.replace("_", "").isalnum():
            raise ValueError("table_prefix: letters, digits and _ only")
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout
        self.inbox_table = f"{table_prefix}inbox"
        self.outbox_table = f"{table_prefix}outbox"
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA.format(inbox=self.inbox_table, outbox=self.outbox_table))
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; the session issues BEGIN IMMEDIATE / COMMIT.
        # check_same_thread=False: a session is used by one message at a time, from a pool thread.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    def session(self) -> _sql.SqlInboxSession:
        return _sql.SqlInboxSession(self._connect(), p="?", begin="BEGIN IMMEDIATE", inbox=self.inbox_table,
                                    outbox=self.outbox_table)

    def prune(self, older_than: float) -> int:
        conn = self._connect()
        try:
            return _sql.prune(conn, self.inbox_table, "?", older_than)
        finally:
            conn.close()

    def __repr__(self) -> str:
        return f"SQLiteInbox({self.path!r})"
