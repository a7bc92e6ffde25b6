"""Delivery latency while the segment log compacts, against latency outside compaction (issue 15: "during a
long drain the spike picture shows delivery dips of 1-2 s about every 40 s"). Not a test.

    flock /tmp/mailslot-bench.lock python benchmarks/compaction_latency.py \
        [--before /tmp/before/src] [--after src] [--rounds 3] [--fill 1000000]

Each round starts a fresh broker child (segments store, ``PYTHONPATH=<tree>``; with --before, rounds
alternate before / after). The workload is a long drain with parked messages, the shape that makes
closed segments mostly dead but not empty:

1. fill: ``--fill`` persistent 256 B messages into ``backlog``, every ``--park-every``-th into ``parked``
   (a dead-letter queue nobody reads: it keeps a few live records in every segment), with confirms;
2. drain: a consumer empties ``backlog`` at ``--consume-rate`` acks a second (paced workers: the broker has
   time to spare, so a stall shows) while a producer goes on at ``--drain-rate`` msg/s (backlog and
   parked), until the backlog is empty, then ``--tail`` seconds more;
3. all along the drain, a probe producer publishes ``--probe-rate`` persistent stamped messages a second
   into ``probe`` and a consumer takes them at once: its publish->deliver latency is what a live consumer
   sees.

Compaction steps are timed in the broker by a probe (``_compaction_probe/sitecustomize.py``, benchmark
instrumentation) wrapping ``SegmentMessageLog._compact_segment``; steps less than a second apart form one
compaction window. A probe delivery is *during* compaction when it arrives inside a window or up to
0.25 s after it ends, else *outside*. The table: p99 latency during / outside and their ratio (the
target: within 2x), per tree, medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pamqp import commands

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _broker import MailslotProcess

from mailslot.bench.driver import AMQPUrl, ClientProtocol, connect
from mailslot.protocols.amqp091.events import Confirm, Delivery, Event

STAMP = struct.Struct(">Q")  # send time, time.monotonic_ns()
PERSISTENT = commands.Basic.Properties(delivery_mode=2)
WINDOW_GAP_NS = 1_000_000_000  # compaction steps closer than this are one window
AFTER_NS = 250_000_000  # deliveries this soon after a window still count as during it


def p99(values: list[int]) -> float:
    """Nearest-rank p99 in milliseconds (0.0 without values)."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, -(-99 * len(s) // 100) - 1))] / 1e6


async def _channel(proto: ClientProtocol, queues: list[str], *, confirm: bool = False, prefetch: int = 0) -> None:
    conn = proto.conn
    await proto.call(1, lambda: conn.open_channel(1), commands.Channel.OpenOk)
    for q in queues:
        await proto.call(1, lambda q=q: conn.queue_declare(1, q, durable=True), commands.Queue.DeclareOk)  # type: ignore[misc]
    if confirm:
        await proto.call(1, lambda: conn.confirm_select(1), commands.Confirm.SelectOk)
    if prefetch:
        await proto.call(1, lambda: conn.basic_qos(1, prefetch), commands.Basic.QosOk)


class Publisher:
    """Publishes into ``backlog`` with every ``park_every``-th message into ``parked``, confirm window."""

    def __init__(self, proto: ClientProtocol, size: int, park_every: int, window: int = 4000) -> None:
        self.proto = proto
        conn = proto.conn
        body = b"\x00" * size
        self.backlog = conn.publish_template(1, "", "backlog", body, properties=PERSISTENT, stamp_size=STAMP.size)
        self.parked = conn.publish_template(1, "", "parked", body, properties=PERSISTENT)
        self.park_every = park_every
        self.window = window
        self.sent = 0  # confirm tags handed out
        self.confirmed = 0
        self.to_backlog = 0
        self.wake = asyncio.Event()
        proto.handler = self.on_events

    def on_events(self, events: list[Event]) -> None:
        other = []
        for ev in events:
            if type(ev) is Confirm:
                if not ev.ack:
                    raise RuntimeError("the broker nacked a publish")
                self.confirmed = max(self.confirmed, ev.delivery_tag)  # the broker confirms in order here
                self.wake.set()
            else:
                other.append(ev)
        if other:
            self.proto.control(other)

    def publish(self, n: int) -> None:
        conn = self.proto.conn
        stamp = STAMP.pack(time.monotonic_ns())
        for _ in range(n):
            self.sent = conn.publish_stamped(self.backlog, [stamp])
            self.to_backlog += 1
            if self.to_backlog % (self.park_every - 1) == 0:
                self.sent = conn.publish(self.parked)
        self.proto.flush()

    async def fill(self, total: int) -> None:
        while self.to_backlog < total:
            while self.sent - self.confirmed >= self.window:
                self.wake.clear()
                await self.wake.wait()
            self.publish(min(1000, total - self.to_backlog))
        while self.confirmed < self.sent:
            self.wake.clear()
            await self.wake.wait()

    async def steady(self, rate: int, stop: asyncio.Event) -> None:
        start = time.monotonic()
        done = 0
        while not stop.is_set():
            await asyncio.sleep(0.01)  # a load generator's tick, not synchronisation
            due = int((time.monotonic() - start) * rate) - done
            if due > 0 and self.sent - self.confirmed < self.window:
                self.publish(due)
                done += due


