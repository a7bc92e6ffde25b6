"""mailslot on PostgreSQL against pgmq on the same PostgreSQL, and against mailslot's embedded segment
store, at the same durability (not a test; prints ratios and CPU per message).

    git clone https://github.com/pgmq/pgmq /tmp/pgmq      # its SQL is loaded, never vendored here
    flock /tmp/mailslot-bench.lock python benchmarks/postgres_vs_pgmq.py \\
        --pgmq-sql /tmp/pgmq/pgmq-extension/sql/pgmq.sql [--rounds 3] [--duration 10] [--dsn URL]

Workloads, 256 B bodies, one producer and one consumer, every message durable before it counts:

* mailslot (``--store postgres`` and ``--store segments``): ``mailslot bench`` with persistent messages,
  publisher confirms (window 1000), prefetch 1000, multi-ack every 100: compare.py's workload (a).
  A confirm is sent only after the COMMIT (PostgreSQL) or fdatasync (segments) of the batch holding it.
* pgmq: its own functions, loaded from its repository's pgmq-extension/sql/pgmq.sql into a throwaway
  schema (the text ``pgmq.`` rewritten to that schema): a producer process calls ``send_batch`` with
  ``--pgmq-batch`` messages per call, a consumer process ``read`` (visibility timeout 30 s, the same
  batch size) then ``delete`` of the ids read. Each call is its own transaction, committed with the
  server's synchronous_commit (on), on a logged table: a sent message is on disk as a confirmed one is.
* "publish only": the same producers with no consumer: every message is written to PostgreSQL (in the
  end-to-end run, a message acknowledged before its batch was cut never reaches PostgreSQL).

Rounds alternate the order of the systems; the report gives medians and the ratios mailslot / pgmq
and mailslot-postgres / mailslot-segments measured in the same run, then CPU per message: the broker
process, the PostgreSQL backends serving it (by application_name), and every postgres process
(background writers, autovacuum, and any other client of the shared server: an upper bound).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

from mailslot.bench.broker_process import BrokerProcess

DSN = "postgresql://postgres@127.0.0.1:5432/test"
BODY_SIZE = 256
MAILSLOT_ARGS = ["--persistent", "--confirm", "1000", "--prefetch", "1000", "--multi-ack", "100",
                 "--size", str(BODY_SIZE)]


@dataclass
class Run:
    system: str
    workload: str  # "end-to-end" or "publish-only"
    messages: int  # consumed (end-to-end) or confirmed/sent (publish-only)
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)  # seconds of CPU, by where
    rows_written: int = 0  # rows inserted into the message table (PostgreSQL systems)
    round: int = 0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


class CpuMeter:
    """CPU seconds of a set of processes between start() and stop(); processes that vanish keep what was read."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}

    @staticmethod
    def _read(pid: int) -> float | None:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        return t.user + t.system

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
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "postmaster")]


def backend_pids(dsn: str, application_prefix: str) -> Callable[[], list[int]]:
    def pids() -> list[int]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s", (application_prefix + "%",)
            ).fetchall()
        return [int(r[0]) for r in rows]

    return pids


def rows_inserted(dsn: str, schema: str, table: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
            (schema, table),
        ).fetchone()
    return int(row[0]) if row else 0


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# -- mailslot ----------------------------------------------------------------------------------------


def run_mailslot(store: str, dsn: str, duration: float, publish_only: bool) -> Run:
    schema = f"bench_mailslot_{uuid.uuid4().hex[:8]}"
    node = f"bench-{schema[-8:]}"
    extra = ["--postgres-dsn", dsn, "--postgres-schema", schema, "--node-name", node] if store == "postgres" else []
    args = MAILSLOT_ARGS + (["--consumers", "0"] if publish_only else [])
    try:
        with BrokerProcess(store=store, extra_args=extra) as broker:
            meters = {"broker": CpuMeter(lambda: [broker.pid]), "postgres (all)": CpuMeter(postgres_pids)}
            if store == "postgres":
                meters["postgres backends"] = CpuMeter(backend_pids(dsn, f"mailslot {node} "))
            for m in meters.values():
                m.start()
            cmd = [sys.executable, "-m", "mailslot", "bench", "--url", broker.url, "--duration", str(duration),
                   "--json", *args]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration * 4 + 60)
            cpu = {name: m.stop() for name, m in meters.items()}
            if out.returncode != 0:
                raise RuntimeError(f"mailslot bench failed: {out.stderr[-800:]}")
            result = json.loads(out.stdout)
        count = int(result["confirmed"] if publish_only else result["consumed"])
        rows = rows_inserted(dsn, schema, "messages") if store == "postgres" else 0
        return Run(f"mailslot-{store}", "publish-only" if publish_only else "end-to-end", count,
                   float(result["elapsed_s"]), cpu, rows)
    finally:
        if store == "postgres":
            drop_schema(dsn, schema)


