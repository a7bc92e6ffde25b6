"""Delayed-message and deduplicating exchanges work cluster-wide (mailslot.cluster.shared_exchanges):
a delayed message is released once, when due, whichever node received it and even when that node is
killed; a duplicate published on another node is dropped. Real ``mailslot serve --cluster`` processes
on one PostgreSQL schema, linked over Unix sockets."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aio_pika
import psycopg
import pytest

from helpers import async_wait_for
from mailslot.bench.broker_process import BrokerProcess
from mailslot.storage.postgres import PostgresSettings

pytestmark = pytest.mark.slow

LEASE_TTL = 3.0
SECRET = ("--cluster-secret", "shared-exchanges-secret-0123456789")
DELAY_MS = 4_000


def _start(node_process: Callable[..., BrokerProcess], tmp_path: Path, name: str) -> BrokerProcess:
    return node_process(name, "--cluster-link", f"unix:{tmp_path}/{name}.sock", *SECRET, lease_ttl=LEASE_TTL)


def _held_delayed_rows(settings: PostgresSettings) -> int:
    """Delayed messages PostgreSQL still holds, every node's (rows under a ``delayed`` store key)."""
    with psycopg.connect(settings.dsn) as conn:
        conn.execute(f'SET search_path = "{settings.schema}"')
        row = conn.execute("SELECT count(*) FROM messages JOIN logs ON logs.id = messages.log_id "
                           "WHERE position(convert_to('delayed', 'UTF8') in logs.key) > 0").fetchone()
        return int(row[0]) if row else 0


def _schedule_leases(settings: PostgresSettings, node: str) -> int:
    """Leases of ``node``'s processes' delayed-message schedules (sub-key ``NODE:EPOCH``)."""
    with psycopg.connect(settings.dsn) as conn:
        conn.execute(f'SET search_path = "{settings.schema}"')
        row = conn.execute("SELECT count(*) FROM leases WHERE position(convert_to('delayed', 'UTF8') in queue) > 0 "
                           "AND position(convert_to(%s, 'UTF8') in queue) > 0", (f'"{node}:',)).fetchone()
        return int(row[0]) if row else 0