class Drainer:
    """Consumes ``backlog`` at ``rate`` msg/s, as workers that each take their time: deliveries are bounded
    by the prefetch and acked (multiple) at the rate, so the broker has time to spare and a stall shows."""

    def __init__(self, proto: ClientProtocol, rate: int) -> None:
        self.proto = proto
        self.rate = rate
        self.consumed = 0  # acked
        self.delivered: list[int] = []  # tags not acked yet
        proto.handler = self.on_events

    def on_events(self, events: list[Event]) -> None:
        other = []
        for ev in events:
            if type(ev) is Delivery:
                self.delivered.append(ev.delivery_tag)
            else:
                other.append(ev)
        if other:
            self.proto.control(other)

    async def run(self, until: Any) -> None:
        start = time.monotonic()
        while not until():
            await asyncio.sleep(0.01)  # the workers' tick, not synchronisation
            due = int((time.monotonic() - start) * self.rate) - self.consumed
            n = min(due, len(self.delivered))
            if n > 0:
                self.proto.conn.basic_ack(1, self.delivered[n - 1], True)
                del self.delivered[:n]
                self.consumed += n
                self.proto.flush()


class Probe:
    """Publishes stamped messages into ``probe`` at ``rate``; its consumer records (arrival, latency) in ns."""

    def __init__(self, pub: ClientProtocol, sub: ClientProtocol, size: int) -> None:
        self.pub = pub
        self.sub = sub
        self.template = pub.conn.publish_template(1, "", "probe", b"\x00" * size, properties=PERSISTENT,
                                                  stamp_size=STAMP.size)
        self.samples: list[tuple[int, int]] = []
        self.recording = False
        sub.handler = self.on_events
        pub.handler = pub.control

    def on_events(self, events: list[Event]) -> None:
        now = time.monotonic_ns()
        other = []
        for ev in events:
            if type(ev) is Delivery:
                if self.recording:
                    self.samples.append((now, now - STAMP.unpack_from(ev.body)[0]))
            else:
                other.append(ev)
        if other:
            self.sub.control(other)

    async def run(self, rate: int, stop: asyncio.Event) -> None:
        start = time.monotonic()
        done = 0
        while not stop.is_set():
            await asyncio.sleep(0.002)  # a load generator's tick, not synchronisation
            due = int((time.monotonic() - start) * rate) - done
            if due > 0:
                self.pub.conn.publish_stamped(self.template, [STAMP.pack(time.monotonic_ns())] * due)
                self.pub.flush()
                done += due


async def workload(url: str, args: argparse.Namespace) -> dict[str, Any]:
    amqp = AMQPUrl.parse(url)
    protos = [await connect(amqp, name) for name in ("filler", "drainer", "probe-pub", "probe-sub")]
    filler, drainer_proto, probe_pub, probe_sub = protos
    try:
        await _channel(filler, ["backlog", "parked"], confirm=True)
        await _channel(drainer_proto, [], prefetch=2000)
        await _channel(probe_pub, ["probe"])
        await _channel(probe_sub, [])
        publisher = Publisher(filler, args.size, args.park_every)
        t0 = time.monotonic()
        await publisher.fill(args.fill)
        fill_s = time.monotonic() - t0

        probe = Probe(probe_pub, probe_sub, args.size)
        await probe_sub.call(1, lambda: probe_sub.conn.basic_consume(1, "probe", "probe", no_ack=True),
                             commands.Basic.ConsumeOk)
        drainer = Drainer(drainer_proto, args.consume_rate)
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(publisher.steady(args.drain_rate, stop)),
                 asyncio.ensure_future(probe.run(args.probe_rate, stop))]
        probe.recording = True
        drain_start = time.monotonic_ns()
        await drainer_proto.call(1, lambda: drainer_proto.conn.basic_consume(1, "backlog", "drain"),
                                 commands.Basic.ConsumeOk)
        deadline = time.monotonic() + args.max_drain
        await drainer.run(lambda: drainer.consumed >= publisher.to_backlog or time.monotonic() > deadline)
        drain_end = time.monotonic_ns()
        emptied = drainer.consumed >= publisher.to_backlog
        tail_end = time.monotonic() + args.tail
        await drainer.run(lambda: time.monotonic() > tail_end)
        probe.recording = False
        stop.set()
        await asyncio.gather(*tasks)
        return {"fill_s": fill_s, "drain_s": (drain_end - drain_start) / 1e9, "drained": drainer.consumed,
                "emptied": emptied, "samples": probe.samples,
                "start_ns": drain_start}
    finally:
        await asyncio.gather(*(p.close() for p in protos), return_exceptions=True)


