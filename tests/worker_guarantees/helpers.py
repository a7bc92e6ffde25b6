"""Shared steps of the worker tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from mailslot.worker import DEDUP_HEADER, Worker, WorkerStats


async def publish_keyed(ch: Any, queue: str, keys: list[str], body: Callable[[str], bytes] | None = None,
                        arguments: dict[str, Any] | None = None) -> None:
    await ch.declare_queue(queue, arguments=arguments)
    await asyncio.gather(*(ch.publish("", queue, body(k) if body else k.encode(), headers={DEDUP_HEADER: k})
                           for k in keys))


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[WorkerStats]]:
    task = asyncio.ensure_future(worker.run())
    try:
        yield task
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)


async def queue_depth(ch: Any, queue: str) -> int:
    _name, count, _consumers = await ch.declare_queue(queue, passive=True)
    return count
