"""Transactions versus publisher confirms, mailslot against RabbitMQ (not a test; prints ratios).

    python benchmarks/tx_vs_confirms.py [--rounds 3] [--duration 5] [--cap 100000] [--rabbit URL]
                                        [--store segments] [--only confirms,tx1,tx10,tx100,tx1000,ctp100]

Starts a fresh mailslot (``python -m mailslot serve``, default store segments, temp data dir) and uses the
RabbitMQ at --rabbit. Persistent 256 B messages to a durable queue (fresh name per run, deleted after):

* ``confirms``  publisher confirms, window 256 (``publish_many(window=256)``)
* ``tx1``       a transaction per message: publish, tx.commit
* ``txN``       a transaction per batch of N: publish N, tx.commit (N = 10, 100, 1000)
* ``ctp100``    consume-transform-produce: per batch of 100 inputs (consumer, prefetch 200), publish 100
                outputs and ack the inputs (multiple) in ONE transaction; msg/s = inputs processed

Each run lasts --duration seconds or --cap messages, whichever comes first; rounds alternate which broker
goes first; the table shows medians and mailslot / RabbitMQ. The client is mailslot.client (the project's
sans-IO codec, about 1 % of a core at these rates), run in this process. Writes
benchmarks/out/tx_vs_confirms.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _broker import MailslotProcess

import mailslot.client

OUT = Path(__file__).resolve().parent / "out"
BODY = b"x" * 256
VARIANTS = {
    "confirms": "confirms, window 256",
    "tx1": "tx per message",
    "tx10": "tx per batch of 10",
    "tx100": "tx per batch of 100",
    "tx1000": "tx per batch of 1000",
    "ctp100": "consume-transform-produce, tx per 100",
}
_names = itertools.count(1)


async def _publish_runs(ch: Any, queue: str, variant: str, duration: float, cap: int) -> tuple[int, float]:
    """Publish until ``duration`` or ``cap``: (messages made durable, i.e. confirmed/committed, seconds)."""
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + duration
    if variant == "confirms":
        chunk = [("", queue, BODY)] * 2048  # several windows per call; the deadline is checked per chunk
        while done < cap and time.perf_counter() < deadline:
            done += await ch.publish_many(chunk[: cap - done], window=256)
        return done, time.perf_counter() - t0
    await ch.tx_select()
    batch = int(variant[2:])
    msgs = [("", queue, BODY)] * batch
    t0 = time.perf_counter()
    deadline = t0 + duration
    while done < cap and time.perf_counter() < deadline:
        if batch == 1:
            await ch.publish("", queue, BODY)
        else:
            await ch.publish_many(msgs, window=batch)  # in tx mode: written, not confirmed
        await ch.tx_commit()
        done += batch
    return done, time.perf_counter() - t0


async def _ctp(conn: Any, queue: str, duration: float, cap: int, batch: int = 100) -> tuple[int, float]:
    """Consume ``batch`` inputs, publish ``batch`` outputs and ack the inputs in one transaction, repeatedly:
    (inputs processed, seconds). The inputs are published first, untimed."""
    out = f"{queue}-out"
    setup = await conn.channel()
    await setup.declare_queue(out, durable=True)
    await setup.publish_many([("", queue, BODY)] * cap, window=1000)
    tx = await conn.channel()
    await tx.tx_select()
    outputs = [("", out, BODY)] * batch
    done = 0
    try:
        async with tx.consume(queue, prefetch=2 * batch) as messages:
            t0 = time.perf_counter()
            deadline = t0 + duration
            while done + batch <= cap and time.perf_counter() < deadline:
                got: list[Any] = []
                while len(got) < batch:
                    got += await messages.next_batch(batch - len(got))
                await tx.publish_many(outputs, window=batch)
                await tx.ack(got[-1], multiple=True)
                await tx.tx_commit()
                done += batch
            elapsed = time.perf_counter() - t0
    finally:
        await setup.delete_queue(out)
    return done, elapsed


async def run_one(url: str, variant: str, duration: float, cap: int) -> float:
    """One run on a fresh queue (deleted after): msg/s."""
    conn = await mailslot.client.connect(url)
    try:
        ch = await conn.channel()
        queue = f"txbench-{os.getpid()}-{next(_names)}"
        await ch.declare_queue(queue, durable=True)
        if variant == "ctp100":
            n, elapsed = await _ctp(conn, queue, duration, cap)
        else:
            n, elapsed = await _publish_runs(ch, queue, variant, duration, cap)
        await (await conn.channel()).delete_queue(queue)
    finally:
        await conn.close()
    return n / elapsed


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} vCPU {model}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


async def main_async(args: argparse.Namespace) -> int:
    chosen = [v for v in VARIANTS if not args.only or v in args.only.split(",")]
    results: dict[str, dict[str, list[float]]] = {v: {"mailslot": [], "rabbitmq": []} for v in chosen}
    started = time.time()
    with MailslotProcess(store=args.store) as broker:
        urls = {"mailslot": broker.url, "rabbitmq": args.rabbit}
        for rnd in range(args.rounds):
            for v in chosen:
                order = ["mailslot", "rabbitmq"] if (rnd + chosen.index(v)) % 2 == 0 else ["rabbitmq", "mailslot"]
                for name in order:
                    rate = await run_one(urls[name], v, args.duration, args.cap)
                    results[v][name].append(rate)
                    print(f"round {rnd + 1}/{args.rounds} {v:<9} {name:<9} {rate:>10,.0f} msg/s", flush=True)
    table = report(chosen, results, args, time.time() - started)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tx_vs_confirms.md").write_text(table + "\n")
    (args.out / "tx_vs_confirms.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                                              "machine": machine(), "results": results}, indent=1))
    print(f"\nwrote {args.out / 'tx_vs_confirms.md'} and .json")
    return 0


def report(chosen: list[str], results: dict[str, dict[str, list[float]]], args: argparse.Namespace,
           took: float) -> str:
    med = {v: {b: statistics.median(r) for b, r in results[v].items()} for v in chosen}
    base = {b: med["confirms"][b] for b in ("mailslot", "rabbitmq")} if "confirms" in med else None
    lines = [
        (f"{args.rounds} alternating rounds, up to {args.duration:g} s or {args.cap:,} messages per run; medians;"
         f" persistent 256 B messages, durable queues. Run took {took:.0f} s. Machine: {machine()}."),
        "",
        "| pattern | mailslot msg/s | RabbitMQ msg/s | mailslot / RabbitMQ |"
        + (" mailslot vs its confirms | RabbitMQ vs its confirms |" if base else ""),
        "|---|---:|---:|---:|" + ("---:|---:|" if base else ""),
    ]
    for v in chosen:
        m, r = med[v]["mailslot"], med[v]["rabbitmq"]
        row = f"| {VARIANTS[v]} | {m:,.0f} | {r:,.0f} | {m / r:.2f} |"
        if base:
            row += f" {m / base['mailslot']:.2f} | {r / base['rabbitmq']:.2f} |"
        lines.append(row)
    lines.append("")
    lines.append("Spread (min-max msg/s): " + "; ".join(
        f"{v} mailslot {min(results[v]['mailslot']):,.0f}-{max(results[v]['mailslot']):,.0f},"
        f" RabbitMQ {min(results[v]['rabbitmq']):,.0f}-{max(results[v]['rabbitmq']):,.0f}" for v in chosen))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rabbit", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per run at most")
    ap.add_argument("--cap", type=int, default=100_000, help="messages per run at most (bounds the backlog)")
    ap.add_argument("--store", default="segments", help="mailslot's store: segments (default), sqlite")
    ap.add_argument("--only", default="", help="comma-separated variants (default: all): " + ",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=OUT)
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
