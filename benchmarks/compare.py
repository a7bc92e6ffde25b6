"""mailslot against RabbitMQ, same workloads, same run, alternating (not a test; prints ratios).

    python benchmarks/compare.py [--quick] [--rounds 3] [--duration 10] [--rabbit URL] [--only a,b]
                                 [--others | --no-others] [--scrape]

Starts a fresh mailslot per workload (``python -m mailslot serve --store STORE``, default segments, temp data dir, uvloop)
and uses the RabbitMQ at --rabbit (default 127.0.0.1:5672). Each round runs ``mailslot bench --json`` in a
child process against both brokers, alternating which goes first; fresh queue names each run, deleted
after. Prints median throughput and p99 latency per broker and the ratio mailslot / RabbitMQ; writes
benchmarks/out/results.md and benchmarks/out/results.png.

With workload (a), when NATS (127.0.0.1:4222, JetStream) and/or Redis (127.0.0.1:6379) answer, each round
also runs the nearest equivalent of (a) on them (benchmarks/others.py: JetStream file storage with
PubAcks and explicit consumer acks; Redis Streams XADD / XREADGROUP / XACK) in the same alternation, and
results.md gets a table of them with the ratio mailslot / other and what their acks mean on disk (found on
the servers at run time). --no-others skips them; an unreachable service is reported as not reachable.

--scrape: while the workloads run, a monitoring client asks both brokers once a second for what a
dashboard and Prometheus would (GET /api/overview, a paged /api/queues, /metrics), so that the ratios
show what watching the broker costs it (the management issue's target: they hold within noise).
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
from typing import Any, ClassVar, Self

sys.path.insert(0, str(Path(__file__).resolve().parent))
import others as others_mod
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


OTHERS_WORKLOAD = "a"  # the workload others.py reproduces


def run_other(name: str, duration: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "others.py"), "--system", name,
           "--duration", str(duration), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120, check=False)
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"{name} run failed: {r.stderr.strip()[-800:]}")
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def others_facts(names: list[str]) -> dict[str, Any]:
    """Which of NATS / Redis answer, and what their acks mean on disk (others.gather_facts)."""
    try:
        import asyncio

        return asyncio.run(others_mod.gather_facts(names))  # type: ignore[no-any-return]
    except ImportError as exc:
        return {n: {"reachable": others_mod.reachable(n),
                    "error": f"client not installed ({exc}); pip install 'mailslot[bench]'"} for n in names}


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


class Scraper:
    """With a broker: GET /api/overview, a paged /api/queues and /metrics on it and on the reference RabbitMQ,
    once a second, in a daemon thread, for as long as the block runs (failures are counted, not raised)."""

    PATHS = ("{api}/api/overview", "{api}/api/queues?page=1&page_size=100", "{metrics}/metrics")
    RABBITMQ: ClassVar[dict[str, str]] = {"api": "http://127.0.0.1:15672", "metrics": "http://127.0.0.1:15692"}

    def __init__(self, broker: Any) -> None:
        import threading

        self.targets = [] if broker is None else [{"api": broker.http_url, "metrics": broker.prometheus_url},
                                                  self.RABBITMQ]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.scrapes = self.failures = 0

    def __enter__(self) -> Self:
        if self.targets:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.targets:
            self.thread.join(10)
            print(f"scraped {self.scrapes} times ({self.failures} failed)", flush=True)

    def run(self) -> None:
        import base64
        import urllib.request

        auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
        while not self.stop.wait(1.0):
            for target in self.targets:
                for path in self.PATHS:
                    try:
                        request = urllib.request.Request(path.format(**target), headers=auth)
                        with urllib.request.urlopen(request, timeout=10) as response:
                            response.read()
                        self.scrapes += 1
                    except OSError:
                        self.failures += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rabbit", default="amqp://guest:guest@127.0.0.1:5672/%2F", help="RabbitMQ URL")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per broker and workload (>= 3 recommended)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    ap.add_argument("--quick", action="store_true", help="3-second runs")
    ap.add_argument("--store", default="segments", help="mailslot's store: segments (default), sqlite or memory")
    ap.add_argument("--only", default="", help="comma-separated workload keys (default: all)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--scrape", action="store_true",
                    help="scrape both brokers' management API and metrics once a second during the runs")
    ap.add_argument("--others", action=argparse.BooleanOptionalAction, default=True,
                    help="with workload (a), also run its nearest equivalent on NATS JetStream (4222) and Redis "
                         "Streams (6379) where they answer (default: on; --no-others skips them)")
    args = ap.parse_args()
    duration = 3.0 if args.quick else args.duration
    chosen = [w for w in WORKLOADS if not args.only or w.key in args.only.split(",")]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    other_names = list(others_mod.SERVICES) if args.others and any(w.key == OTHERS_WORKLOAD for w in chosen) else []
    facts = others_facts(other_names) if other_names else {}
    others_runs: dict[str, list[dict[str, Any]]] = {n: [] for n in other_names}
    others_errors: dict[str, str] = {}
    for n in other_names:
        if not facts[n].get("reachable"):
            print(f"{others_mod.TITLES[n]} on {':'.join(map(str, others_mod.SERVICES[n]))}: not reachable", flush=True)
        elif "error" in facts[n]:
            others_errors[n] = facts[n]["error"]
            print(f"{others_mod.TITLES[n]}: {facts[n]['error']}", flush=True)
    live_others = [n for n in other_names if facts[n].get("reachable") and n not in others_errors]
    started = time.time()
    for w in chosen:
        runs: dict[str, list[dict[str, Any]]] = {"mailslot": [], "rabbitmq": []}
        extra = live_others if w.key == OTHERS_WORKLOAD else []
        with MailslotProcess(store=args.store) as broker, Scraper(broker if args.scrape else None):
            urls = {"mailslot": broker.url, "rabbitmq": args.rabbit}
            for rnd in range(args.rounds):
                order = ["mailslot", "rabbitmq", *extra]
                if rnd % 2:
                    order.reverse()
                for name in order:
                    if name in extra:
                        if name in others_errors:
                            continue
                        try:
                            r = run_other(name, duration)
                        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                            others_errors[name] = str(exc)
                            print(f"({w.key}) round {rnd + 1}/{args.rounds} {name:<8} failed: {exc}", flush=True)
                            continue
                        others_runs[name].append(r)
                        lat = r[w.latency]
                        print(f"({w.key}) round {rnd + 1}/{args.rounds} {name:<8} {r[w.metric]:>9,.0f} msg/s  "
                              f"published {r['published_per_s']:>9,.0f}/s  p99 {lat['p99']:7.1f} ms", flush=True)
                        continue
                    r = run_bench(urls[name], w, duration)
                    runs[name].append(r)
                    lat = r[w.latency]
                    print(f"({w.key}) round {rnd + 1}/{args.rounds} {name:<8} {r[w.metric]:>9,.0f} msg/s  "
                          f"published {r['published_per_s']:>9,.0f}/s  p99 {lat['p99']:7.1f} ms", flush=True)
        results[w.key] = runs
    table = report(chosen, results, args.rounds, duration, time.time() - started)
    if other_names:
        table += "\n\n" + report_others(next(w for w in chosen if w.key == OTHERS_WORKLOAD), results,
                                         others_runs, others_errors, facts, args.rounds, duration)
    print()
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    if other_names:
        (args.out / "others.json").write_text(json.dumps({"facts": facts, "runs": others_runs,
                                                          "errors": others_errors}, indent=1))
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


def report_others(w: Workload, results: dict[str, dict[str, list[dict[str, Any]]]],
                  runs: dict[str, list[dict[str, Any]]], errors: dict[str, str], facts: dict[str, Any],
                  rounds: int, duration: float) -> str:
    m = summarise(results[w.key]["mailslot"], w)
    lines = [
        f"## Workload ({w.key}) on NATS JetStream and Redis Streams",
        "",
        (f"Nearest equivalent of ({w.key}) with their Python clients (benchmarks/others.py), in the same "
         f"alternation as the AMQP runs: {rounds} rounds, {duration:g} s each, medians. "
         "Ratio = mailslot / other (throughput: > 1 is better; latency: < 1 is better)."),
        "",
        ("| system | msg/s | mailslot msg/s | ratio | p99 ms | mailslot p99 ms | p99 ratio | publish->ack p99 ms | "
         "min-max msg/s |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, system_runs in runs.items():
        title = others_mod.TITLES[name]
        if not facts.get(name, {}).get("reachable"):
            lines.append(f"| {title} | not reachable | | | | | | | |")
            continue
        if not system_runs:
            lines.append(f"| {title} | failed: {errors.get(name, 'no runs')[:120]} | | | | | | | |")
            continue
        o = summarise(system_runs, w)
        ratio = m["throughput"] / o["throughput"] if o["throughput"] else float("nan")
        lratio = m["p99"] / o["p99"] if o["p99"] else float("nan")
        lines.append(f"| {title} | {o['throughput']:,.0f} | {m['throughput']:,.0f} | {ratio:.2f} | {o['p99']:.1f} | "
                     f"{m['p99']:.1f} | {lratio:.2f} | {o['confirm_p99']:.1f} | {o['min']:,.0f}-{o['max']:,.0f} |")
    lines += ["", "What differs (found on these servers at run time):", ""]
    lines.append("- mailslot: a publisher confirm is sent after the message is fdatasync'd (group commit).")
    nf = facts.get("nats", {})
    if nf.get("reachable") and "sync_policy" in nf:
        lines.append(f"- NATS JetStream: {nf['sync_policy']}. Stream: file storage, work-queue retention, "
                     "1 replica; pull consumer with explicit acks, max_ack_pending 1000.")
    elif "nats" in facts:
        lines.append(f"- NATS JetStream: {nf.get('error', 'not reachable')}.")
    rf = facts.get("redis", {})
    if rf.get("reachable") and "sync_policy" in rf:
        lines.append(f"- Redis {rf.get('version')}: {rf['sync_policy']} (CONFIG GET appendonly={rf.get('appendonly')!r}, "
                     f"save={rf.get('save')!r}, appendfsync={rf.get('appendfsync')!r}).")
    elif "redis" in facts:
        lines.append(f"- Redis: {rf.get('error', 'not reachable')}.")
    lines += ["",
              ("So only mailslot's acknowledgement here says the message is on disk; the others acknowledge "
               "in memory or in the OS page cache, and a power loss can lose what they acknowledged. "
               "The clients differ too (nats-py and redis-py against mailslot bench's sans-IO AMQP client): "
               "part of each number is the Python client's cost.")]
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
