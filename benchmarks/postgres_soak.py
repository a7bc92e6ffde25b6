"""Bloat soak of the PostgreSQL store (not a test): does throughput hold while the message table churns?

    flock /tmp/mailslot-bench.lock python benchmarks/postgres_soak.py [--minutes 10] [--slice 60] [--dsn URL]

One broker on ``--store postgres`` in a fresh schema runs ``mailslot bench`` (compare.py's workload (a):
persistent, confirms 1000, prefetch 1000, multi-ack 100, 256 B, one producer, one consumer) for
``--slice`` seconds at a time, back to back, for ``--minutes``. Every slice prints its throughput and,
sampled every ``--every`` seconds in between, the message table's live and dead tuples
(pg_stat_user_tables), rows inserted and deleted per second, autovacuum runs, and the size of the
table with its index and TOAST (pg_total_relation_size). Plain deletes degrade if throughput falls or
the table keeps growing while dead tuples pile up; the summary compares the first and last slices.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from mailslot.bench.broker_process import BrokerProcess

DSN = "postgresql://postgres@127.0.0.1:5432/test"
WORKLOAD = ["--persistent", "--confirm", "1000", "--prefetch", "1000", "--multi-ack", "100", "--size", "256"]


def table_stats(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT n_live_tup, n_dead_tup, n_tup_ins, n_tup_del, autovacuum_count,"
        " pg_total_relation_size(relid) FROM pg_stat_user_tables WHERE schemaname = %s AND relname = 'messages'",
        (schema,),
    ).fetchone()
    keys = ("live", "dead", "inserted", "deleted", "autovacuums", "bytes")
    return dict(zip(keys, row)) if row else dict.fromkeys(keys, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("MAILSLOT_POSTGRES_DSN", DSN))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--slice", type=float, default=60.0, help="seconds per mailslot bench run")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between table samples")
    parser.add_argument("--json", help="write the samples and slices here")
    args = parser.parse_args()
    schema = f"bench_soak_{uuid.uuid4().hex[:8]}"
    samples: list[dict[str, Any]] = []
    slices: list[dict[str, Any]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sampler() -> None:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            last: dict[str, Any] | None = None
            while not stop.wait(args.every):
                s = table_stats(conn, schema)
                s["t"] = round(time.monotonic() - started, 1)
                if last is not None:
                    dt = s["t"] - last["t"]
                    s["ins_per_s"] = round((s["inserted"] - last["inserted"]) / dt)
                    s["del_per_s"] = round((s["deleted"] - last["deleted"]) / dt)
                    print(f"  t={s['t']:6.0f}s live {s['live']:7d} dead {s['dead']:8d} ins/s {s['ins_per_s']:7d}"
                          f" del/s {s['del_per_s']:7d} autovacuums {s['autovacuums']:3d}"
                          f" size {s['bytes'] / 2**20:7.1f} MiB", flush=True)
                samples.append(s)
                last = s

    try:
        extra = ["--postgres-dsn", args.dsn, "--postgres-schema", schema, "--node-name", f"soak-{schema[-8:]}"]
        with BrokerProcess(store="postgres", extra_args=extra) as broker:
            thread = threading.Thread(target=sampler, daemon=True)
            thread.start()
            while time.monotonic() - started < args.minutes * 60:
                out = subprocess.run(
                    [sys.executable, "-m", "mailslot", "bench", "--url", broker.url, "--duration", str(args.slice),
                     "--json", *WORKLOAD],
                    capture_output=True, text=True, timeout=args.slice * 3 + 60,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"mailslot bench failed: {out.stderr[-800:]}")
                r = json.loads(out.stdout)
                slices.append({"t": round(time.monotonic() - started), "consumed_per_s": r["consumed_per_s"],
                               "p99_ms": r["deliver_latency_ms"].get("p99")})
                print(f"slice ending t={slices[-1]['t']}s: {r['consumed_per_s']:.0f} msg/s consumed, "
                      f"p99 deliver {slices[-1]['p99_ms']} ms", flush=True)
            stop.set()
            thread.join()
    finally:
        stop.set()
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples": samples, "slices": slices}, f, indent=1)
    rates = [s["consumed_per_s"] for s in slices]
    half = max(1, len(rates) // 2)
    dead = [s["dead"] for s in samples]
    size = [s["bytes"] for s in samples]
    print(f"\n{len(slices)} slices of {args.slice:.0f} s: first {rates[0]:.0f} msg/s, last {rates[-1]:.0f} msg/s, "
          f"median of the first half {statistics.median(rates[:half]):.0f}, of the second half "
          f"{statistics.median(rates[half:] or rates):.0f} ({statistics.median(rates[half:] or rates) / statistics.median(rates[:half]):.2f}x)")
    if samples:
        print(f"dead tuples: median {statistics.median(dead):.0f}, max {max(dead)}; table+index+TOAST: "
              f"first {size[0] / 2**20:.1f} MiB, max {max(size) / 2**20:.1f} MiB, last {size[-1] / 2**20:.1f} MiB; "
              f"autovacuum runs {samples[-1]['autovacuums']}; rows inserted {samples[-1]['inserted']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
