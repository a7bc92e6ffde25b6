"""Two nodes forwarding to each other at once: a client on b publishing to a queue of a while a client on a
publishes to a queue of b. Each owner answers a forwarded frame when the batch holding it is written, not
behind its own earlier batches still held for the other node's answer (that wait is circular: before the
fix both nodes stalled until the forwarding timeout and nacked, benchmarks/postgres_vs_pgmq.py's
"cluster-crossed" ran at 2k msg/s)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest

from mailslot.storage.postgres import PostgresSettings

from .test_forward import _link, _node, _until_forwarded

ROUNDS, WINDOW = 20, 50  # publishes confirmed per direction: ROUNDS windows of WINDOW in flight


async def _publish_window(channel: aio_pika.abc.AbstractChannel, queue: str, round_no: int) -> None:
    await asyncio.gather(*(
        channel.default_exchange.publish(aio_pika.Message(f"{round_no}-{i}".encode(), delivery_mode=2),
                                         routing_key=queue, mandatory=True)
        for i in range(WINDOW)))


@pytest.mark.parametrize("transport", ["unix"])
async def test_two_nodes_forwarding_to_each_other_at_once_confirm_without_stalling(
    cluster_settings: Callable[[str], PostgresSettings], tmp_path: Path, transport: str
) -> None:
    async with _node(cluster_settings("a"), _link(transport, tmp_path, "a")) as a, \
            _node(cluster_settings("b"), _link(transport, tmp_path, "b")) as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            # on_return_raises: a publish the node cannot route yet fails instead of being confirmed
            channel_a, channel_b = [await conn.channel(publisher_confirms=True, on_return_raises=True)
                                    for conn in (on_a, on_b)]
            await channel_a.declare_queue("owned-by-a", durable=True)  # the declaring node takes the lease
            await channel_b.declare_queue("owned-by-b", durable=True)
            await _until_forwarded(channel_b, "owned-by-a")
            await _until_forwarded(channel_a, "owned-by-b")

            async def direction(channel: aio_pika.abc.AbstractChannel, queue: str) -> None:
                for round_no in range(ROUNDS):
                    await _publish_window(channel, queue, round_no)

            started = time.monotonic()
            # well under the forwarding timeout (postgres_commit_timeout, 10 s): a stall fails here, not
            # as nacks 10 s later
            await asyncio.wait_for(asyncio.gather(direction(channel_b, "owned-by-a"),
                                                  direction(channel_a, "owned-by-b")), timeout=8)
            elapsed = time.monotonic() - started
        for owner, queue in ((a, "owned-by-a"), (b, "owned-by-b")):
            async with await aio_pika.connect(owner.amqp_url) as conn:
                declared = await (await conn.channel()).declare_queue(queue, durable=True, passive=True)
                # every publish confirmed is there (plus the probe(s) of _until_forwarded)
                assert declared.declaration_result.message_count >= ROUNDS * WINDOW
    assert elapsed < 8