# -- pgmq --------------------------------------------------------------------------------------------


def load_pgmq(dsn: str, script: str, schema: str) -> None:
    """pgmq's SQL with its hard-coded schema name rewritten; a benchmark-only copy in ``schema``."""
    script = re.sub(r"\bpgmq\.", f"{schema}.", script)
    script = re.sub(r"\bSCHEMA IF NOT EXISTS pgmq\b", f"SCHEMA IF NOT EXISTS {schema}", script)
    script = re.sub(r"\bON SCHEMA pgmq\b", f"ON SCHEMA {schema}", script)
    script = re.sub(r"\bIN SCHEMA pgmq\b", f"IN SCHEMA {schema}", script)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(script)  # type: ignore[arg-type]
        conn.execute(sql.SQL("SELECT {}.create('bench')").format(sql.Identifier(schema)))


def _pgmq_producer(dsn: str, schema: str, batch: int, ready: Any, stop: Any, count: Any, pid: Any) -> None:
    body = json.dumps({"body": "x" * (BODY_SIZE - 12)})  # ~256 bytes of JSON, as pgmq stores jsonb
    messages = [body] * batch
    query = sql.SQL("SELECT count(*) FROM {}.send_batch('bench', %s::jsonb[])").format(sql.Identifier(schema))
    with psycopg.connect(dsn, autocommit=True, application_name="pgmq-bench producer") as conn:
        pid.value = conn.info.backend_pid
        ready.set()
        while not stop.is_set():
            conn.execute(query, (messages,))
            with count.get_lock():
                count.value += batch


def _pgmq_consumer(dsn: str, schema: str, batch: int, ready: Any, stop: Any, count: Any, pid: Any) -> None:
    read = sql.SQL("SELECT msg_id FROM {}.read('bench', 30, %s)").format(sql.Identifier(schema))
    delete = sql.SQL("SELECT count(*) FROM {}.delete('bench', %s::bigint[])").format(sql.Identifier(schema))
    with psycopg.connect(dsn, autocommit=True, application_name="pgmq-bench consumer") as conn:
        pid.value = conn.info.backend_pid
        ready.set()
        while not stop.is_set():
            ids = [r[0] for r in conn.execute(read, (batch,)).fetchall()]
            if not ids:
                time.sleep(0.001)  # pgmq's read_with_poll would wait server-side; the queue is rarely empty
                continue
            conn.execute(delete, (ids,))
            with count.get_lock():
                count.value += len(ids)


def run_pgmq(dsn: str, script: str, duration: float, batch: int, publish_only: bool) -> Run:
    schema = f"bench_pgmq_{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    roles = [("producer", _pgmq_producer)] + ([] if publish_only else [("consumer", _pgmq_consumer)])
    counts = {role: ctx.Value("q", 0) for role, _ in roles}
    pids = {role: ctx.Value("q", 0) for role, _ in roles}
    readies = {role: ctx.Event() for role, _ in roles}
    load_pgmq(dsn, script, schema)
    procs = []
    try:
        for role, target in roles:
            p = ctx.Process(target=target, args=(dsn, schema, batch, readies[role], stop, counts[role], pids[role]))
            p.start()
            procs.append(p)
        for event in readies.values():
            if not event.wait(30):
                raise RuntimeError("a pgmq client did not start")
        meters = {
            "clients": CpuMeter(lambda: [p.pid for p in procs if p.pid is not None]),
            "postgres (all)": CpuMeter(postgres_pids),
            "postgres backends": CpuMeter(lambda: [int(v.value) for v in pids.values()]),
        }
        for m in meters.values():
            m.start()
        first = {role: c.value for role, c in counts.items()}
        rows_before = rows_inserted(dsn, schema, "q_bench")
        started = time.perf_counter()
        time.sleep(duration)
        done = {role: c.value for role, c in counts.items()}
        seconds = time.perf_counter() - started
        cpu = {name: m.stop() for name, m in meters.items()}
        rows = rows_inserted(dsn, schema, "q_bench") - rows_before
    finally:
        stop.set()
        for p in procs:
            p.join(30)
        drop_schema(dsn, schema)
    role = "producer" if publish_only else "consumer"
    return Run("pgmq", "publish-only" if publish_only else "end-to-end", done[role] - first[role], seconds, cpu, rows)


