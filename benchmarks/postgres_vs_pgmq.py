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

import psycopg
from _cluster import ChildBench, cluster_pair
from _pgcost import CpuMeter, WalPoint, backend_pids, drop_schema, postgres_pids
from psycopg import sql

from mailslot.bench.broker_process import BrokerProcess

DSN = "postgresql://postgres@127.0.0.1:5432/test"
BODY_SIZE = 256
# the cluster systems run two client pairs (one per node), so they are compared with pgmq's two pairs
SYSTEMS = ("mailslot-postgres", "mailslot-segments", "pgmq", "cluster-owners", "cluster-crossed", "pgmq-x2")
COMPARISONS = (("mailslot-postgres", "pgmq"), ("mailslot-postgres", "mailslot-segments"),
               ("cluster-owners", "pgmq-x2"), ("cluster-crossed", "pgmq-x2"), ("cluster-crossed", "cluster-owners"),
               ("cluster-owners", "mailslot-postgres"))
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
    wal: dict[str, float] = field(default_factory=dict)  # server-wide WAL bytes, WAL flushes, commits

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def rows_inserted(dsn: str, schema: str, tables: str) -> int:
    """Rows inserted into the tables of ``schema`` whose name is LIKE ``tables``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables WHERE schemaname = %s AND relname LIKE %s",
            (schema, tables),
        ).fetchone()
    return int(row[0]) if row else 0


class WalMeter:
    """WAL bytes, WAL flushes and commits of the whole server between start() and stop()."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def start(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self.first = WalPoint.read(conn)

    def stop(self) -> dict[str, float]:
        time.sleep(1.1)  # backends publish their WAL and commit counters at most once a second
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return WalPoint.read(conn).since(conn, self.first)


# -- mailslot ----------------------------------------------------------------------------------------


def run_mailslot(store: str, dsn: str, duration: float, publish_only: bool) -> Run:
    schema = f"bench_mailslot_{uuid.uuid4().hex[:8]}"
    node = f"bench-{schema[-8:]}"
    extra = ["--postgres-dsn", dsn, "--postgres-schema", schema, "--node-name", node] if store == "postgres" else []
    args = MAILSLOT_ARGS + (["--consumers", "0"] if publish_only else [])
    try:
        with BrokerProcess(store=store, extra_args=tuple(extra)) as broker:
            meters = {"broker": CpuMeter(lambda: [broker.pid]), "postgres (all)": CpuMeter(postgres_pids)}
            if store == "postgres":
                meters["postgres backends"] = CpuMeter(backend_pids(dsn, f"mailslot {node} "))
            wal = WalMeter(dsn)
            for m in meters.values():
                m.start()
            wal.start()
            cmd = [sys.executable, "-m", "mailslot", "bench", "--url", broker.url, "--duration", str(duration),
                   "--json", *args]
            out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=duration * 4 + 60)
            cpu = {name: m.stop() for name, m in meters.items()}
            wal_used = wal.stop()
            if out.returncode != 0:
                raise RuntimeError(f"mailslot bench failed: {out.stderr[-800:]}")
            result = json.loads(out.stdout)
        count = int(result["confirmed"] if publish_only else result["consumed"])
        rows = rows_inserted(dsn, schema, "messages") if store == "postgres" else 0
        return Run(f"mailslot-{store}", "publish-only" if publish_only else "end-to-end", count,
                   float(result["elapsed_s"]), cpu, rows, wal=wal_used if store == "postgres" else {})
    finally:
        if store == "postgres":
            drop_schema(dsn, schema)


