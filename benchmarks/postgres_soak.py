"""Bloat soak of the PostgreSQL store (not a test): does throughput hold while the message table churns?

    flock /tmp/mailslot-bench.lock python benchmarks/postgres_soak.py [--minutes 10] [--cluster]
        [--every 5] [--plot docs/img/cluster-soak.png] [--json soak.json] [--dsn URL]

compare.py's workload (a) (persistent, confirms 1000, prefetch 1000, multi-ack 100, 256 B, one producer
and one consumer per client) runs for ``--minutes`` without a break against

* one broker on ``--store postgres`` in a fresh schema, or
* with ``--cluster``, two nodes (``--cluster``, linked over Unix sockets) on one fresh schema, with a
  client on each node publishing to and consuming from a queue that node owns: both nodes write and
  delete rows in the same message table at the same time.

Each client is ``mailslot.bench`` in a child process. Every ``--every`` seconds the script samples each
client's consumed messages, the ``messages`` and ``logs`` tables' live and dead tuples, inserts and
deletes, VACUUM runs (the store's own and autovacuum's) and size with indexes and TOAST, and the WAL
written; it prints one progress line per sample. The summary compares the first and second halves and
gives the CPU per message of the brokers and of the PostgreSQL backends serving them; ``--plot`` draws
throughput, dead tuples and table size over time (matplotlib, the test extra). Plain deletes degrade if
throughput falls or the table keeps growing while dead tuples pile up.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from _cluster import ChildBench, cluster_pair, postgres_node
from _pgcost import CpuMeter, WalPoint, backend_pids, drop_schema, table_stats

from mailslot.bench.broker_process import BrokerProcess

DSN = "postgresql://postgres@127.0.0.1:5432/test"
TABLES = ("messages", "logs")


class Soak:
    def __init__(self, args: argparse.Namespace, schema: str, nodes: dict[str, BrokerProcess],
                 names: dict[str, str], cpu: dict[str, CpuMeter]) -> None:
        self.args, self.schema, self.nodes, self.names, self.cpu = args, schema, nodes, names, cpu
        self.consumed = dict.fromkeys(nodes, 0)  # cumulative, from each client's last progress report
        self.samples: list[dict[str, Any]] = []
        self.started = time.monotonic()

    def on_progress(self, node: str) -> Any:
        def progress(p: dict[str, Any]) -> None:
            self.consumed[node] = int(p["consumed"])
        return progress

    def sample(self, conn: psycopg.Connection[Any], wal0: WalPoint) -> dict[str, Any]:
        s: dict[str, Any] = {"t": round(time.monotonic() - self.started, 1), "consumed": dict(self.consumed),
                             "load": os.getloadavg()[0], "cpu_s": {k: m.stop() for k, m in self.cpu.items()}}
        for table in TABLES:
            s[table] = table_stats(conn, self.schema, table)
        s["wal_bytes"] = WalPoint.read(conn).since(conn, wal0)["wal_bytes"]
        last = self.samples[-1] if self.samples else None
        if last is not None:
            dt = s["t"] - last["t"]
            s["rate"] = {n: (s["consumed"][n] - last["consumed"][n]) / dt for n in self.nodes}
            s["wal_mb_s"] = (s["wal_bytes"] - last["wal_bytes"]) / dt / 1e6
            # CPU per message in this interval: unlike the rate, it does not fall when other work on a shared
            # machine takes the cores, and it rises if the tables make each message dearer (bloat)
            messages = max(1, sum(s["consumed"][n] - last["consumed"][n] for n in self.nodes))
            s["cpu_us"] = {k: 1e6 * (v - last["cpu_s"][k]) / messages for k, v in s["cpu_s"].items()}
            m = s["messages"]
            total = self.args.minutes * 60
            rates = "  ".join(f"{n} {r / 1000:5.1f}k" for n, r in s["rate"].items())
            print(f"[{s['t']:5.0f}/{total:.0f} s {min(100, 100 * s['t'] / total):3.0f}%] consumed msg/s {rates} "
                  f"total {sum(s['rate'].values()) / 1000:5.1f}k | messages: live {m['live']:7d} dead {m['dead']:8d} "
                  f"size {m['bytes'] / 2**20:6.1f} MiB vacuums {m['vacuums'] + m['autovacuums']:3d} | "
                  f"logs dead {s['logs']['dead']:6d} | WAL {s['wal_mb_s']:5.1f} MB/s | CPU us/msg brokers "
                  f"{s['cpu_us']['brokers']:4.1f} PG {s['cpu_us']['postgres backends']:4.1f} | load {s['load']:4.1f}",
                  flush=True)
        self.samples.append(s)
        return s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("MAILSLOT_POSTGRES_DSN", DSN))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--cluster", action="store_true", help="two cluster nodes, a client on each")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--json", type=Path, help="write the samples and the summary here")
    parser.add_argument("--plot", type=Path, help="draw the samples into this PNG")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    schema = f"bench_soak_{tag}"
    if args.cluster:  # node names unique to this run: the backends are found by application_name
        pair = cluster_pair(args.dsn, schema, prefix=f"soak{tag}-")
        nodes, names = pair, {n: f"soak{tag}-{n}" for n in pair}
    else:
        nodes, names = {"single": postgres_node(args.dsn, schema, f"soak{tag}")}, {"single": f"soak{tag}"}
    soak: Soak | None = None
    cpu: dict[str, float] = {}
    results: dict[str, dict[str, Any]] = {}
    try:
        for node in nodes.values():
            node.start()
        meters = {"brokers": CpuMeter(lambda: [p.pid for p in nodes.values()]),
                  "postgres backends": CpuMeter(backend_pids(args.dsn, "mailslot soak" + tag))}
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            soak = Soak(args, schema, nodes, names, meters)
            clients = {n: ChildBench(p, p, names[n], soak.on_progress(n), duration=args.minutes * 60)
                       for n, p in nodes.items()}
            for client in clients.values():
                client.poll(timeout=60)  # wait for the first progress line: queues declared, running
            soak.started = time.monotonic()
            for m in meters.values():
                m.start()
            wal0 = WalPoint.read(conn)
            soak.sample(conn, wal0)
            while not finished(clients):
                time.sleep(max(0.0, soak.started + len(soak.samples) * args.every - time.monotonic()))
                if not finished(clients):
                    soak.sample(conn, wal0)
            cpu = {name: m.stop() for name, m in meters.items()}
            results = {n: c.result() for n, c in clients.items()}
    finally:
        for node in nodes.values():
            node.stop()
        drop_schema(args.dsn, schema)
    assert soak is not None
    summary = summarize(soak, cpu, results)
    if args.json:
        args.json.write_text(json.dumps({"samples": soak.samples, "summary": summary, "results": results}, indent=1))
    if args.plot:
        plot(soak, summary, args.plot)
    return 0


def finished(clients: dict[str, ChildBench]) -> bool:
    """Drains every client's progress (all of them, each time), True once all have their result."""
    done = [c.poll() for c in clients.values()]
    return all(done)


