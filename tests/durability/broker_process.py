"""The durability tests' broker process (see ``mailslot.bench.broker_process``) and the publishing loop
that kills it mid-stream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mailslot.bench.broker_process import BrokerProcess

__all__ = ["BrokerProcess", "publish_until_killed"]

WINDOW = 50  # confirms in flight: the broker group-commits them


async def publish_until_killed(
    broker: BrokerProcess, publish: Callable[[int], Awaitable[None]], kill_after: int, total: int | None = None
) -> None:
    """``publish(0)``, ``publish(1)``, ... in windows of ``WINDOW`` in flight; the window that reaches
    ``kill_after`` is cut by a SIGKILL while in flight, so some of it is confirmed and some is not.
    Returns after ``total`` publishes if the kill point is never reached."""
    start = 0
    while total is None or start < total:
        end = start + WINDOW if total is None else min(start + WINDOW, total)
        batch = [publish(i) for i in range(start, end)]
        start = end
        if start >= kill_after:
            tasks = [asyncio.ensure_future(p) for p in batch]
            await asyncio.sleep(0)
            broker.kill()
            await asyncio.gather(*tasks, return_exceptions=True)
            return
        await asyncio.gather(*batch)
