"""AMQP 0-9-1 protocol layer micro-benchmark: in-process, no sockets, no broker.

Measures the per-message cost of the three hot paths of ``ServerConnection``:

  (a) publish parse  - ``receive_data`` over a buffer of N basic.publish + header + 256 B body,
                       fed in 64 KiB reads (as a socket would hand them over, frames split anywhere)
  (b) deliver encode - N ``send_deliver`` calls, ``data_to_send`` after every 128 (one loop iteration)
  (c) ack parse      - ``receive_data`` over N basic.ack (multiple=false) frames, 64 KiB reads

Each is the median of ``--rounds`` rounds (ns/message). With ``--baseline DIR`` (a copy of the
``amqp091`` package directory, e.g. taken before a change: ``cp -r src/mailslot/protocols/amqp091
/tmp/protobase/amqp091_orig``) both versions are timed in the same run, rounds interleaved, and the
ratio baseline/current is printed (>1 means the current code is faster).

    python benchmarks/protocol_bench.py [-n 20000] [--rounds 5] [--baseline /tmp/protobase/amqp091_orig]
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from pamqp import commands

from mailslot.protocols.amqp091 import connection as current_connection
from mailslot.protocols.amqp091.peer import ClientPeer

BODY = b"x" * 256
PROPS = commands.Basic.Properties(content_type="application/octet-stream", delivery_mode=1)
EXCHANGE = ""
ROUTING_KEY = "bench.queue"
CONSUMER_TAG = "amq.ctag-5VYl2mBJm0Z0c1Ww9sKpqA"
READ_SIZE = 65536
DELIVER_BATCH = 128


def load_baseline(path: str) -> ModuleType:
    """Import the ``connection`` module of a copied amqp091 package directory under its own name."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path.rstrip("/"))
    if parent not in sys.path:
        sys.path.insert(0, parent)
    return importlib.import_module(f"{name}.connection")


def open_server(conn_mod: ModuleType) -> Any:
    """A ServerConnection after the full handshake with channel 1 open."""
    server = conn_mod.ServerConnection(server_properties={"product": "bench"})
    client = ClientPeer(heartbeat=0)
    server.receive_data(client.start(), 0.0)
    _, reply = client.receive_data(server.data_to_send())
    server.receive_data(reply, 0.0)
    server.accept_login()
    _, reply = client.receive_data(server.data_to_send())
    server.receive_data(reply, 0.0)
    server.accept_open()
    client.receive_data(server.data_to_send())
    server.receive_data(client.open_channel(1), 0.0)
    server.data_to_send()
    return server


def chunks(data: bytes, size: int = READ_SIZE) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def publish_stream(n: int) -> list[bytes]:
    one = ClientPeer().publish(1, EXCHANGE, ROUTING_KEY, BODY, PROPS)
    return chunks(one * n)


def ack_stream(n: int) -> list[bytes]:
    return chunks(b"".join(ClientPeer.ack(1, tag) for tag in range(1, n + 1)))


def bench_parse(conn_mod: ModuleType, reads: list[bytes], n: int) -> float:
    server = open_server(conn_mod)
    receive = server.receive_data
    count = 0
    t0 = time.perf_counter_ns()
    for data in reads:
        count += len(receive(data, 1.0))
    elapsed = time.perf_counter_ns() - t0
    assert count == n, (count, n)
    return elapsed / n


def bench_deliver(conn_mod: ModuleType, n: int) -> float:
    server = open_server(conn_mod)
    send = server.send_deliver
    flush = server.data_to_send
    props = PROPS.marshal()
    total = 0
    t0 = time.perf_counter_ns()
    tag = 0
    for _ in range(n // DELIVER_BATCH):
        for _ in range(DELIVER_BATCH):
            tag += 1
            send(1, CONSUMER_TAG, tag, False, EXCHANGE, ROUTING_KEY, props, BODY)
        total += len(flush())
    elapsed = time.perf_counter_ns() - t0
    assert total > tag * len(BODY)
    return elapsed / tag


def run(n: int, rounds: int, baseline: str | None) -> None:
    n = max(DELIVER_BATCH, n // DELIVER_BATCH * DELIVER_BATCH)
    versions: dict[str, ModuleType] = {"current": current_connection}
    if baseline:
        versions = {"baseline": load_baseline(baseline), "current": current_connection}
    pub = publish_stream(n)
    acks = ack_stream(n)
    cases: dict[str, Callable[[ModuleType], float]] = {
        "(a) publish parse": lambda m: bench_parse(m, pub, n),
        "(b) deliver encode": lambda m: bench_deliver(m, n),
        "(c) ack parse": lambda m: bench_parse(m, acks, n),
    }
    results: dict[str, dict[str, list[float]]] = {c: {v: [] for v in versions} for c in cases}
    for _ in range(rounds):
        for case, fn in cases.items():
            for name, mod in versions.items():  # interleaved: drift hits both versions alike
                results[case][name].append(fn(mod))
    print(f"n={n} per case, median of {rounds} rounds, ns/message (python {sys.version.split()[0]})")
    head = "".join(f"{v:>12}" for v in versions) + ("  base/cur" if baseline else "")
    print(f"{'':20}{head}")
    for case, per in results.items():
        med = {v: statistics.median(xs) for v, xs in per.items()}
        line = "".join(f"{med[v]:12.0f}" for v in versions)
        if baseline:
            line += f"{med['baseline'] / med['current']:9.2f}x"
        print(f"{case:20}{line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20000, help="messages per case per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", default=None, help="a copied amqp091 package directory to compare against")
    args = ap.parse_args()
    run(args.n, args.rounds, args.baseline)


if __name__ == "__main__":
    main()