def run_cluster(dsn: str, duration: float, publish_only: bool, crossed: bool) -> Run:
    """Two cluster nodes, each owning one queue (declared on it), and one producer and one consumer per
    queue: connected to the queue's owner, or (``crossed``) to the other node, so that every publish is
    forwarded and every delivery is served through the other node. Each client runs ``duration`` seconds
    from its own start (the crossed ones first wait for their node to learn the queue); the rate is the
    sum of both clients' rates."""
    tag = uuid.uuid4().hex[:8]
    schema = f"bench_cluster_{tag}"
    nodes = cluster_pair(dsn, schema, prefix=f"bench{tag}-")
    try:
        for node in nodes.values():
            node.start()
        meters = {"broker": CpuMeter(lambda: [n.pid for n in nodes.values()]),
                  "postgres (all)": CpuMeter(postgres_pids),
                  "postgres backends": CpuMeter(backend_pids(dsn, f"mailslot bench{tag}-"))}
        wal = WalMeter(dsn)
        for m in meters.values():
            m.start()
        wal.start()
        other = {"a": "b", "b": "a"}
        clients = [ChildBench(nodes[other[owner] if crossed else owner], nodes[owner], f"bench{tag}-{owner}",
                              duration=duration, consumers=0 if publish_only else 1) for owner in ("a", "b")]
        results = [c.result(timeout=duration * 4 + 60) for c in clients]
        cpu = {name: m.stop() for name, m in meters.items()}
        wal_used = wal.stop()
        key = "confirmed" if publish_only else "consumed"
        count = sum(int(r[key]) for r in results)
        rate = sum(r[key] / r["elapsed_s"] for r in results)
        rows = rows_inserted(dsn, schema, "messages")
    finally:
        for node in nodes.values():
            node.stop()
        drop_schema(dsn, schema)
    return Run("cluster-crossed" if crossed else "cluster-owners", "publish-only" if publish_only else "end-to-end",
               count, count / rate, cpu, rows, wal=wal_used)


# -- pgmq --------------------------------------------------------------------------------------------


def load_pgmq(dsn: str, script: str, schema: str, queues: list[str]) -> None:
    """pgmq's SQL with its hard-coded schema name rewritten; a benchmark-only copy in ``schema``."""
    script = re.sub(r"\bpgmq\.", f"{schema}.", script)
    script = re.sub(r"\bSCHEMA IF NOT EXISTS pgmq\b", f"SCHEMA IF NOT EXISTS {schema}", script)
    script = re.sub(r"\bON SCHEMA pgmq\b", f"ON SCHEMA {schema}", script)
    script = re.sub(r"\bIN SCHEMA pgmq\b", f"IN SCHEMA {schema}", script)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(script)  # type: ignore[arg-type]
        for queue in queues:
            conn.execute(sql.SQL("SELECT {}.create(%s)").format(sql.Identifier(schema)), (queue,))


def _pgmq_producer(dsn: str, schema: str, queue: str, batch: int, ready: Any, stop: Any, count: Any,
                   pid: Any) -> None:
    body = json.dumps({"body": "x" * (BODY_SIZE - 12)})  # ~256 bytes of JSON, as pgmq stores jsonb
    messages = [body] * batch
    query = sql.SQL("SELECT count(*) FROM {}.send_batch(%s, %s::jsonb[])").format(sql.Identifier(schema))
    with psycopg.connect(dsn, autocommit=True, application_name="pgmq-bench producer") as conn:
        pid.value = conn.info.backend_pid
        ready.set()
        while not stop.is_set():
            conn.execute(query, (queue, messages))
            with count.get_lock():
                count.value += batch


def _pgmq_consumer(dsn: str, schema: str, queue: str, batch: int, ready: Any, stop: Any, count: Any,
                   pid: Any) -> None:
    read = sql.SQL("SELECT msg_id FROM {}.read(%s, 30, %s)").format(sql.Identifier(schema))
    delete = sql.SQL("SELECT count(*) FROM {}.delete(%s, %s::bigint[])").format(sql.Identifier(schema))
    with psycopg.connect(dsn, autocommit=True, application_name="pgmq-bench consumer") as conn:
        pid.value = conn.info.backend_pid
        ready.set()
        while not stop.is_set():
            ids = [r[0] for r in conn.execute(read, (queue, batch)).fetchall()]
            if not ids:
                time.sleep(0.001)  # pgmq's read_with_poll would wait server-side; the queue is rarely empty
                continue
            conn.execute(delete, (queue, ids))
            with count.get_lock():
                count.value += len(ids)


