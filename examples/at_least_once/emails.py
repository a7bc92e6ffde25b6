"""At-least-once: the handler runs, then the message is acked. A failure (or a crash before the ack) runs it
again, so nothing is lost but an effect can happen twice: use it for idempotent work.

    python examples/at_least_once/emails.py [AMQP_URL]

The flaky "mail server" below fails the first attempt of every third message; the worker nacks it with
requeue and it comes back. Declare the queue with ``x-retry-delays`` (mailslot) to space the retries.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter

import mailslot.client
from mailslot.worker import Worker

sent: Counter[str] = Counter()


async def handle(job):  # at-most-once / at-least-once handlers may be async
    address = job.body.decode()
    if int(address.split("@")[0][4:]) % 3 == 0 and not job.redelivered:
        raise ConnectionError(f"mail server refused {address}")
    sent[address] += 1


async def demo(url: str, count: int = 9) -> Counter[str]:
    async with await mailslot.client.connect(url) as conn:
        ch = await conn.channel()
        await ch.declare_queue("emails")
        await ch.confirm_select()
        for i in range(count):
            await ch.publish("", "emails", f"user{i}@example.com".encode(), message_id=f"email-{i}")
        worker = Worker(url, "emails", handle, guarantee="at-least-once", concurrency=4)
        run = asyncio.ensure_future(worker.run())
        while worker.stats.handled < count:
            await asyncio.sleep(0.05)
        worker.stop()
        await run
        print(f"sent {sum(sent.values())} emails to {len(sent)} addresses; {worker.stats.failed} failures were retried")
    return sent


if __name__ == "__main__":
    asyncio.run(demo(sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "MAILSLOT_URL", "amqp://guest:guest@localhost:5672/%2F")))
