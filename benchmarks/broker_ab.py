"""A/B of two source trees on the broker's hot path (not a test): workload (a) of compare.py, mailslot only.

    python benchmarks/broker_ab.py --a /tmp/before/src --b src [--rounds 8] [--duration 5]

Each round starts a broker subprocess from tree A and one from tree B (``PYTHONPATH=<tree>``, segments
store, temp data dir), alternating which goes first, and runs ``mailslot bench`` (from tree B, so the
client is the same) against it. Prints per-round results, medians and B/A.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from mailslot.bench.broker_process import BrokerProcess

ARGS = ["--persistent", "--confirm", "1000", "--prefetch", "1000", "--multi-ack", "100", "--size", "256"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", type=Path, required=True, help="source tree A (the baseline)")
    ap.add_argument("--b", type=Path, required=True, help="source tree B (the change)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args()
    trees = {"A": str(args.a.resolve()), "B": str(args.b.resolve())}
    results: dict[str, list[float]] = {"A": [], "B": []}
    for r in range(args.rounds):
        for k in ("A", "B") if r % 2 == 0 else ("B", "A"):
            os.environ["PYTHONPATH"] = trees[k]  # the broker subprocess imports this tree
            with BrokerProcess(store="segments") as broker:
                os.environ["PYTHONPATH"] = trees["B"]
                out = subprocess.run(
                    [sys.executable, "-m", "mailslot", "bench", "--url", broker.url, "--duration",
                     str(args.duration), "--json", "--quiet", *ARGS],
                    capture_output=True, text=True, check=True,
                ).stdout
            rate = json.loads(out)["consumed_per_s"]
            results[k].append(rate)
            print(f"round {r + 1}/{args.rounds} {k} {rate:,.0f} msg/s", flush=True)
    a, b = statistics.median(results["A"]), statistics.median(results["B"])
    per_round = " ".join(f"{y / x:.2f}" for x, y in zip(results["A"], results["B"]))
    print(f"A median {a:,.0f} msg/s, B median {b:,.0f} msg/s, B/A {b / a:.3f}; per round {per_round}")


if __name__ == "__main__":
    main()
