"""Opening a database: pragmas and numbered migrations (``migrations/NNNN_name.sql``).

``PRAGMA user_version`` holds the number of the last migration applied. Opening runs every newer
migration in one ``BEGIN IMMEDIATE`` transaction, so two connections opening a fresh file at once
cannot both apply them; a file newer than this code is refused rather than misread.
"""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

# Bounds, each with its reason:
# synchronous=FULL: in WAL mode a commit fsyncs the WAL, so commit() returning means on disk
#   (NORMAL would only fsync at checkpoints and could lose the last commits on power loss).
SYNCHRONOUS = "FULL"
# Checkpoint the WAL into the database every 4096 pages (16 MiB at 4 KiB pages) instead of SQLite's
# 1000: fewer, larger checkpoints, and the checkpoint's own fsync of the main file is paid less often.
WAL_AUTOCHECKPOINT_PAGES = 4096
# After a checkpoint, truncate the WAL file back to at most 64 MiB so one burst does not keep a huge
# file on disk forever.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
# Page cache per connection, in KiB (negative = KiB in SQLite): 32 MiB keeps the B-tree interior pages
# and the hot tail of busy queues in memory.
CACHE_SIZE_KIB = 32 * 1024
# A second connection (the metadata store shares the file) waits this long for the write lock; within
# one thread it never has to, this only guards an external reader such as the sqlite3 shell.
BUSY_TIMEOUT_MS = 5000


class StoreFormatError(RuntimeError):
    """The database was written by a newer mailslot (its schema version is unknown here)."""


def migrations() -> list[tuple[int, str]]:
    """``(number, sql)`` of every shipped migration, in order."""
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, found {numbers}")
    return found


def schema_version() -> int:
    """The schema version this code writes (the number of the last migration)."""
    return len(migrations())


def _statements(script: str) -> list[str]:
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf)
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
    ):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buf!r}")
    return out


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path``."""
    # isolation_level=None: no implicit transactions, the stores issue BEGIN/COMMIT themselves.
    # check_same_thread=False: the broker may create the store in one thread and run its event loop in
    # another; it still calls it from one thread at a time (docs/storage-format.md).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{path}: cannot switch to WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA cache_size = -{CACHE_SIZE_KIB}")
        # The delete trigger of migration 6 (shared bodies) must also fire for the rows INSERT OR REPLACE
        # deletes, which SQLite does only with recursive triggers on.
        conn.execute("PRAGMA recursive_triggers = ON")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    todo = migrations()
    latest = len(todo)
    if conn.execute("PRAGMA user_version").fetchone()[0] == latest:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # re-read under the write lock
        if version > latest:
            raise StoreFormatError(
                f"{path} has schema version {version}; this mailslot knows up to {latest}"
            )
        for number, sql in todo:
            if number > version:
                for statement in _statements(sql):
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {latest}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
