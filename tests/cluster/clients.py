"""What several cluster tests do as a client: consume a queue through a node (acking) until enough came."""

from __future__ import annotations

from collections.abc import Callable

import aio_pika

from helpers import async_wait_for


async def consume_until(url: str, queue: str, enough: Callable[[list[bytes]], bool],
                        what: Callable[[list[bytes]], str], timeout: float = 30.0) -> list[bytes]:
    """The bodies of ``queue`` consumed through the node at ``url`` (whichever node owns the queue), in
    the order they came, once ``enough(bodies)`` holds; ``what(bodies)`` says what was awaited on a timeout."""
    got: list[bytes] = []
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.append(message.body)
            await message.ack()

        await (await channel.declare_queue(queue, durable=True, passive=True)).consume(take)
        await async_wait_for(lambda: enough(got), timeout=timeout, what=lambda: what(got))
    return got
