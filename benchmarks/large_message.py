"""What a 100 MB publish costs everyone else (not a test): while one connection publishes one large
persistent message with a confirm, another publishes a small persistent message every 10 ms (with a
confirm) and consumes them (mailslot.bench.large_message). Prints, for the small messages sent while the
large one was in flight, the publish -> deliver and publish -> confirm latencies, on mailslot and on the
reference RabbitMQ in the same run, alternating, median over the rounds.

    flock /tmp/mailslot-bench.lock python benchmarks/large_message.py [--size 100] [--rounds 5]
    python benchmarks/large_message.py --tree /tmp/before/src   # mailslot from another source tree

The broker is ``mailslot serve`` (uvloop, segment log) in a subprocess with --max-message-size 128 MiB;
RabbitMQ is the one on 127.0.0.1:5672 (3.10: 128 MiB default), with uuid-named queues deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics

from mailslot.bench import large_message
from mailslot.bench.broker_process import BrokerProcess

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def mailslot_round(size: int, tree: str | None) -> dict[str, float]:
    saved = os.environ.get("PYTHONPATH")
    if tree:
        os.environ["PYTHONPATH"] = tree  # the broker subprocess imports this tree
    try:
        with BrokerProcess(extra_args=("--max-message-size", str(128 * 1024 * 1024))) as broker:
            return large_message.run(broker.url, size).summary()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=100, help="MB")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tree", help="run mailslot from this source tree (PYTHONPATH) instead")
    args = ap.parse_args()
    size = args.size * 1_000_000
    results: dict[str, list[dict[str, float]]] = {"mailslot": [], "rabbitmq": []}
    for r in range(args.rounds):
        for name in ("mailslot", "rabbitmq") if r % 2 == 0 else ("rabbitmq", "mailslot"):
            if name == "rabbitmq":
                results[name].append(large_message.run(RABBITMQ_URL, size).summary())
            else:
                results[name].append(mailslot_round(size, args.tree))
        print(f"round {r + 1}: mailslot {results['mailslot'][-1]} rabbitmq {results['rabbitmq'][-1]}", flush=True)
    keys = sorted({k for rounds in results.values() for row in rounds for k in row})
    print(f"\n{args.size} MB publish, a small message every 10 ms meanwhile; medians of {args.rounds} rounds")
    print(f"{'':28} {'mailslot':>10} {'rabbitmq':>10} {'ratio':>7}")
    for key in keys:
        m = statistics.median(row[key] for row in results["mailslot"] if key in row)
        q = statistics.median(row[key] for row in results["rabbitmq"] if key in row)
        print(f"{key:28} {m:10.1f} {q:10.1f} {m / q if q else float('nan'):7.2f}")


if __name__ == "__main__":
    main()
