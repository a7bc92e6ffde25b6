"""The core loop of this checkout against another commit's, in one run (not a test; prints ratios).

    flock /tmp/mailslot-bench.lock python benchmarks/core_loop_compare.py [--ref main] [--rounds 5]
                                                                          [--count 100000]

The reference tree is ``git archive <ref> src`` into a temporary directory. Every round runs each
workload of benchmarks/core_loop.py (publish -> flush -> deliver -> ack, 500 at a time, memory store)
once per tree, each in a fresh subprocess (``PYTHONPATH=<tree>``), the order of the two trees swapped
every round, and measures CPU time (``time.process_time``), which a shared machine disturbs less than
wall time. Both trees run the same harness (this checkout's core_loop.py) through the public core API.

Printed per workload: the median CPU-time rate of each tree and the median of the per-round ratios
``this / reference`` (rate over rate; >= 1: this checkout is not slower).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

WORKLOADS: dict[str, dict[str, object]] = {
    "plain": {},
    "ttl": {"x-message-ttl": 60_000},
    "priority": {"x-max-priority": 5},
}

# Runs in the child against whichever ``mailslot`` its PYTHONPATH holds; prints that file and the rate.
CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import mailslot, core_loop
rate = core_loop.run(json.loads(sys.argv[2]), int(sys.argv[3]), timer=time.process_time)
print(json.dumps({"rate": rate, "mailslot": mailslot.__file__}))
"""


def reference_tree(ref: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def run_child(tree: Path, arguments: dict[str, object], count: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(HERE), json.dumps(arguments), str(count)],
        env=env, check=True, capture_output=True, text=True,
    )
    result = json.loads(out.stdout)
    if not Path(result["mailslot"]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the child imported {result['mailslot']}, not the tree {tree}")
    return float(result["rate"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="main", help="the reference commit (default: main)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=100_000, help="messages per run")
    args = parser.parse_args()
    this = ROOT / "src"
    with tempfile.TemporaryDirectory(prefix="core-loop-ref-") as tmp:
        ref = reference_tree(args.ref, Path(tmp))
        rates: dict[str, dict[str, list[float]]] = {name: {"this": [], "ref": []} for name in WORKLOADS}
        ratios: dict[str, list[float]] = {name: [] for name in WORKLOADS}
        for round_ in range(args.rounds):
            for name, arguments in WORKLOADS.items():
                order = [("this", this), ("ref", ref)] if round_ % 2 == 0 else [("ref", ref), ("this", this)]
                got = {side: run_child(tree, arguments, args.count) for side, tree in order}
                for side, rate in got.items():
                    rates[name][side].append(rate)
                ratios[name].append(got["this"] / got["ref"])
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {r[-1]:.3f}" for n, r in ratios.items()), flush=True)
    print(f"\nCPU-time rates, medians of {args.rounds} rounds ({args.count:,} messages a run); ref = {args.ref}")
    print(f"{'workload':<10} {'this msg/s':>12} {'ref msg/s':>12} {'this/ref':>9}  per round")
    for name in WORKLOADS:
        mine, theirs = statistics.median(rates[name]["this"]), statistics.median(rates[name]["ref"])
        per_round = " ".join(f"{r:.2f}" for r in ratios[name])
        print(f"{name:<10} {mine:>12,.0f} {theirs:>12,.0f} {statistics.median(ratios[name]):>9.2f}  {per_round}")


if __name__ == "__main__":
    main()
