"""A/B benchmark of the message logs' hot path (not a test): two source trees, interleaved rounds.

    python benchmarks/store_ab.py --a /tmp/baseline/src --b src [--rounds 5] [--seconds 1.5]
                                  [--backends segments,sqlite] [--dir DIR]

Each round runs every workload once per tree, each in a fresh subprocess (``PYTHONPATH=<tree>``),
A then B then A ...; the table shows per-tree medians and B/A. Interleaving keeps the ratio honest on
a shared machine whose speed drifts. Workloads are the ones the broker leans on: append + commit in
batches of 1000 and of 1 (256 B bodies), the steady state (append 1000, remove the previous 1000, one
commit), and paging reads of 1000 rows. Run it on the disk the broker uses (--dir; tmpfs hides fsync).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORKLOADS = ["append+commit x1000 (rows/s)", "append+commit x1 (commits/s)",
             "append 1000 + remove previous 1000 (rows/s)", "read pages of 1000 (rows/s)"]

# Runs in the child, against whichever ``mailslot`` its PYTHONPATH holds.
CHILD = r"""
import json, sys, time
from pathlib import Path
from mailslot.storage.api import StoredMessage
from mailslot.storage.segments import open_segment_store
from mailslot.storage.sqlite import open_sqlite_store

backend, root, secs, workload = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
log, meta = (open_segment_store if backend == "segments" else open_sqlite_store)(root)
BODY, PROPS = b"x" * 256, b"\x90\x00\x0atext/plain\x02"
nxt = [1]

def batch(q, start, n):
    return [StoredMessage(q, s, "amq.direct", "jobs", PROPS, BODY, True) for s in range(start, start + n)]

def rate(fn):
    fn()
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    while (el := time.perf_counter() - t0) < secs:
        done += fn()
    return [done / el, done / max(time.process_time() - c0, 1e-9)]

def append(n, ack_previous=False):
    def run():
        start = nxt[0]
        log.stage_append(batch("q", start, n))
        nxt[0] += n
        if ack_previous and start > n:
            log.stage_remove("q", list(range(start - n, start)))
        log.commit()
        return n
    return run

if workload.startswith("append+commit x1000"):
    r = rate(append(1000))
elif workload.startswith("append+commit x1 "):
    r = rate(append(1))
elif workload.startswith("append 1000"):
    r = rate(append(1000, ack_previous=True))
else:
    for s in range(1, 100_001, 10_000):
        log.stage_append(batch("r", s, 10_000))
        log.commit()
    def read_all():
        after, n = 0, 0
        while page := log.read("r", after, 1000):
            after = page[-1].seq
            n += len(page)
        return n
    r = rate(read_all)
log.close()
meta.close()
print(json.dumps(r))  # [units per wall second, units per CPU second of this process]
"""


def run_child(tree: Path, backend: str, root: Path, secs: float, workload: str) -> list[float]:
    data = root / "data"
    shutil.rmtree(data, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, backend, str(data), str(secs), workload],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    shutil.rmtree(data, ignore_errors=True)
    return [float(x) for x in json.loads(out)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", type=Path, required=True, help="source tree A (the baseline), e.g. a checkout's src")
    ap.add_argument("--b", type=Path, required=True, help="source tree B (the change)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--backends", default="segments,sqlite")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailslot-ab-", dir=args.dir))
    backends = args.backends.split(",")
    results: dict[tuple[str, str, str], list[list[float]]] = {}
    try:
        for r in range(args.rounds):
            for backend in backends:
                for w in WORKLOADS:
                    for label, tree in (("A", args.a), ("B", args.b)):
                        v = run_child(tree.resolve(), backend, root, args.seconds, w)
                        results.setdefault((backend, w, label), []).append(v)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"A = {args.a}   B = {args.b}   medians of {args.rounds} interleaved rounds, {args.seconds} s each")
    print("wall: units per second; cpu: units per CPU-second of the benchmark process (fsync waits excluded;")
    print("steadier than wall time on a shared machine)")
    print(f"{'backend':<10}{'workload':<46}{'A wall':>11}{'B wall':>11}{'B/A':>7}{'A cpu':>11}{'B cpu':>11}{'B/A':>7}"
          "   cpu B/A per round")
    for backend in backends:
        for w in WORKLOADS:
            a, b = results[(backend, w, "A")], results[(backend, w, "B")]
            cells = ""
            for k in (0, 1):
                ma, mb = statistics.median(x[k] for x in a), statistics.median(x[k] for x in b)
                cells += f"{ma:>11,.0f}{mb:>11,.0f}{mb / ma:>7.3f}"
            per_round = " ".join(f"{y[1] / x[1]:.2f}" for x, y in zip(a, b))
            print(f"{backend:<10}{w:<46}{cells}   {per_round}")


if __name__ == "__main__":
    main()