def windows(probe_file: Path) -> tuple[list[tuple[int, int]], int, float, str]:
    """Compaction windows (start, end ns), the number of steps, the longest step (ms), the tree's path."""
    steps = []
    tree = ""
    for line in probe_file.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            tree = line[2:]
            continue
        start, end, _ = line.split()
        steps.append((int(start), int(end)))
    steps.sort()
    out: list[list[int]] = []
    for start, end in steps:
        if out and start - out[-1][1] < WINDOW_GAP_NS:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    longest = max((e - s for s, e in steps), default=0) / 1e6
    return [(s, e) for s, e in out], len(steps), longest, tree


def one_round(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="compaction-bench-", dir=args.dir) as tmp:
        probe_file = Path(tmp) / "steps.txt"
        probe_file.touch()
        env = {"PYTHONPATH": os.pathsep.join([str(tree), str(args.probe_dir)]),
               "MAILSLOT_COMPACTION_PROBE": str(probe_file)}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            with MailslotProcess(store="segments", data_dir=Path(tmp) / "data") as broker:
                result = asyncio.run(workload(broker.url, args))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        spans, steps, longest, imported = windows(probe_file)
        if args.samples:
            with args.samples.open("a", encoding="utf-8") as out:
                out.write(f"# {imported}\n")
                out.writelines(f"{a} {lat}\n" for a, lat in result["samples"])
                extra = probe_file.with_name(probe_file.name + ".diag")
                if extra.exists():
                    out.writelines("= " + line for line in extra.read_text(encoding="utf-8").splitlines(True))
    during, outside = [], []
    for arrived, latency in result["samples"]:
        if any(s <= arrived <= e + AFTER_NS for s, e in spans):
            during.append(latency)
        else:
            outside.append(latency)
    d, o = p99(during), p99(outside)
    return {
        "tree": imported, "fill_s": result["fill_s"], "drain_s": result["drain_s"], "emptied": result["emptied"],
        "drain_rate": result["drained"] / max(result["drain_s"], 1e-9), "steps": steps, "windows": len(spans),
        "compacting_s": sum(e - s for s, e in spans) / 1e9, "longest_step_ms": longest,
        "p99_during_ms": d, "p99_outside_ms": o, "ratio": d / o if during and o else float("nan"),
        "n_during": len(during), "n_outside": len(outside),
        "max_ms": max((lat for _, lat in result["samples"]), default=0) / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="a source tree (its src/) to run alternately with --after")
    ap.add_argument("--after", type=Path, default=HERE.parent / "src")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fill", type=int, default=600_000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--park-every", type=int, default=20)
    ap.add_argument("--drain-rate", type=int, default=1000, help="publishes a second during the drain")
    ap.add_argument("--consume-rate", type=int, default=10000, help="the drain's pace, acks a second")
    ap.add_argument("--probe-rate", type=int, default=500)
    ap.add_argument("--tail", type=float, default=10.0)
    ap.add_argument("--max-drain", type=float, default=300.0)
    ap.add_argument("--dir", help="where the data directories go (the disk under test; default: the temp dir)")
    ap.add_argument("--probe-dir", type=Path, default=HERE / "_compaction_probe",
                    help="the sitecustomize that times compaction steps (another one may time more)")
    ap.add_argument("--samples", type=Path, help="append each round's probe samples (arrival ns, latency ns) here")
    args = ap.parse_args()
    trees = {"after": args.after.resolve()}
    if args.before:
        trees = {"before": args.before.resolve(), **trees}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name, tree in trees.items():
            res = one_round(tree, args)
            results[name].append(res)
            print(f"round {r + 1} {name:6} ({res['tree']}): fill {res['fill_s']:.1f} s, drain {res['drain_s']:.1f} s "
                  f"({res['drain_rate']:,.0f} msg/s{'' if res['emptied'] else ', NOT emptied'}), "
                  f"{res['steps']} steps in {res['windows']} windows ({res['compacting_s']:.1f} s, longest "
                  f"{res['longest_step_ms']:.0f} ms); probe p99 during {res['p99_during_ms']:.1f} ms "
                  f"(n={res['n_during']}), outside {res['p99_outside_ms']:.1f} ms (n={res['n_outside']}), "
                  f"ratio {res['ratio']:.2f}; max {res['max_ms']:.0f} ms", flush=True)
    print()
    print("| tree | drain msg/s | compaction windows | longest step ms | p99 during ms | p99 outside ms | ratio | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rs in results.items():
        def med(key: str, rs: list[dict[str, Any]] = rs) -> float:
            vals = [x[key] for x in rs if x[key] == x[key]]  # drop NaN (no compaction in that round)
            return statistics.median(vals) if vals else float("nan")
        print(f"| {name} | {med('drain_rate'):,.0f} | {med('windows'):.0f} | {med('longest_step_ms'):.0f} | "
              f"{med('p99_during_ms'):.1f} | {med('p99_outside_ms'):.1f} | {med('ratio'):.2f} | {med('max_ms'):.0f} |")


if __name__ == "__main__":
    main()
