"""mailslot against RabbitMQ, same workloads, same run, alternating (not a test; prints ratios).

    python benchmarks/compare.py [--quick] [--rounds 3] [--duration 10] [--rabbit URL] [--only a,b]

Starts a fresh mailslot per workload (``python -m mailslot serve --store STORE``, default segments, temp data dir, uvloop)
and uses the RabbitMQ at --rabbit (default 127.0.0.1:5672). Each round runs ``mailslot bench --json`` in a
child process against both brokers, alternating which goes first; fresh queue names each run, deleted
after. Prints median throughput and p99 latency per broker and the ratio mailslot / RabbitMQ; writes
benchmarks/out/results.md and benchmarks/out/results.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _broker import MailslotProcess

OUT = Path(__file__).resolve().parent / "out"


@dataclass
class Workload:
    key: str
    title: str
    args: list[str]
    metric: str  # the throughput that matters: consumed_per_s / confirmed_per_s
    latency: str  # deliver_latency_ms / confirm_latency_ms


WORKLOADS = [
    Workload("a", "persistent, confirms 1000, multi-ack 100, prefetch 1000, 256 B",
             ["--persistent", "--confirm", "1000", "--prefetch", "1000", "--multi-ack", "100", "--size", "256"],
             "consumed_per_s", "deliver_latency_ms"),
    Workload("b", "as (a), 4 KB bodies",
             ["--persistent", "--confirm", "1000", "--prefetch", "1000", "--multi-ack", "100", "--size", "4096"],
             "consumed_per_s", "deliver_latency_ms"),
    Workload("c", "transient, no confirms, auto-ack, 256 B",
             ["--transient", "--confirm", "0", "--auto-ack", "--size", "256"],
             "consumed_per_s", "deliver_latency_ms"),
    Workload("d", "10 producers, 10 consumers, 10 queues, persistent + confirms",
             ["--producers", "10", "--consumers", "10", "--queues", "10", "--persistent", "--confirm", "1000",
              "--prefetch", "1000", "--multi-ack", "100", "--size", "256"],
             "consumed_per_s", "deliver_latency_ms"),
    Workload("e", "steady 5,000 msg/s, persistent + confirms: p99 publish->deliver",
             ["--rate", "5000", "--persistent", "--confirm", "1000", "--prefetch", "1000", "--multi-ack", "100",
              "--size", "256"],
             "consumed_per_s", "deliver_latency_ms"),
]


def run_bench(url: str, w: Workload, duration: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "mailslot", "bench", "--url", url, "--duration", str(duration), "--json",
           "--quiet", *w.args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120, check=False)
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"bench failed against {url}: {r.stderr.strip()[-800:]}")
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def summarise(runs: list[dict[str, Any]], w: Workload) -> dict[str, float]:
    return {
        "throughput": statistics.median(r[w.metric] for r in runs),
        "published": statistics.median(r["published_per_s"] for r in runs),
        "p99": statistics.median(r[w.latency]["p99"] for r in runs),
        "p50": statistics.median(r[w.latency]["p50"] for r in runs),
        "confirm_p99": statistics.median(r["confirm_latency_ms"]["p99"] for r in runs),
        "min": min(r[w.metric] for r in runs),
        "max": max(r[w.metric] for r in runs),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rabbit", default="amqp://guest:guest@127.0.0.1:5672/%2F", help="RabbitMQ URL")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per broker and workload (>= 3 recommended)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    ap.add_argument("--quick", action="store_true", help="3-second runs")
    ap.add_argument("--store", default="segments", help="mailslot's store: segments (default), sqlite or memory")
    ap.add_argument("--only", default="", help="comma-separated workload keys (default: all)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    duration = 3.0 if args.quick else args.duration
    chosen = [w for w in WORKLOADS if not args.only or w.key in args.only.split(",")]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    started = time.time()
    for w in chosen:
        runs: dict[str, list[dict[str, Any]]] = {"mailslot": [], "rabbitmq": []}
        with MailslotProcess(store=args.store) as broker:
            urls = {"mailslot": broker.url, "rabbitmq": args.rabbit}
            for rnd in range(args.rounds):
                order = ["mailslot", "rabbitmq"] if rnd % 2 == 0 else ["rabbitmq", "mailslot"]
                for name in order:
                    r = run_bench(urls[name], w, duration)
                    runs[name].append(r)
                    lat = r[w.latency]
                    print(f"({w.key}) round {rnd + 1}/{args.rounds} {name:<8} {r[w.metric]:>9,.0f} msg/s  "
                          f"published {r['published_per_s']:>9,.0f}/s  p99 {lat['p99']:7.1f} ms", flush=True)
        results[w.key] = runs
    table = report(chosen, results, args.rounds, duration, time.time() - started)
    print()
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    chart(chosen, results, args.out / "results.png")
    print(f"\nwrote {args.out / 'results.md'} and {args.out / 'results.png'}")
    return 0


def report(chosen: list[Workload], results: dict[str, dict[str, list[dict[str, Any]]]], rounds: int,
           duration: float, took: float) -> str:
    lines = [
        "# mailslot vs RabbitMQ",
        "",
        (f"{rounds} alternating rounds per broker and workload, {duration:g} s each; medians "
        f"(throughput = consumed msg/s; latency = publish->deliver p99). Run took {took:.0f} s."),
        "Ratio = mailslot / RabbitMQ (throughput: > 1 is better; latency: < 1 is better).",
        "",
        "| workload | mailslot msg/s | RabbitMQ msg/s | ratio | mailslot p99 ms | RabbitMQ p99 ms | p99 ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for w in chosen:
        m = summarise(results[w.key]["mailslot"], w)
        r = summarise(results[w.key]["rabbitmq"], w)
        ratio = m["throughput"] / r["throughput"] if r["throughput"] else float("nan")
        lratio = m["p99"] / r["p99"] if r["p99"] else float("nan")
        lines.append(f"| ({w.key}) {w.title} | {m['throughput']:,.0f} | {r['throughput']:,.0f} | {ratio:.2f} | "
                     f"{m['p99']:.1f} | {r['p99']:.1f} | {lratio:.2f} |")
    lines += ["", "Spread (min-max consumed msg/s) and publish->confirm p99 (median):", ""]
    for w in chosen:
        m = summarise(results[w.key]["mailslot"], w)
        r = summarise(results[w.key]["rabbitmq"], w)
        lines.append(f"- ({w.key}) mailslot {m['min']:,.0f}-{m['max']:,.0f}, confirm p99 {m['confirm_p99']:.1f} ms; "
                     f"RabbitMQ {r['min']:,.0f}-{r['max']:,.0f}, confirm p99 {r['confirm_p99']:.1f} ms")
    return "\n".join(lines)


def chart(chosen: list[Workload], results: dict[str, dict[str, list[dict[str, Any]]]], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib not installed (pip install 'mailslot[bench]'): no chart")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [w.key for w in chosen]
    ms = [summarise(results[w.key]["mailslot"], w) for w in chosen]
    rb = [summarise(results[w.key]["rabbitmq"], w) for w in chosen]
    x = range(len(keys))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.38
    ax1.bar([i - width / 2 for i in x], [s["throughput"] for s in ms], width, label="mailslot")
    ax1.bar([i + width / 2 for i in x], [s["throughput"] for s in rb], width, label="RabbitMQ")
    ax1.set_xticks(list(x), [f"({k})" for k in keys])
    ax1.set_ylabel("consumed msg/s (median)")
    ax1.set_title("Throughput")
    ax1.legend()
    ax2.bar([i - width / 2 for i in x], [s["p99"] for s in ms], width, label="mailslot")
    ax2.bar([i + width / 2 for i in x], [s["p99"] for s in rb], width, label="RabbitMQ")
    ax2.set_xticks(list(x), [f"({k})" for k in keys])
    ax2.set_ylabel("publish->deliver p99 ms (median)")
    ax2.set_title("p99 latency")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
