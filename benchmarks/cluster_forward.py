"""A cluster of two nodes against one node, on the same PostgreSQL (not a test; prints ratios and CPU).

    flock /tmp/mailslot-bench.lock python benchmarks/cluster_forward.py [--rounds 3] [--duration 8] [--dsn URL]

compare.py's workload (a), 256 B persistent messages, publisher confirms (window 1000), prefetch 1000,
multi-ack 100, one producer and one consumer (mailslot's own bench client, in this process), run as:

* single: one broker, ``--store postgres`` without ``--cluster`` (the reference);
* owner: node a of a two-node cluster (``--cluster``, link on a Unix socket), the client on a, which
  owns the queue: what the cluster costs a node that serves its own queues (lease checks in every batch);
* forwarded: the client on node b, the queue owned by a: every publish forwarded to a over the link
  and confirmed after a's COMMIT, every delivery served to b's consumer through b;
* and the same two cluster cases publish-only (no consumer).

Rounds alternate the order. Reported: medians, per-round ratios (forwarded / owner, owner / single), and
per message consumed (or confirmed, publish only): the CPU of each broker process (user + system
seconds), the CPU of the PostgreSQL backends serving the brokers (found by application_name, read from
/proc), the batch COMMITs of the brokers (their nodes' committed_batch) and the rows written to the
message table; and, server-wide (other clients of a shared server included: upper bounds), the WAL
bytes (pg_current_wal_lsn differences), WAL flushes (pg_stat_wal.wal_sync) and commits per second.
docs/cluster.md's capacity table is computed from these figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import uuid
from pathlib import Path
from typing import Any

import psycopg
from _cluster import bench_config, cluster_pair, postgres_node
from _pgcost import CpuMeter, WalPoint, auxiliary_pids, backend_pids, drop_schema, pids_of
from psycopg import sql

from mailslot.bench.broker_process import BrokerProcess
from mailslot.bench.runner import run_bench

DSN = "postgresql://postgres@127.0.0.1:5432/test"


class Setup:
    """The three brokers of the benchmark, their schemas, and the node names their backends carry."""

    def __init__(self, dsn: str) -> None:
        tag = uuid.uuid4().hex[:8]
        self.dsn, self.prefix = dsn, f"fwd{tag}-"
        self.schemas = {"cluster": f"bench_cluster_{tag}", "single": f"bench_single_{tag}"}
        self.nodes = {"single": postgres_node(dsn, self.schemas["single"], self.prefix + "single"),
                      **cluster_pair(dsn, self.schemas["cluster"], prefix=self.prefix)}
        self.auxiliary = auxiliary_pids(dsn)

    def counters(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        """Batch COMMITs of all three brokers (their node rows) and rows inserted into their message tables."""
        out = {"batches": 0, "rows": 0}
        for schema in self.schemas.values():
            row = conn.execute(sql.SQL("SELECT coalesce(sum(committed_batch), 0) FROM {}.nodes")
                               .format(sql.Identifier(schema))).fetchone()
            out["batches"] += int(row[0]) if row else 0
            row = conn.execute("SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables"
                               " WHERE schemaname = %s AND relname = 'messages'", (schema,)).fetchone()
            out["rows"] += int(row[0]) if row else 0
        return out


async def one_run(case: str, setup: Setup, duration: float, consumers: int) -> dict[str, Any]:
    nodes = setup.nodes
    client, owner = {"single": ("single", "single"), "owner": ("a", "a"), "forwarded": ("b", "a")}[case]
    cfg = bench_config(nodes[client], nodes[owner], setup.prefix + owner, duration=duration, consumers=consumers)
    meters = {name: CpuMeter(pids_of(process)) for name, process in nodes.items()}
    meters["pg"] = CpuMeter(backend_pids(setup.dsn, "mailslot " + setup.prefix))
    meters["pg aux"] = CpuMeter(setup.auxiliary)
    with psycopg.connect(setup.dsn, autocommit=True) as conn:
        for m in meters.values():
            m.start()
        wal0, counted0 = WalPoint.read(conn), setup.counters(conn)
        result = await run_bench(cfg)
        cpu = {name: m.stop() for name, m in meters.items()}
        await asyncio.sleep(1.1)  # backends publish their WAL and commit counters at most once a second
        wal, counted = WalPoint.read(conn).since(conn, wal0), setup.counters(conn)
    messages = result["consumed"] if consumers else result["confirmed"]
    per = max(messages, 1)
    elapsed = result["elapsed_s"]
    return {"case": case, "consumers": consumers, "rate": messages / elapsed, "messages": messages,
            "cpu_us": {name: 1e6 * seconds / per for name, seconds in cpu.items() if seconds > 0.05},
            "rows_per_msg": (counted["rows"] - counted0["rows"]) / per,
            "msgs_per_batch": per / max(1, counted["batches"] - counted0["batches"]),
            "batches_per_s": (counted["batches"] - counted0["batches"]) / elapsed,
            "wal_b_per_msg": wal["wal_bytes"] / per, "wal_syncs_per_s": wal["wal_syncs"] / elapsed,
            "commits_per_s": wal["commits"] / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--json", type=Path, help="also write every run here")
    args = parser.parse_args()
    setup = Setup(args.dsn)
    nodes: dict[str, BrokerProcess] = setup.nodes
    runs: list[dict[str, Any]] = []
    try:
        for process in nodes.values():
            process.start()
        plan = [("single", 1), ("owner", 1), ("forwarded", 1), ("owner", 0), ("forwarded", 0)]
        for round_no in range(args.rounds):
            order = plan if round_no % 2 == 0 else plan[::-1]
            for case, consumers in order:
                run = asyncio.run(one_run(case, setup, args.duration, consumers))
                run["round"] = round_no
                runs.append(run)
                cpu = " ".join(f"{k} {v:.1f}" for k, v in run["cpu_us"].items())
                print(f"round {round_no} {case:9} {'end-to-end' if consumers else 'publish-only':12} "
                      f"{run['rate']:>9,.0f} msg/s  CPU us/msg {cpu}; rows/msg {run['rows_per_msg']:.2f}, "
                      f"msgs/batch {run['msgs_per_batch']:.0f}, WAL {run['wal_b_per_msg']:.0f} B/msg, "
                      f"{run['wal_syncs_per_s']:.0f} WAL flushes/s, {run['commits_per_s']:.0f} commits/s "
                      f"(server-wide)", flush=True)
    finally:
        for process in nodes.values():
            process.stop()
        for schema in setup.schemas.values():
            drop_schema(args.dsn, schema)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    report(runs)
    return 0


def report(runs: list[dict[str, Any]]) -> None:
    def rates(case: str, consumers: int) -> dict[int, float]:
        return {r["round"]: r["rate"] for r in runs if r["case"] == case and r["consumers"] == consumers}

    print("\nmedians (msg/s):")
    for case, consumers in (("single", 1), ("owner", 1), ("forwarded", 1), ("owner", 0), ("forwarded", 0)):
        values = list(rates(case, consumers).values())
        mine = [r for r in runs if r["case"] == case and r["consumers"] == consumers]
        cpu = [r["cpu_us"] for r in mine]
        nodes = sorted({n for c in cpu for n in c})
        cpu_text = ", ".join(f"{n} {statistics.median(c.get(n, 0.0) for c in cpu):.1f}" for n in nodes)
        facts = ", ".join(f"{key} {statistics.median(r[key] for r in mine):.2f}" for key in
                          ("rows_per_msg", "msgs_per_batch", "batches_per_s", "wal_b_per_msg", "wal_syncs_per_s",
                           "commits_per_s"))
        print(f"  {case:9} {'end-to-end' if consumers else 'publish-only':12} {statistics.median(values):>9,.0f}"
              f"  (rounds {', '.join(f'{v:,.0f}' for v in values)}); CPU us/msg (pg: the backends; pg aux: WAL writer, checkpointer, bgwriter, server-wide): {cpu_text}; "
              f"{facts}")
    for label, top, bottom, consumers in (("forwarded / owner, end-to-end", "forwarded", "owner", 1),
                                          ("forwarded / owner, publish-only", "forwarded", "owner", 0),
                                          ("owner / single, end-to-end", "owner", "single", 1)):
        t, b = rates(top, consumers), rates(bottom, consumers)
        ratios = [t[r] / b[r] for r in sorted(t) if b.get(r)]
        print(f"  {label}: {statistics.median(ratios):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    raise SystemExit(main())
