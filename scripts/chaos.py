#!/usr/bin/env python
"""The long chaos run of the worker guarantees (tests/chaos is the short one in CI).

For each guarantee (and exactly-once also on PostgreSQL): N keyed messages (default 10,000) through a worker
subprocess whose effect is a row in the database, the worker SIGKILLed at >= 20 random points, the broker
SIGKILLed >= 3 times (once while the producer publishes: it republishes what was not confirmed, same keys).
Prints the results side by side, writes them as JSON and plots the progress with the kills.

    PYTHONPATH=src python scripts/chaos.py                      # 10,000 messages, the four runs
    PYTHONPATH=src python scripts/chaos.py -n 2000 --no-postgres --out /tmp/chaos
    PYTHONPATH=src python scripts/chaos.py -n 5000 --cluster 3   # exactly-once, 3 cluster nodes killed in turn

--cluster N: the broker is N nodes of ``mailslot serve --store postgres --cluster`` (on a schema of their own
in the --postgres database), the producer and the worker connect to any of them, and the broker kills
SIGKILL one node each: the queue's owner (forcing a takeover) and the node serving the worker in turn.
Only the exactly-once runs (effects in SQLite and in PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mailslot.bench.chaos import ChaosConfig, ChaosResult, run_chaos, table
from mailslot.worker import Guarantee


def plot(results: list[ChaosResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(10, 2.6 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        ts = [t for t, _ in r.timeline]
        ax.plot(ts, [n for _, n in r.timeline], color="#1f77b4", lw=1.5, label="messages taken off the queue")
        for t, what in r.kill_times:
            color = "#d62728" if what == "broker" or what.startswith("node") else {"worker": "#ff7f0e"}.get(what, "#9467bd")
            ax.axvline(t, color=color, lw=0.8, alpha=0.7)
        where = f", {r.nodes} cluster nodes" if r.nodes else ""
        ax.set_title(f"{r.guarantee} on {r.db}{where}: effects {r.effects}/{r.n}, lost {r.lost}, "
                     f"duplicate keys {r.duplicate_keys}, redeliveries {r.redeliveries}", fontsize=9)
        ax.set_ylabel("messages")
    axes[-1, 0].set_xlabel("seconds (orange: worker SIGKILL, red: broker (node) SIGKILL, purple: forced crash)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10_000, help="messages per run")
    ap.add_argument("--worker-kills", type=int, default=20)
    ap.add_argument("--broker-kills", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--cluster", type=int, default=0, metavar="N", help="N cluster nodes instead of one broker")
    ap.add_argument("--lease-ttl", type=float, default=2.0, help="the cluster nodes' --lease-ttl")
    ap.add_argument("--out", type=Path, default=Path("chaos-results"))
    args = ap.parse_args()
    logging.getLogger("mailslot.client").setLevel(logging.ERROR)  # its reconnect notes would bury the bars
    runs = [(Guarantee.EXACTLY_ONCE, "sqlite"), (Guarantee.AT_LEAST_ONCE, "sqlite"), (Guarantee.AT_MOST_ONCE, "sqlite")]
    if not args.no_postgres:
        runs.insert(1, (Guarantee.EXACTLY_ONCE, "postgres"))
    if args.cluster:
        runs = [run for run in runs if run[0] is Guarantee.EXACTLY_ONCE]
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[ChaosResult] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[kills]}"),
                  TimeElapsedColumn()) as progress:
        for guarantee, db in runs:
            task = progress.add_task(f"{guarantee.value:>13} {db:8}", total=args.n, kills="")

            def update(r: ChaosResult, taken: int, task: int = task) -> None:
                progress.update(task, completed=min(taken, args.n),
                                kills=f"kills: worker {r.worker_kills}, broker {r.broker_kills}"
                                + (f", takeovers {r.takeovers}" if r.nodes else ""))

            with tempfile.TemporaryDirectory(prefix="mailslot-chaos-") as tmp:
                cfg = ChaosConfig(guarantee, Path(tmp), n=args.n, worker_kills=args.worker_kills,
                                  broker_kills=args.broker_kills, db=db, postgres_dsn=args.postgres,
                                  concurrency=args.concurrency, seed=args.seed,
                                  publish_seconds=max(3.0, args.n / 1000), timeout=3600, cluster=args.cluster,
                                  lease_ttl=args.lease_ttl)
                results.append(await run_chaos(cfg, update))
    print(table(results))
    (args.out / "chaos.json").write_text(json.dumps(
        {"seed": args.seed, "n": args.n, "results": [r.row() | {"kill_times": r.kill_times} for r in results]},
        indent=2))
    plot(results, args.out / "chaos.png")
    print(f"wrote {args.out / 'chaos.json'} and {args.out / 'chaos.png'}")
    exactly = [r for r in results if r.guarantee == Guarantee.EXACTLY_ONCE.value]
    ok = all(r.lost == 0 and r.duplicate_keys == 0 and r.effects == r.n and r.redeliveries > 0 for r in exactly)
    if args.cluster:
        ok = ok and all(r.takeovers >= 1 and r.owner_kills >= 1 and r.worker_node_kills >= 1 for r in exactly)
        for r in results:
            if r.node_errors:
                print(f"{r.guarantee} on {r.db}: the nodes logged errors:", *r.node_errors, sep="\n", file=sys.stderr)
                ok = False
    print("exactly-once held in every run" if ok else "EXACTLY-ONCE VIOLATED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
