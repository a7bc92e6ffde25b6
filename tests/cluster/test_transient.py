"""Non-durable and exclusive queues have one name cluster-wide (mailslot.cluster.transient), as in a
RabbitMQ cluster: declared on a second node, a non-durable queue is the first node's (publishes there
are forwarded to it); another connection's exclusive queue is RESOURCE_LOCKED on every node; the
non-durable queues of a node that dies are deleted, not taken over."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aio_pika
import aiormq
import pytest

from helpers import async_wait_for
from mailslot.bench.broker_process import BrokerProcess
from mailslot.bootstrap import BrokerServer
from mailslot.storage.postgres import PostgresSettings
from mailslot.testing import running_broker

SECRET = "a-secret-of-the-cluster-0123456789"


@asynccontextmanager
async def _node(settings: PostgresSettings, lease_ttl: float = 3.0) -> AsyncIterator[BrokerServer]:
    async with running_broker(store="postgres", postgres_dsn=settings.dsn, postgres_schema=settings.schema,
                              node_name=settings.node_name, cluster=True, lease_ttl=lease_ttl,
                              cluster_link="127.0.0.1:0", cluster_secret=SECRET) as broker:
        yield broker


async def test_a_non_durable_queue_declared_on_two_nodes_is_one_queue_served_by_the_first(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    async with _node(cluster_settings("a")) as a, _node(cluster_settings("b")) as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            await (await on_a.channel()).declare_queue("scratch", durable=False)
            channel_b = await on_b.channel(publisher_confirms=True)
            declared = await channel_b.declare_queue("scratch", durable=False)  # at once: no wait for the sync
            assert declared.declaration_result.message_count == 0
            await async_wait_for(lambda: b.cluster is not None and b.cluster.owner_of(_key("scratch")) == "a",
                                 timeout=10, what="b to see a own it")

            async def forwarded() -> bool:  # b knows a's link once it polled the nodes table
                try:
                    await channel_b.default_exchange.publish(aio_pika.Message(b"via-b"), "scratch")
                    return True
                except aio_pika.exceptions.DeliveryError:
                    return False

            await async_wait_for(forwarded, timeout=10, interval=0.1, what="a publish on b forwarded to a")
            queue_a = await (await on_a.channel()).declare_queue("scratch", passive=True)
            message = await async_wait_for(lambda: queue_a.get(no_ack=True, fail=False), timeout=5, what="it on a")
            assert message.body == b"via-b"
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match="inequivalent arg 'durable'"):
                await (await on_b.channel()).declare_queue("scratch", durable=True)
            # A consumer on b is served from a's queue, as from a durable one's.
            got: list[bytes] = []

            async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                got.append(message.body)
                await message.ack()

            await (await (await on_b.channel()).declare_queue("scratch", passive=True)).consume(take)
            await (await on_a.channel()).default_exchange.publish(aio_pika.Message(b"via-a"), "scratch")
            await async_wait_for(lambda: got == [b"via-a"], timeout=10, what="b's consumer to get a's message")


async def test_an_exclusive_queue_is_locked_for_every_other_node_until_its_connection_closes(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    async with _node(cluster_settings("a")) as a, _node(cluster_settings("b")) as b:
        owner = await aiormq.connect(a.amqp_url)
        await (await owner.channel()).queue_declare("private", exclusive=True)
        other = await aiormq.connect(b.amqp_url)
        try:
            with pytest.raises(aiormq.exceptions.ChannelLockedResource, match="RESOURCE_LOCKED - cannot obtain "
                               "exclusive access to locked queue 'private' in vhost '/'"):
                await (await other.channel()).queue_declare("private", exclusive=True)  # at once, before b's sync
            with pytest.raises(aiormq.exceptions.ChannelLockedResource):
                await (await other.channel()).queue_declare("private")

            async def locked_once_b_has_its_view() -> bool:
                assert b.cluster is not None
                return any(q.name == "private" for v in b.core.vhosts.values() for q in v.queues.values())

            await async_wait_for(locked_once_b_has_its_view, timeout=5, what="b's view of a's exclusive queue")
            with pytest.raises(aiormq.exceptions.ChannelLockedResource):
                await (await other.channel()).queue_declare("private", passive=True)
            await owner.close()  # the queue dies with its connection, on every node

            async def free() -> bool:
                channel = await other.channel()
                try:
                    await channel.queue_declare("private", exclusive=True)
                    return True
                except aiormq.exceptions.ChannelLockedResource:
                    return False

            await async_wait_for(free, timeout=5, interval=0.05, what="b to declare the name for itself")
        finally:
            await other.close()
            if not owner.is_closed:
                await owner.close()


@pytest.mark.slow
async def test_the_non_durable_queues_of_a_killed_node_are_deleted_not_taken_over(
    node_process: Callable[..., BrokerProcess], cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    a = node_process("a", "--cluster-link", "127.0.0.1:0", "--cluster-secret", SECRET, lease_ttl=2.0)
    on_a = await aio_pika.connect(a.url)
    await (await on_a.channel()).declare_queue("scratch", durable=False)
    await (await on_a.channel()).declare_queue("kept", durable=True)
    await on_a.close()  # neither queue is exclusive or auto-delete: both stay
    async with _node(cluster_settings("b"), lease_ttl=2.0) as b:
        on_b = await aio_pika.connect(b.amqp_url)
        async with on_b:
            await async_wait_for(lambda: _has(b, "scratch") and _has(b, "kept"), timeout=10, what="b's views")
            a.kill()
            killed = time.monotonic()
            await async_wait_for(lambda: not _has(b, "scratch"), timeout=15, interval=0.05,
                                 what="a's non-durable queue to be deleted")
            print(f"\na's non-durable queue deleted on b {time.monotonic() - killed:.2f} s after kill -9 (TTL 2 s)")
            assert _has(b, "kept")  # the durable one is taken over
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await (await on_b.channel()).declare_queue("scratch", passive=True)
            mine = await (await on_b.channel()).declare_queue("scratch", durable=False)  # the name is free
            assert b.cluster is not None and b.cluster.owner_of(_key("scratch")) == "b"
            assert mine.declaration_result.message_count == 0


def _has(broker: BrokerServer, name: str) -> bool:
    return name in broker.core.vhosts["/"].queues


def _key(name: str) -> str:
    from mailslot.core import storekeys

    return storekeys.queue_key("/", name)
