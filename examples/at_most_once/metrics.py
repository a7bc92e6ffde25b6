"""At-most-once: the ack is committed on the broker before the handler runs, so a handler never runs
twice for one message; a failure or a crash while handling loses that message. For data where a gap is
better than a double count (sampled metrics, notifications that must not repeat).

    python examples/at_most_once/metrics.py [AMQP_URL]

The handler below fails on one sample; that sample is not retried (it is gone, and the log says so).
"""

from __future__ import annotations

import asyncio
import os
import sys

import mailslot.client
from mailslot.worker import Worker

totals: dict[str, float] = {}


def handle(job):
    name, value = job.body.decode().split("=")
    if name == "cpu.7":
        raise ValueError("corrupt sample")  # lost: it was acked before handling
    totals[name] = totals.get(name, 0.0) + float(value)


async def demo(url: str, count: int = 10) -> dict[str, float]:
    async with await mailslot.client.connect(url) as conn:
        ch = await conn.channel()
        await ch.declare_queue("metrics")
        await ch.confirm_select()
        for i in range(count):
            await ch.publish("", "metrics", f"cpu.{i}={i / 10}".encode())
        worker = Worker(url, "metrics", handle, guarantee="at-most-once", concurrency=4)
        run = asyncio.ensure_future(worker.run())
        while worker.stats.handled + worker.stats.failed < count:
            await asyncio.sleep(0.05)
        worker.stop()
        await run
        print(f"{len(totals)} samples recorded, {worker.stats.failed} lost")
    return totals


if __name__ == "__main__":
    asyncio.run(demo(sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "MAILSLOT_URL", "amqp://guest:guest@localhost:5672/%2F")))
