"""Deduplication memory and throughput benchmark (not a test; prints figures and ratios).

    python benchmarks/dedup_memory.py [--index-counts 1000000,5000000] [--broker-count 1000000]
                                      [--store segments] [--skip-broker]

1. The key index alone, in this process: adds N distinct keys to a ``DedupWindow`` (as the publish path
   does: key bytes, hash, one row staged to a memory log that is thrown away per 100k) and reports the
   index's array bytes per key and this process's RSS growth per key (Python objects included).
2. The broker, end to end: starts ``python -m mailslot serve --store STORE`` twice (temp data dirs) and
   publishes --broker-count persistent 64-byte messages, each with its own ``x-deduplication-header``,
   with publisher confirms (window 1000) into one durable queue, once without deduplication and once with
   ``x-message-deduplication: true, x-cache-size: COUNT`` (every key stays in the window). Reports confirmed
   publish rate (with / without) and broker RSS after the publish; the RSS difference divided by the count
   is what a remembered key costs in the broker (index, plus the message log's own index of the key rows).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path

import psutil
from pamqp import commands

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _broker import MailslotProcess
from _common import MB, open_confirm_channel, publish_confirmed

from mailslot.bench.driver import AMQPUrl
from mailslot.core.dedup import DedupSettings, DedupWindow
from mailslot.core.message import Message
from mailslot.frontends.amqp091 import AMQP_CODEC
from mailslot.protocols.amqp091.properties import encode_properties
from mailslot.storage.memory import MemoryMessageLog

WINDOW = 1000
DIGITS = 12  # keys are "order-" + 12 digits: every property block has the same length


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def index_figures(count: int) -> dict[str, float]:
    gc.collect()
    log = MemoryMessageLog()
    window = DedupWindow("bench", DedupSettings(size=count), durable=True, log=log, clock=time.time)
    before = rss()
    t0 = time.perf_counter()
    body = b""
    for i in range(count):
        key = b"sorder-%012d" % i
        window.remember(key, Message("", "q", b"\x00\x00", body, True, AMQP_CODEC), True)
        if i % 100_000 == 99_999:
            log = MemoryMessageLog()  # the rows are the store's business, not the index's
            window.log = log
    elapsed = time.perf_counter() - t0
    gc.collect()
    grown = rss() - before
    return {"count": count, "index_bytes_per_key": window.index.nbytes() / count,
            "rss_bytes_per_key": grown / count, "remember_per_s": count / elapsed}


def properties_for(i: int, template: tuple[bytes, bytes]) -> bytes:
    return template[0] + b"%012d" % i + template[1]


def property_template() -> tuple[bytes, bytes]:
    marker = "X" * DIGITS
    raw = encode_properties(commands.Basic.Properties(delivery_mode=2, headers={"x-deduplication-header": "order-" + marker}))
    at = raw.index(marker.encode())
    return raw[:at], raw[at + DIGITS:]


async def publish(url: AMQPUrl, queue: str, arguments: dict[str, object], count: int) -> float:
    proto = await open_confirm_channel(url, "dedup-bench", queue, arguments)
    conn = proto.conn
    template = property_template()
    body = b"\x00" * 64

    def send(first: int, n: int) -> None:
        for i in range(first, first + n):
            conn.publish_raw(1, "", queue, properties_for(i, template), body)

    def progress(acked: int, _el: float) -> None:
        sys.stderr.write(f"\r  {acked:>9,}/{count:,} confirmed".ljust(60))

    elapsed, nacks = await publish_confirmed(proto, count, send, window=WINDOW, progress=progress)
    sys.stderr.write("\n")
    if nacks:
        raise RuntimeError(f"{nacks} nacks")
    await proto.close()
    return count / elapsed


def broker_figures(count: int, store: str, dedup: bool) -> dict[str, float]:
    arguments: dict[str, object] = {"x-message-deduplication": True, "x-cache-size": count} if dedup else {}
    with MailslotProcess(store=store) as broker:
        url = AMQPUrl.parse(broker.url)
        rate = asyncio.run(publish(url, "dedup-bench", arguments, count))
        time.sleep(2.0)  # let the last batches land and the GC settle
        broker_rss = psutil.Process(broker.pid).memory_info().rss
    return {"rate": rate, "rss": broker_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-counts", default="1000000,5000000")
    parser.add_argument("--broker-count", type=int, default=1_000_000)
    parser.add_argument("--store", default="segments")
    parser.add_argument("--skip-broker", action="store_true")
    args = parser.parse_args()

    print("## Key index (in process)\n")
    print("| keys | index arrays, bytes/key | process RSS growth, bytes/key | remember() per s |")
    print("|---:|---:|---:|---:|")
    for count in (int(c) for c in args.index_counts.split(",") if c):
        f = index_figures(count)
        print(f"| {count:,} | {f['index_bytes_per_key']:.1f} | {f['rss_bytes_per_key']:.1f} | {f['remember_per_s']:,.0f} |")
    if args.skip_broker:
        return
    count = args.broker_count
    print(f"\n## Broker ({args.store} store, {count:,} persistent confirmed publishes, distinct keys, no consumer)\n")
    off = broker_figures(count, args.store, dedup=False)
    on = broker_figures(count, args.store, dedup=True)
    print("| | publish msg/s | broker RSS after publish |")
    print("|---|---:|---:|")
    print(f"| no deduplication | {off['rate']:,.0f} | {off['rss'] / MB:.1f} MB |")
    print(f"| x-message-deduplication, x-cache-size {count:,} | {on['rate']:,.0f} | {on['rss'] / MB:.1f} MB |")
    print(f"\nthroughput with / without: {on['rate'] / off['rate']:.2f}x; "
          f"RSS difference per remembered key: {(on['rss'] - off['rss']) / count:.1f} bytes")


if __name__ == "__main__":
    main()
