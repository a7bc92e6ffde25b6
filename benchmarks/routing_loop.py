"""The publish path without alternate exchanges or CC/BCC, this checkout against a reference (main), in one run:
what sender-selected distribution, alternate exchanges and consumer priorities cost a publish that uses none
of them. Not a test; prints ratios.

    flock /tmp/mailslot-bench.lock python benchmarks/routing_loop.py [--ref main] [--count 200000] [--rounds 5]

The reference is ``git archive <ref> src`` unpacked in a temporary directory. Each round runs one child
process per tree (``PYTHONPATH`` picks the tree; the order alternates between rounds), which drives the AMQP
0-9-1 front end without sockets: ``Channel.publish`` for each message (the front end's property checks,
``Session.publish``, routing, enqueue), a flush (group commit) every 500 and a purge so that the queue stays
in memory. Cases: the default exchange (the hot path), ``amq.direct`` to a bound queue, and ``amq.direct``
with a headers table that holds no CC or BCC, without a ``C`` byte (``+headers``: the memchr pre-test of
sender_selected.py) and with one (``+headers-C``: the search for ``CC`` runs too). Prints the
median rate per tree and the ratio this checkout / reference (1.00: no cost).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ("default-exchange", "amq.direct", "amq.direct+headers", "amq.direct+headers-C")


def child(count: int) -> None:
    """Runs in a child process against whichever ``mailslot`` PYTHONPATH names; prints {case: msg/s}."""
    from pamqp import commands

    import mailslot
    from mailslot.core.broker import Broker
    from mailslot.frontends.amqp091 import AMQP_CODEC, AMQPConnection
    from mailslot.protocols.amqp091 import properties as props
    from mailslot.protocols.amqp091.peer import ClientPeer, method
    from mailslot.storage.memory import MemoryMessageLog, MemoryMetadataStore
    from mailslot.testing import default_access

    broker = Broker(MemoryMessageLog(), MemoryMetadataStore(), [AMQP_CODEC])
    broker.recover()
    conn = AMQPConnection(broker, peer_host="127.0.0.1", access=default_access(), heartbeat=60, frame_max=131072,
                          channel_max=2047, max_message_size=16 * 1024 * 1024, now=0.0, outbox=set())
    client = ClientPeer()
    data = client.start()
    while data:  # the handshake, answered as the peer answers it
        conn.receive(data, 0.0)
        broker.flush()
        _frames, data = client.receive_data(conn.data_to_send())
    conn.receive(client.open_channel(1) + method(1, commands.Queue.Declare(queue="q", durable=True))
                 + method(1, commands.Queue.Bind(queue="q", exchange="amq.direct", routing_key="q")), 0.0)
    broker.flush()
    conn.data_to_send()
    channel = conn.channels[1]
    queue = broker.vhosts["/"].queues["q"]
    plain = props.encode_properties(commands.Basic.Properties(delivery_mode=2))
    with_headers = props.encode_properties(
        commands.Basic.Properties(delivery_mode=2, headers={"tenant": "acme", "trace-id": "0123456789abcdef"}))
    with_c = props.encode_properties(
        commands.Basic.Properties(delivery_mode=2, headers={"tenant": "acme", "X-Correlation-Id": "0123456789abcdef"}))
    runs = {
        "default-exchange": (commands.Basic.Publish(exchange="", routing_key="q"), plain),
        "amq.direct": (commands.Basic.Publish(exchange="amq.direct", routing_key="q"), plain),
        "amq.direct+headers": (commands.Basic.Publish(exchange="amq.direct", routing_key="q"), with_headers),
        "amq.direct+headers-C": (commands.Basic.Publish(exchange="amq.direct", routing_key="q"), with_c),
    }
    body = b"x" * 64
    rates = {}
    for case, (publish, raw) in runs.items():
        t0 = time.perf_counter()
        for _ in range(0, count, 500):
            for _ in range(500):
                channel.publish(publish, raw, body)
            broker.flush()
            queue.purge()
        rates[case] = count / (time.perf_counter() - t0)
        assert queue.stats_published >= count, "the messages did not reach the queue"
        queue.stats_published = 0
    print(json.dumps({"file": mailslot.__file__, "rates": rates}))


def export(ref: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True).stdout
    path = into / "ref.tar"
    path.write_bytes(archive)
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run_child(src: Path, count: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, __file__, "--child", "--count", str(count)], env=env, check=True,
                          capture_output=True, text=True)
    found = json.loads(done.stdout)
    if not found["file"].startswith(str(src)):
        raise RuntimeError(f"the child imported {found['file']}, not the tree under {src}")
    return {case: float(rate) for case, rate in found["rates"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="main", help="git ref of the reference tree (default: main)")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.count)
        return
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"reference": export(args.ref, Path(tmp)), "this": ROOT / "src"}
        rates: dict[str, dict[str, list[float]]] = {tree: {case: [] for case in CASES} for tree in trees}
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for tree in order:
                for case, rate in run_child(trees[tree], args.count).items():
                    rates[tree][case].append(rate)
    print(f"publish path, {args.count:,} messages per case, median of {args.rounds} rounds; reference: {args.ref}")
    print(f"{'case':<22}{'reference msg/s':>16}{'this msg/s':>14}{'this/ref':>10}")
    for case in CASES:
        ref, this = statistics.median(rates["reference"][case]), statistics.median(rates["this"][case])
        print(f"{case:<22}{ref:>16,.0f}{this:>14,.0f}{this / ref:>10.3f}")


if __name__ == "__main__":
    main()