def summarize(soak: Soak, cpu: dict[str, float], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    samples = [s for s in soak.samples if "rate" in s]
    totals = [sum(s["rate"].values()) for s in samples]
    half = len(totals) // 2
    per_minute: list[float] = []
    for minute in range(int(soak.args.minutes)):
        inside = [sum(s["rate"].values()) for s in samples if minute * 60 < s["t"] <= (minute + 1) * 60]
        if inside:
            per_minute.append(statistics.mean(inside))
    consumed = sum(r["consumed"] for r in results.values())
    last = samples[-1]
    dead = [s["messages"]["dead"] for s in samples]
    size = [s["messages"]["bytes"] for s in samples]
    summary = {
        "per_minute": per_minute,
        "first_half": statistics.median(totals[:half]), "second_half": statistics.median(totals[half:]),
        "min_sample": min(totals), "max_sample": max(totals),
        "dead_median": statistics.median(dead), "dead_max": max(dead),
        "logs_dead_max": max(s["logs"]["dead"] for s in samples),
        "bytes_first": size[0], "bytes_max": max(size), "bytes_last": size[-1],
        "vacuums": last["messages"]["vacuums"], "autovacuums": last["messages"]["autovacuums"],
        "rows_inserted": last["messages"]["inserted"], "consumed": consumed,
        "deliver_p99_ms": {n: r["deliver_latency_ms"]["p99"] for n, r in results.items()},
        "nacked": sum(r["nacked"] for r in results.values()),
        "wal_bytes_per_msg": last["wal_bytes"] / max(consumed, 1),
        "cpu_us_per_msg": {k: 1e6 * v / max(consumed, 1) for k, v in cpu.items()},
        "cpu_us_first_half": {k: statistics.median(s["cpu_us"][k] for s in samples[:half]) for k in cpu},
        "cpu_us_second_half": {k: statistics.median(s["cpu_us"][k] for s in samples[half:]) for k in cpu},
        "load": [min(s["load"] for s in samples), max(s["load"] for s in samples)],
    }
    print(f"\n{len(samples)} samples of {soak.args.every:.0f} s over {last['t']:.0f} s, {len(soak.nodes)} node(s)")
    print("consumed msg/s per minute (all nodes): " + " ".join(f"{x / 1000:.1f}k" for x in per_minute))
    print(f"median of the first half {summary['first_half']:.0f}, of the second half {summary['second_half']:.0f} "
          f"({summary['second_half'] / summary['first_half']:.2f}x); samples {min(totals):.0f}-{max(totals):.0f}")
    print(f"messages table: dead tuples median {summary['dead_median']:.0f}, max {summary['dead_max']}; "
          f"size first {size[0] / 2**20:.1f} MiB, max {max(size) / 2**20:.1f} MiB, last {size[-1] / 2**20:.1f} MiB; "
          f"VACUUM runs {summary['vacuums']} (store) + {summary['autovacuums']} (autovacuum); rows inserted "
          f"{summary['rows_inserted']:,} for {consumed:,} consumed; logs dead max {summary['logs_dead_max']}")
    print(f"nacked {summary['nacked']}; deliver p99 ms {summary['deliver_p99_ms']}; WAL "
          f"{summary['wal_bytes_per_msg']:.0f} B/msg (server-wide); CPU us/msg "
          + ", ".join(f"{k} {v:.1f}" for k, v in summary["cpu_us_per_msg"].items()))
    print("CPU us/msg, median of the 5 s samples, first half -> second half: " + ", ".join(
        f"{k} {summary['cpu_us_first_half'][k]:.1f} -> {summary['cpu_us_second_half'][k]:.1f}" for k in cpu)
        + f"; 1-minute load average {summary['load'][0]:.1f}-{summary['load'][1]:.1f} on {os.cpu_count()} cores")
    return summary


def plot(soak: Soak, summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = [s for s in soak.samples if "rate" in s]
    t = [s["t"] / 60 for s in samples]
    fig, (ax1, ax4, ax2, ax3) = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    for node in soak.nodes:
        ax1.plot(t, [s["rate"][node] / 1000 for s in samples], lw=0.8, label=f"node {node}")
    if len(soak.nodes) > 1:
        ax1.plot(t, [sum(s["rate"].values()) / 1000 for s in samples], lw=1.2, color="black", label="total")
    ax1.set_ylabel("consumed (k msg/s)")
    ax1.set_ylim(bottom=0)
    ax1.legend(loc="lower right", fontsize=8)
    load = ax1.twinx()
    load.plot(t, [s["load"] for s in samples], lw=0.6, color="grey", ls=":")
    load.set_ylabel("load average (dotted)", fontsize=8, color="grey")
    load.set_ylim(bottom=0)
    for key, label in (("brokers", "brokers"), ("postgres backends", "PostgreSQL backends serving them")):
        ax4.plot(t, [s["cpu_us"][key] for s in samples], lw=0.8, label=label)
    ax4.set_ylabel("CPU us per message")
    ax4.set_ylim(bottom=0)
    ax4.legend(loc="upper right", fontsize=8)
    ax1.set_title(f"mailslot on PostgreSQL, {len(soak.nodes)} node(s), workload (a), "
                  f"{soak.args.every:.0f} s samples: second half / first half "
                  f"{summary['second_half'] / summary['first_half']:.2f}x", fontsize=10)
    for table in TABLES:
        ax2.plot(t, [s[table]["dead"] / 1000 for s in samples], lw=0.9, label=f"{table}: dead tuples")
    vacuums = [s["t"] / 60 for a, s in itertools.pairwise(samples)
               if s["messages"]["vacuums"] + s["messages"]["autovacuums"]
               > a["messages"]["vacuums"] + a["messages"]["autovacuums"]]
    for x in vacuums:
        ax2.axvline(x, color="grey", lw=0.4, alpha=0.5)
    ax2.set_ylabel("dead tuples (k)")
    ax2.legend(loc="upper right", fontsize=8, title="grey lines: VACUUM of messages", title_fontsize=7)
    ax3.plot(t, [s["messages"]["bytes"] / 2**20 for s in samples], lw=1, label="messages: table + index + TOAST")
    ax3.plot(t, [s["logs"]["bytes"] / 2**20 for s in samples], lw=1, label="logs")
    ax3.set_ylabel("MiB")
    ax3.set_ylim(bottom=0)
    ax3.set_xlabel("minutes")
    ax3.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
