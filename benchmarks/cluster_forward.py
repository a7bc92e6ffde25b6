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
CPU per message of each broker process (user + system seconds / messages consumed or confirmed).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import uuid
from typing import Any

import psutil
import psycopg
from psycopg import sql

from mailslot.bench.broker_process import BrokerProcess
from mailslot.bench.runner import BenchConfig, run_bench

DSN = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "benchmark-cluster-secret-0123456789"


def _cpu(process: BrokerProcess) -> float:
    times = psutil.Process(process.pid).cpu_times()
    return float(times.user + times.system)


async def _known_everywhere(http_url: str, queues: list[str], owner: str) -> None:
    """Wait until the node at ``http_url`` knows every queue and who owns it (the sync and the poller)."""
    import aiohttp

    headers = {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}
    async with aiohttp.ClientSession(headers=headers) as http:
        for _ in range(400):
            found = 0
            for name in queues:
                async with http.get(f"{http_url}/api/queues/%2F/{name}") as response:
                    if response.status == 200 and (await response.json())["node"] == owner:
                        found += 1
            if found == len(queues):
                return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{http_url} did not learn the queues {queues}")


async def one_run(case: str, nodes: dict[str, BrokerProcess], duration: float, consumers: int) -> dict[str, Any]:
    single, a, b = nodes["single"], nodes["a"], nodes["b"]
    client, owner = {"single": (single, single), "owner": (a, a), "forwarded": (b, a)}[case]

    async def prepared(queues: list[str]) -> None:
        if client is not owner:
            await _known_everywhere(client.http_url, queues, "a")

    cfg = BenchConfig(url=client.url, declare_url=owner.url, prepared=prepared, duration=duration,
                      consumers=consumers, size=256, confirm=1000, prefetch=1000, multi_ack=100)
    before = {name: _cpu(p) for name, p in nodes.items()}
    result = await run_bench(cfg)
    cpu = {name: _cpu(p) - before[name] for name, p in nodes.items()}
    messages = result["consumed"] if consumers else result["confirmed"]
    return {"case": case, "consumers": consumers, "rate": messages / result["elapsed_s"], "messages": messages,
            "cpu_us": {name: 1e6 * seconds / max(messages, 1) for name, seconds in cpu.items() if seconds > 0.05}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--dsn", default=DSN)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    schemas = [f"bench_cluster_{tag}", f"bench_single_{tag}"]
    links = tempfile.mkdtemp(prefix="mailslot-links-")
    common = ("--store", "postgres", "--postgres-dsn", args.dsn)
    cluster = ("--postgres-schema", schemas[0], "--cluster", "--cluster-secret", SECRET)
    nodes = {
        "single": BrokerProcess("postgres", extra_args=(*common[2:], "--postgres-schema", schemas[1],
                                                         "--node-name", "single")),
        "a": BrokerProcess("postgres", extra_args=(*common[2:], *cluster, "--node-name", "a",
                                                    "--cluster-link", f"unix:{links}/a.sock")),
        "b": BrokerProcess("postgres", extra_args=(*common[2:], *cluster, "--node-name", "b",
                                                    "--cluster-link", f"unix:{links}/b.sock")),
    }
    runs: list[dict[str, Any]] = []
    try:
        for process in nodes.values():
            process.log_level = "info"  # BrokerProcess waits for the start-up line
            process.start()
        plan = [("single", 1), ("owner", 1), ("forwarded", 1), ("owner", 0), ("forwarded", 0)]
        for round_no in range(args.rounds):
            order = plan if round_no % 2 == 0 else plan[::-1]
            for case, consumers in order:
                run = asyncio.run(one_run(case, nodes, args.duration, consumers))
                run["round"] = round_no
                runs.append(run)
                print(f"round {round_no} {case:9} {'end-to-end' if consumers else 'publish-only':12} "
                      f"{run['rate']:>9,.0f} msg/s  cpu us/msg {run['cpu_us']}", flush=True)
    finally:
        for process in nodes.values():
            process.stop()
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    report(runs)
    return 0


def report(runs: list[dict[str, Any]]) -> None:
    def rates(case: str, consumers: int) -> dict[int, float]:
        return {r["round"]: r["rate"] for r in runs if r["case"] == case and r["consumers"] == consumers}

    print("\nmedians (msg/s):")
    for case, consumers in (("single", 1), ("owner", 1), ("forwarded", 1), ("owner", 0), ("forwarded", 0)):
        values = list(rates(case, consumers).values())
        cpu = [r["cpu_us"] for r in runs if r["case"] == case and r["consumers"] == consumers]
        nodes = sorted({n for c in cpu for n in c})
        cpu_text = ", ".join(f"{n} {statistics.median(c.get(n, 0.0) for c in cpu):.1f}" for n in nodes)
        print(f"  {case:9} {'end-to-end' if consumers else 'publish-only':12} {statistics.median(values):>9,.0f}"
              f"  (range {min(values):,.0f}-{max(values):,.0f}); CPU us/msg: {cpu_text}")
    for label, top, bottom, consumers in (("forwarded / owner, end-to-end", "forwarded", "owner", 1),
                                          ("forwarded / owner, publish-only", "forwarded", "owner", 0),
                                          ("owner / single, end-to-end", "owner", "single", 1)):
        t, b = rates(top, consumers), rates(bottom, consumers)
        ratios = [t[r] / b[r] for r in sorted(t) if b.get(r)]
        print(f"  {label}: {statistics.median(ratios):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    raise SystemExit(main())