async def _declare_delayed(url: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("later", "x-delayed-message", durable=True,
                                                  arguments={"x-delayed-type": "direct"})
        queue = await channel.declare_queue("due", durable=True)
        await queue.bind(exchange, "k")


async def _publish_delayed(url: str, bodies: list[bytes], delay_ms: int = DELAY_MS) -> float:
    """Publish with x-delay, every one confirmed (so committed); returns when they were sent (monotonic)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("later", ensure=False)
        sent = time.monotonic()
        await asyncio.gather(*(
            exchange.publish(aio_pika.Message(body, delivery_mode=2, headers={"x-delay": delay_ms}), routing_key="k",
                             mandatory=False)  # a mandatory one is returned (as by the plugin): not confirmed after
            for body in bodies
        ))
        return sent


async def _collect(url: str, queue: str, into: list[tuple[bytes, float]]) -> aio_pika.abc.AbstractConnection:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=200)
    declared = await channel.declare_queue(queue, durable=True, passive=True)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        into.append((message.body, time.monotonic()))
        await message.ack()

    await declared.consume(on_message)
    return connection


async def _barrier(url: str, queue: str, got: list[tuple[bytes, float]]) -> None:
    """Publish a marker straight to the queue and wait for it: what was enqueued before it was delivered."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(aio_pika.Message(b"barrier", delivery_mode=2), routing_key=queue)
    await async_wait_for(lambda: any(body == b"barrier" for body, _ in got), timeout=10, what="the barrier")
    got[:] = [item for item in got if item[0] != b"barrier"]


async def _until_known(url: str, exchange: str) -> None:
    """The node has loaded an exchange declared on another node (the metadata sync, ~0.5 s)."""

    async def known() -> bool:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            try:
                await channel.declare_exchange(exchange, passive=True)
                return True
            except aio_pika.exceptions.ChannelClosed:
                return False

    await async_wait_for(known, timeout=10, interval=0.1, what=f"exchange '{exchange}' on the other node")


async def test_delayed_messages_of_a_killed_node_are_released_once_on_time_by_another(
    node_process: Callable[..., BrokerProcess], cluster_settings: Callable[[str], PostgresSettings], tmp_path: Path,
) -> None:
    n1 = _start(node_process, tmp_path, "n1")
    n2 = _start(node_process, tmp_path, "n2")
    await _declare_delayed(n1.url)  # n1 owns the queue
    await _until_known(n2.url, "later")
    on_n1 = [b"n1-%d" % i for i in range(50)]
    on_n2 = [b"n2-%d" % i for i in range(50)]
    sent = await _publish_delayed(n1.url, on_n1)  # held by n1
    await _publish_delayed(n2.url, on_n2)  # held by n2
    assert _held_delayed_rows(cluster_settings("n1")) == 100  # each held once, durably, before its confirm

    n1.kill()  # before they are due: n2 takes n1's schedule and the queue over, and releases them
    got: list[tuple[bytes, float]] = []
    consumer = await _collect(n2.url, "due", got)  # served through n2 (the queue's owner after the takeover)
    try:
        await async_wait_for(lambda: len(got) >= 100, timeout=DELAY_MS / 1000 + 6 * LEASE_TTL,
                             what=lambda: f"every delayed message on n2 (got {len(got)})")
        # Nothing is held any more: no row is left that could be released a second time.
        await async_wait_for(lambda: _held_delayed_rows(cluster_settings("n2")) == 0, timeout=10,
                             what="the delayed rows removed with their release")
        await _barrier(n2.url, "due", got)  # a second copy, had one been enqueued, came before it
        assert Counter(body for body, _ in got) == Counter(on_n1 + on_n2)  # each exactly once
        # n1's schedule, all released, gives its lease up (not renewed for ever by n2).
        await async_wait_for(lambda: _schedule_leases(cluster_settings("n2"), "n1") == 0, timeout=4 * LEASE_TTL,
                             what="the lease of n1's released schedule dropped")
        assert _schedule_leases(cluster_settings("n2"), "n2") == 1  # n2's own stays
        first = min(at for _, at in got)
        assert first - sent >= DELAY_MS / 1000 - 0.1, "released before it was due"
        # On time: n2's own when due, n1's within about a lease TTL of the takeover.
        assert max(at for _, at in got) - sent <= DELAY_MS / 1000 + 3 * LEASE_TTL
    finally:
        await consumer.close()
    assert any("took over the delayed messages of exchange 'later'" in line for line in n2.output)


async def test_a_node_paused_past_its_lease_never_releases_what_another_node_released(
    node_process: Callable[..., BrokerProcess], cluster_settings: Callable[[str], PostgresSettings], tmp_path: Path,
) -> None:
    # The queue is n2's: what n1 releases is forwarded to n2, outside n1's fenced batches. n1 is paused
    # holding the messages, n2 takes them over and releases them; n1, resumed after they are due, must
    # not release them a second time (its batches are fenced; its forwards are held back until it has
    # renewed its lease, which it cannot).
    n1 = _start(node_process, tmp_path, "n1")
    n2 = _start(node_process, tmp_path, "n2")
    await _declare_delayed(n2.url)
    await _until_known(n1.url, "later")
    bodies = [b"p-%d" % i for i in range(30)]
    await _publish_delayed(n1.url, bodies, delay_ms=2_000)
    assert _held_delayed_rows(cluster_settings("n1")) == 30
    n1.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    got: list[tuple[bytes, float]] = []
    consumer = await _collect(n2.url, "due", got)
    try:
        try:
            await async_wait_for(lambda: len(got) >= 30, timeout=8 * LEASE_TTL,
                                 what=lambda: f"n1's delayed messages released by n2 (got {len(got)})")
        finally:
            n1.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        await async_wait_for(lambda: any("lost the lease of the delayed messages of exchange 'later'" in line
                                         for line in n1.output), timeout=4 * LEASE_TTL, what="n1 noticing")
        await _barrier(n2.url, "due", got)  # n1 had a tick or more after SIGCONT: a second copy came before
        assert Counter(body for body, _ in got) == Counter(bodies)
    finally:
        await consumer.close()


async def test_every_node_restarted_keeps_the_held_delayed_messages(
    node_process: Callable[..., BrokerProcess], cluster_settings: Callable[[str], PostgresSettings], tmp_path: Path,
) -> None:
    n1 = _start(node_process, tmp_path, "n1")
    n2 = _start(node_process, tmp_path, "n2")
    await _declare_delayed(n1.url)
    await _until_known(n2.url, "later")
    sent = await _publish_delayed(n1.url, [b"a-%d" % i for i in range(20)], delay_ms=3_000)
    await _publish_delayed(n2.url, [b"b-%d" % i for i in range(20)], delay_ms=3_000)
    n1.kill()
    n2.kill()  # both at once, before anything was due
    assert _held_delayed_rows(cluster_settings("n1")) == 40
    n1.start()
    n2.start()
    got: list[tuple[bytes, float]] = []
    consumer = await _collect(n1.url, "due", got)
    try:
        await async_wait_for(lambda: len(got) >= 40, timeout=30, what=lambda: f"every delayed message (got {len(got)})")
        await async_wait_for(lambda: _held_delayed_rows(cluster_settings("n1")) == 0, timeout=10,
                             what="the delayed rows removed with their release")
        await _barrier(n1.url, "due", got)
        assert sorted(body for body, _ in got) == sorted([b"a-%d" % i for i in range(20)] + [b"b-%d" % i for i in range(20)])
        assert min(at for _, at in got) - sent >= 3.0 - 0.1
    finally:
        await consumer.close()


async def test_a_duplicate_published_on_another_node_is_dropped_even_after_the_owner_dies(
    node_process: Callable[..., BrokerProcess], tmp_path: Path,
) -> None:
    n1 = _start(node_process, tmp_path, "n1")
    n2 = _start(node_process, tmp_path, "n2")
    connection1 = await aio_pika.connect(n1.url)
    channel1 = await connection1.channel(publisher_confirms=True)
    exchange1 = await channel1.declare_exchange("once", "x-message-deduplication", durable=True,
                                                arguments={"x-cache-size": 1000, "x-cache-ttl": 600_000})  # n1 owns the window
    queue = await channel1.declare_queue("deduped", durable=True)
    await queue.bind(exchange1)

    def message(key: str) -> aio_pika.Message:
        return aio_pika.Message(key.encode(), delivery_mode=2, headers={"x-deduplication-header": key})

    await _until_known(n2.url, "once")
    connection2 = await aio_pika.connect(n2.url)
    channel2 = await connection2.channel(publisher_confirms=True)
    exchange2 = await channel2.get_exchange("once", ensure=False)
    probes = [0]

    async def forwarded() -> bool:  # n2 has polled who owns the window: its publishes are confirmed
        probes[0] += 1
        try:
            await exchange2.publish(message(f"probe-{probes[0]}"), routing_key="")
            return True
        except aio_pika.exceptions.DeliveryError:
            return False

    await async_wait_for(forwarded, timeout=15, interval=0.1, what="a publish through n2 confirmed")
    await exchange1.publish(message("k1"), routing_key="")
    await exchange2.publish(message("k1"), routing_key="")  # duplicate of n1's: confirmed, dropped
    await exchange2.publish(message("k2"), routing_key="")
    await exchange1.publish(message("k2"), routing_key="")  # duplicate of n2's
    await connection1.close()

    n1.kill()  # n2 takes the window over from the rows n1 committed
    await async_wait_for(lambda: any("took over the deduplication window of exchange 'once'" in line
                                     for line in n2.output), timeout=6 * LEASE_TTL, what="n2 owns the window")
    await exchange2.publish(message("k1"), routing_key="")  # still a duplicate
    await exchange2.publish(message("k3"), routing_key="")
    await connection2.close()

    got: list[tuple[bytes, float]] = []
    consumer = await _collect(n2.url, "deduped", got)
    try:
        # k3 was published last: once it is here, everything before it in the queue was delivered.
        await async_wait_for(lambda: any(body == b"k3" for body, _ in got), timeout=20, what=lambda: f"k3 (got {got})")
        assert Counter(body for body, _ in got if not body.startswith(b"probe")) == Counter([b"k1", b"k2", b"k3"])
    finally:
        await consumer.close()