# -- report ------------------------------------------------------------------------------------------


def server_facts(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method", "shared_buffers")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pgmq-sql", type=Path, help="pgmq's pgmq-extension/sql/pgmq.sql (required to run)")
    parser.add_argument("--dsn", default=os.environ.get("MAILSLOT_POSTGRES_DSN", DSN))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--pgmq-batch", type=int, default=100, help="messages per send_batch / read / delete")
    parser.add_argument("--json", type=Path, help="also write every run here")
    parser.add_argument("--report", type=Path, help="only print the report of runs written by --json")
    args = parser.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text())
        report([Run(**r, round=i // 6) if "round" not in r else Run(**r) for i, r in enumerate(saved)],
               server_facts(args.dsn), args)
        return 0
    if args.pgmq_sql is None:
        parser.error("--pgmq-sql is required (pgmq's pgmq-extension/sql/pgmq.sql)")
    script = args.pgmq_sql.read_text()

    systems: list[tuple[str, Callable[[bool], Run]]] = [
        ("mailslot-postgres", lambda po: run_mailslot("postgres", args.dsn, args.duration, po)),
        ("mailslot-segments", lambda po: run_mailslot("segments", args.dsn, args.duration, po)),
        ("pgmq", lambda po: run_pgmq(args.dsn, script, args.duration, args.pgmq_batch, po)),
    ]
    runs: list[Run] = []
    for r in range(args.rounds):
        order = systems if r % 2 == 0 else systems[::-1]
        for publish_only in (False, True):
            for name, run in order:
                result = run(publish_only)
                result.round = r
                runs.append(result)
                print(f"round {r + 1} {result.workload:12s} {name:18s} {result.rate:10.0f} msg/s", flush=True)
    if args.json:
        args.json.write_text(json.dumps([run.__dict__ for run in runs], indent=1))
    report(runs, server_facts(args.dsn), args)
    return 0


def report(runs: list[Run], facts: dict[str, str], args: argparse.Namespace) -> None:
    rounds = max(r.round for r in runs) + 1
    print(f"\nPostgreSQL: {facts}; pgmq batch {args.pgmq_batch}; {rounds} rounds x {args.duration:.0f} s; "
          f"{BODY_SIZE} B bodies")
    for workload in ("end-to-end", "publish-only"):
        print(f"\n{workload}: median msg/s (min-max), rows written to PostgreSQL per message, CPU us per message")
        medians: dict[str, float] = {}
        for system in ("mailslot-postgres", "mailslot-segments", "pgmq"):
            mine = [r for r in runs if r.system == system and r.workload == workload]
            rates = [r.rate for r in mine]
            medians[system] = statistics.median(rates)
            cpu_keys = sorted({k for r in mine for k in r.cpu})
            cpu = ", ".join(
                f"{k} {statistics.median(r.cpu[k] / r.messages * 1e6 for r in mine):.1f}" for k in cpu_keys
            )
            rows = statistics.median(r.rows_written / r.messages for r in mine) if system != "mailslot-segments" else 0
            print(f"  {system:18s} {medians[system]:9.0f} ({min(rates):.0f}-{max(rates):.0f})  rows/msg {rows:.2f}  "
                  f"CPU us/msg: {cpu}")
        # The machine is shared: a ratio within one round (the same load) is steadier than medians of rates.
        for other in ("pgmq", "mailslot-segments"):
            ratios = [
                mine.rate / theirs.rate
                for mine in runs if mine.system == "mailslot-postgres" and mine.workload == workload
                for theirs in runs if theirs.system == other and theirs.workload == workload
                and theirs.round == mine.round
            ]
            print(f"  mailslot-postgres / {other}: median of per-round ratios {statistics.median(ratios):.2f}x "
                  f"({', '.join(f'{x:.2f}' for x in ratios)}); ratio of medians "
                  f"{medians['mailslot-postgres'] / medians[other]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
