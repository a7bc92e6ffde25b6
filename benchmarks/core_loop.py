"""The broker core alone (no sockets, memory store): publish -> flush -> deliver -> ack, 500 at a time,
on a plain queue and on queues with lifecycle arguments, so the cost of a feature on the core loop shows.

    python benchmarks/core_loop.py [--count 200000] [--rounds 3] [--tracing]

``--tracing`` adds the plain queue with the vhost's tracing on (core/tracing.py: the message history, no
firehose consumer) and prints its ratio to the plain queue's rate. Tracing off is the plain case itself:
compare it with the same script on a checkout without the tracing hooks.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from pamqp import commands

from mailslot.core.broker import Broker
from mailslot.core.message import Entry, Message
from mailslot.core.session import Gate
from mailslot.frontends.amqp091 import AMQP_CODEC
from mailslot.storage.memory import MemoryMessageLog, MemoryMetadataStore

CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "x-message-ttl": {"x-message-ttl": 60_000},
    "x-max-priority": {"x-max-priority": 5},
}


class _Sink:
    last = 0

    def deliver_many(self, consumer_tag: str, first_tag: int, entries: list[Entry]) -> None:
        self.last = first_tag + len(entries) - 1

    def consumer_cancelled(self, consumer_tag: str) -> None:
        pass


def run(
    arguments: dict[str, Any], count: int, batch: int = 500, tracing: bool = False, timer: Any = time.perf_counter
) -> float:
    """Messages a second through publish -> flush -> deliver -> ack; ``timer``: wall clock by default,
    ``time.process_time`` for CPU time (benchmarks/core_loop_compare.py)."""
    broker = Broker(MemoryMessageLog(), MemoryMetadataStore(), [AMQP_CODEC])
    broker.recover()
    vhost = broker.vhosts["/"]
    if tracing:
        from mailslot.core.tracing import enable

        enable(vhost, "bench")
    sink = _Sink()
    session = broker.open_session(vhost, object(), sink, Gate())
    vhost.declare_queue("q", passive=False, durable=True, exclusive=False, auto_delete=False,
                        arguments=arguments, owner=session.owner)
    session.consume("q", "c", no_ack=False, exclusive=False, arguments={})
    raw = bytes(commands.Basic.Properties(delivery_mode=2).marshal())
    t0 = timer()
    for _ in range(0, count, batch):
        for _ in range(batch):
            session.publish("", "q", Message("", "q", raw, b"x" * 64, True, AMQP_CODEC), False)
        broker.flush()
        session.ack(sink.last, True)
        broker.flush()
    return count / (timer() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tracing", action="store_true", help="also the plain queue with tracing on")
    args = parser.parse_args()
    medians: dict[str, float] = {}
    cases = [(name, arguments, False) for name, arguments in CASES.items()]
    if args.tracing:
        cases.append(("plain+tracing", {}, True))
    for name, arguments, tracing in cases:
        rates = sorted(run(arguments, args.count, tracing=tracing) for _ in range(args.rounds))
        medians[name] = rates[len(rates) // 2]
        ratio = f"  {medians[name] / medians['plain']:.2f}x plain" if name != "plain" else ""
        print(f"{name:<16} median {medians[name]:>10,.0f} msg/s  (min {rates[0]:,.0f}, max {rates[-1]:,.0f}){ratio}")


if __name__ == "__main__":
    main()
