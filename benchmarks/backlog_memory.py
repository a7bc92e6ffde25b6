"""Backlog memory benchmark (not a test): does a deep queue stay on disk instead of in the broker's RAM?

    python benchmarks/backlog_memory.py [--count 1000000] [--limit-mb 300] [--url URL]

Starts a fresh mailslot (``python -m mailslot serve --store STORE``, default segments, temp data dir), publishes --count
persistent 256-byte messages (sequence number in the body) with publisher confirms (window 1000) into one
durable queue with no consumer, then consumes them all (prefetch 1000, multi-ack every 100) checking that
they arrive in strict publish order. A thread samples the broker's RSS (psutil) every 0.5 s throughout.
Prints publish rate, peak RSS while publishing, RSS with the full backlog, peak RSS while consuming, the
order check; passes when every RSS figure stays under --limit-mb. With --url it measures that broker
instead (no RSS unless --pid is given).
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
import time
from pathlib import Path

from pamqp import commands

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _broker import MailslotProcess
from _common import MB, RssSampler, open_confirm_channel, publish_confirmed

from mailslot.bench.driver import AMQPUrl, connect
from mailslot.protocols.amqp091.events import Delivery, Event

SEQ = struct.Struct(">Q")
WINDOW = 1000
PREFETCH = 1000
MULTI_ACK = 100


def show(line: str) -> None:
    sys.stderr.write("\r" + line.ljust(100))
    sys.stderr.flush()


async def publish(url: AMQPUrl, queue: str, count: int, size: int, rss: RssSampler) -> float:
    proto = await open_confirm_channel(url, "backlog-producer", queue)
    conn = proto.conn
    template = conn.publish_template(1, "", queue, b"\x00" * size,
                                     properties=commands.Basic.Properties(delivery_mode=2), stamp_size=SEQ.size)

    def send(first: int, n: int) -> None:
        conn.publish_stamped(template, [SEQ.pack(s) for s in range(first + 1, first + n + 1)])

    def progress(acked: int, el: float) -> None:
        show(f"publishing {acked:>9,}/{count:,} confirmed  {acked / el:>8,.0f} msg/s  RSS {rss.last / MB:6.1f} MB")

    elapsed, nacks = await publish_confirmed(proto, count, send, window=WINDOW, progress=progress,
                                             lost="producer connection")
    if nacks:
        print(f"\n{nacks} nack frames!", file=sys.stderr)
    await proto.close()
    return count / elapsed


async def consume(url: AMQPUrl, queue: str, count: int, rss: RssSampler) -> tuple[float, bool, str]:
    proto = await connect(url, "backlog-consumer")
    conn = proto.conn
    await proto.call(1, lambda: conn.open_channel(1), commands.Channel.OpenOk)
    await proto.call(1, lambda: conn.basic_qos(1, PREFETCH), commands.Basic.QosOk)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    state = {"n": 0, "expect": 1, "bad": "", "pending": 0, "last_tag": 0}
    unpack = SEQ.unpack_from

    def on_events(events: list[Event]) -> None:
        other = []
        expect = state["expect"]
        n = 0
        tag = 0
        for ev in events:
            if type(ev) is Delivery:
                seq = unpack(ev.body)[0]  # type: ignore[attr-defined]
                if seq != expect and not state["bad"]:
                    state["bad"] = f"expected {expect}, got {seq} (delivery {state['n'] + n + 1})"
                expect = seq + 1
                n += 1
                tag = ev.delivery_tag  # type: ignore[attr-defined]
            else:
                other.append(ev)
        if other:
            proto.control(other)
        if n:
            state["expect"] = expect
            state["n"] += n
            state["pending"] += n
            if state["pending"] >= MULTI_ACK or state["n"] >= count:
                conn.basic_ack(1, tag, True)
                state["pending"] = 0
            if state["n"] >= count and not done.done():
                done.set_result(None)

    proto.handler = on_events
    t0 = time.monotonic()
    await proto.call(1, lambda: conn.basic_consume(1, queue, "backlog"), commands.Basic.ConsumeOk)
    while not done.done():
        await asyncio.wait([done, proto.lost], timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        if proto.lost.done() and not done.done():
            raise RuntimeError(f"consumer connection lost: {proto.error}")
        el = time.monotonic() - t0
        show(f"consuming  {state['n']:>9,}/{count:,}  {state['n'] / el:>8,.0f} msg/s  RSS {rss.last / MB:6.1f} MB")
    elapsed = time.monotonic() - t0
    proto.flush()
    ok = not state["bad"] and state["n"] == count
    await proto.call(1, lambda: conn.queue_delete(1, queue), commands.Queue.DeleteOk, timeout=60)
    await proto.close()
    return count / elapsed, ok, state["bad"] or f"{state['n']:,} messages in strict order"


async def run(url: AMQPUrl, count: int, size: int, rss: RssSampler) -> dict[str, object]:
    queue = f"backlog-{int(time.time())}"
    rss.phase = "publish"
    pub_rate = await publish(url, queue, count, size, rss)
    rss.phase = "backlog"
    await asyncio.sleep(2.0)  # let the broker settle (group commits, GC) before the "full backlog" reading
    backlog = max(rss.sample(), rss.sample())
    print(file=sys.stderr)
    rss.phase = "consume"
    con_rate, ok, detail = await consume(url, queue, count, rss)
    print(file=sys.stderr)
    rss.phase = "done"
    return {"publish_rate": pub_rate, "consume_rate": con_rate, "order_ok": ok, "order_detail": detail,
            "rss_backlog": backlog}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--limit-mb", type=float, default=300.0)
    ap.add_argument("--url", default="", help="measure this broker instead of starting mailslot")
    ap.add_argument("--pid", type=int, default=0, help="with --url: the broker pid to sample")
    ap.add_argument("--store", default="segments", help="mailslot's store: segments (default), sqlite")
    args = ap.parse_args()

    import uvloop

    broker = None
    if args.url:
        url, pid = AMQPUrl.parse(args.url), args.pid or None
    else:
        broker = MailslotProcess(store=args.store).start()
        url, pid = AMQPUrl.parse(broker.url), broker.pid
        print(f"mailslot pid {pid} on {broker.url}, data dir {broker.data_dir}", file=sys.stderr)
    rss = RssSampler(pid)
    rss.sample()
    start_rss = rss.last
    rss.start()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            res = runner.run(run(url, args.count, args.size, rss))
    finally:
        rss.stop()
        if broker is not None:
            broker.stop()
    peaks = {p: rss.peak(p) for p in ("publish", "consume")}
    rows = [
        ("messages", f"{args.count:,} x {args.size} B persistent, confirms window {WINDOW}"),
        ("publish rate", f"{res['publish_rate']:,.0f} msg/s"),
        ("consume rate", f"{res['consume_rate']:,.0f} msg/s"),
        ("RSS at start", f"{start_rss / MB:.1f} MB"),
        ("peak RSS while publishing", f"{peaks['publish'] / MB:.1f} MB"),
        ("RSS with the full backlog", f"{int(res['rss_backlog']) / MB:.1f} MB"),  # type: ignore[call-overload]
        ("peak RSS while consuming", f"{peaks['consume'] / MB:.1f} MB"),
        ("order check", ("OK: " if res["order_ok"] else "FAILED: ") + str(res["order_detail"])),
    ]
    for k, v in rows:
        print(f"{k:<28} {v}")
    worst = max(peaks["publish"], peaks["consume"], int(res["rss_backlog"]))  # type: ignore[call-overload]
    if pid is None:
        print("RSS not measured (no --pid)")
        return 0 if res["order_ok"] else 1
    passed = worst < args.limit_mb * MB and bool(res["order_ok"])
    print(f"{'PASS' if passed else 'FAIL'}: peak RSS {worst / MB:.1f} MB vs limit {args.limit_mb:g} MB"
          f"{'' if res['order_ok'] else ', order check failed'}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