def run_pgmq(dsn: str, script: str, duration: float, batch: int, publish_only: bool, pairs: int = 1) -> Run:
    """``pairs`` queues, each with a producer and (end to end) a consumer process of its own."""
    schema = f"bench_pgmq_{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    queues = [f"bench{i}" for i in range(pairs)]
    kinds = [("producer", _pgmq_producer)] + ([] if publish_only else [("consumer", _pgmq_consumer)])
    roles = [(f"{kind} {queue}", queue, target) for queue in queues for kind, target in kinds]
    counts = {role: ctx.Value("q", 0) for role, _, _ in roles}
    pids = {role: ctx.Value("q", 0) for role, _, _ in roles}
    readies = {role: ctx.Event() for role, _, _ in roles}
    load_pgmq(dsn, script, schema, queues)
    procs = []
    try:
        for role, queue, target in roles:
            p = ctx.Process(target=target, args=(dsn, schema, queue, batch, readies[role], stop, counts[role],
                                                 pids[role]))
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
        wal = WalMeter(dsn)
        for m in meters.values():
            m.start()
        wal.start()
        first = {role: c.value for role, c in counts.items()}
        rows_before = rows_inserted(dsn, schema, "q_bench%")
        started = time.perf_counter()
        time.sleep(duration)
        done = {role: c.value for role, c in counts.items()}
        seconds = time.perf_counter() - started
        cpu = {name: m.stop() for name, m in meters.items()}
        wal_used = wal.stop()
        rows = rows_inserted(dsn, schema, "q_bench%") - rows_before
    finally:
        stop.set()
        for p in procs:
            p.join(30)
        drop_schema(dsn, schema)
    kind = "producer" if publish_only else "consumer"
    counted = sum(done[role] - first[role] for role in done if role.startswith(kind))
    return Run("pgmq" if pairs == 1 else f"pgmq-x{pairs}", "publish-only" if publish_only else "end-to-end",
               counted, seconds, cpu, rows, wal=wal_used)


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
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated, run in this order (reversed every other round): {','.join(SYSTEMS)}")
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

    runners: dict[str, Callable[[bool], Run]] = {
        "mailslot-postgres": lambda po: run_mailslot("postgres", args.dsn, args.duration, po),
        "mailslot-segments": lambda po: run_mailslot("segments", args.dsn, args.duration, po),
        "pgmq": lambda po: run_pgmq(args.dsn, script, args.duration, args.pgmq_batch, po),
        "cluster-owners": lambda po: run_cluster(args.dsn, args.duration, po, crossed=False),
        "cluster-crossed": lambda po: run_cluster(args.dsn, args.duration, po, crossed=True),
        "pgmq-x2": lambda po: run_pgmq(args.dsn, script, args.duration, args.pgmq_batch, po, pairs=2),
    }
    wanted = args.systems.split(",")
    if unknown := set(wanted) - set(runners):
        parser.error(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEMS)}")
    systems = [(name, runners[name]) for name in wanted]
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
        for system in SYSTEMS:
            mine = [r for r in runs if r.system == system and r.workload == workload]
            if not mine:
                continue
            rates = [r.rate for r in mine]
            medians[system] = statistics.median(rates)
            cpu_keys = sorted({k for r in mine for k in r.cpu})
            cpu = ", ".join(
                f"{k} {statistics.median(r.cpu[k] / r.messages * 1e6 for r in mine):.1f}" for k in cpu_keys
            )
            rows = statistics.median(r.rows_written / r.messages for r in mine) if system != "mailslot-segments" else 0
            wal = ""
            if all(r.wal for r in mine):  # server-wide: other clients of a shared server count too
                wal = (f"  WAL {statistics.median(r.wal['wal_bytes'] / r.messages for r in mine):.0f} B/msg, "
                       f"{statistics.median(r.wal['commits'] / r.seconds for r in mine):.0f} commits/s, "
                       f"{statistics.median(r.wal['wal_syncs'] / r.seconds for r in mine):.0f} WAL flushes/s")
            print(f"  {system:18s} {medians[system]:9.0f} ({min(rates):.0f}-{max(rates):.0f})  rows/msg {rows:.2f}  "
                  f"CPU us/msg: {cpu}{wal}")
            print(f"  {'':18s} per round: {', '.join(f'{r.rate:.0f}' for r in sorted(mine, key=lambda r: r.round))}")
        # The machine is shared: a ratio within one round (the same load) is steadier than medians of rates.
        for top, bottom in COMPARISONS:
            ratios = [
                mine.rate / theirs.rate
                for mine in runs if mine.system == top and mine.workload == workload
                for theirs in runs if theirs.system == bottom and theirs.workload == workload
                and theirs.round == mine.round
            ]
            if ratios:
                print(f"  {top} / {bottom}: median of per-round ratios {statistics.median(ratios):.2f}x "
                      f"({', '.join(f'{x:.2f}' for x in ratios)}); ratio of medians "
                      f"{medians[top] / medians[bottom]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
