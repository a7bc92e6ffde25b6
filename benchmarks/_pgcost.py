"""What a run costs PostgreSQL and the processes around it, shared by the PostgreSQL benchmarks: CPU seconds
of a set of processes (from /proc through psutil), the PostgreSQL backends of a client (by
``application_name``), and the server-wide WAL bytes, WAL flushes and commits between two points.
Imported like ``_broker`` (running a script puts this directory on ``sys.path``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import psycopg
from psycopg import sql


class CpuMeter:
    """CPU seconds of a set of processes between start() and stop(); processes that vanish keep what was read."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.first: dict[int, float] = {}

    @staticmethod
    def _read(pid: int) -> float | None:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        return float(t.user + t.system)

    def start(self) -> None:
        self.first = {pid: v for pid in self.pids() if (v := self._read(pid)) is not None}

    def stop(self) -> float:
        total = 0.0
        for pid in self.pids():
            now = self._read(pid)
            if now is not None:
                total += now - self.first.get(pid, 0.0)  # a process born during the run: all of its CPU
        return total


def postgres_pids() -> list[int]:
    """Every postgres process on this machine (background writers, autovacuum, any client's backend)."""
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "postmaster")]


def backend_pids(dsn: str, application_prefix: str) -> Callable[[], list[int]]:
    """The backends whose ``application_name`` starts with the prefix (mailslot names its connections
    ``mailslot <node> <role>``), read again at every call: a store may open connections during a run."""

    def pids() -> list[int]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s", (application_prefix + "%",)
            ).fetchall()
        return [int(r[0]) for r in rows]

    return pids


@dataclass
class WalPoint:
    """Server-wide counters at one instant. Differences of two points are the server's work in between: on a
    shared server they include other clients' work (the benchmarks report them as upper bounds)."""

    lsn: str
    wal_bytes: int  # pg_stat_wal.wal_bytes (PostgreSQL 14+)
    wal_syncs: int  # WAL flushes to disk (fdatasync) issued by backends and the WAL writer
    commits: int  # pg_stat_database.xact_commit of the benchmark's database

    @classmethod
    def read(cls, conn: psycopg.Connection[Any]) -> WalPoint:
        row = conn.execute(
            "SELECT pg_current_wal_lsn()::text, w.wal_bytes, w.wal_sync, d.xact_commit"
            " FROM pg_stat_wal w, pg_stat_database d WHERE d.datname = current_database()"
        ).fetchone()
        assert row is not None
        return cls(str(row[0]), int(row[1]), int(row[2]), int(row[3]))

    def since(self, conn: psycopg.Connection[Any], earlier: WalPoint) -> dict[str, float]:
        diff = conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (self.lsn, earlier.lsn)).fetchone()
        assert diff is not None
        # pg_stat_database is refreshed by backends at most every PGSTAT_MIN_INTERVAL (1 s): commits are
        # approximate at the edges of a run of a few seconds, exact enough over 8+ s.
        return {"wal_bytes": float(diff[0]), "wal_syncs": float(self.wal_syncs - earlier.wal_syncs),
                "commits": float(self.commits - earlier.commits)}


def table_stats(conn: psycopg.Connection[Any], schema: str, table: str) -> dict[str, Any]:
    """One table's churn counters from pg_stat_user_tables, and its size with indexes and TOAST."""
    row = conn.execute(
        "SELECT n_live_tup, n_dead_tup, n_tup_ins, n_tup_del, autovacuum_count, vacuum_count,"
        " pg_total_relation_size(relid) FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
        (schema, table),
    ).fetchone()
    keys = ("live", "dead", "inserted", "deleted", "autovacuums", "vacuums", "bytes")
    return dict(zip(keys, row)) if row else dict.fromkeys(keys, 0)


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


AUXILIARY = ("walwriter", "checkpointer", "background writer")


def auxiliary_pids(dsn: str) -> Callable[[], list[int]]:
    """The server's WAL writer, checkpointer and background writer (children of the postmaster that serves
    ``dsn``): their work grows with the WAL of every client of the server, not only the benchmark's."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    postmaster = psutil.Process(int(row[0])).parent()
    assert postmaster is not None
    found = []
    for child in postmaster.children():
        try:
            title = " ".join(child.cmdline()).strip()  # "postgres: 15/main: walwriter"
        except psutil.Error:  # a backend that just exited
            continue
        if any(title.endswith(": " + name) for name in AUXILIARY):
            found.append(child.pid)
    return lambda: found


def pids_of(*processes: Any) -> Callable[[], list[int]]:
    """The pids of processes started later (anything with a ``pid`` property, read at each call)."""
    return lambda: [int(p.pid) for p in processes]
