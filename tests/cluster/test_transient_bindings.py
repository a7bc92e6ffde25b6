"""Bindings to non-durable and exclusive queues are cluster-wide (mailslot.cluster.transient), as in a
RabbitMQ cluster: each subscriber's exclusive queue bound to a fanout exchange on its node gets what is
published to that exchange on any node; an unbind, or the queue's deletion (its connection closed, its
node killed), stops every node routing to it and leaves no binding row in PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import aio_pika
import psycopg
import pytest

from helpers import async_wait_for
from mailslot.bench.broker_process import BrokerProcess
from mailslot.bootstrap import BrokerServer
from mailslot.storage.postgres import PostgresSettings

from .test_transient import SECRET, _node

PROBE = b"probe"


async def test_every_subscriber_on_either_node_gets_every_message_published_on_either_node(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    async with _node(cluster_settings("a")) as a, _node(cluster_settings("b")) as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            await (await on_a.channel()).declare_exchange("news", aio_pika.ExchangeType.FANOUT, durable=True)
            await async_wait_for(lambda: "news" in b.core.vhosts["/"].exchanges, timeout=10, what="b's 'news'")
            await pub_sub_across((a, b), (on_a, on_b), "news", durable=True, rounds=20)


async def test_a_topic_binding_of_a_non_durable_queue_routes_on_the_other_node_until_unbound(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    async with _node(cluster_settings("a")) as a, _node(cluster_settings("b")) as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            channel_a = await on_a.channel()
            events = await channel_a.declare_exchange("events", aio_pika.ExchangeType.TOPIC, durable=True)
            audit = await channel_a.declare_queue("audit", durable=False)
            await audit.bind(events, "order.*")
            await async_wait_for(lambda: _bound(b, "events", "audit"), timeout=10, what="b to bind 'audit'")
            channel_b = await on_b.channel(publisher_confirms=True, on_return_raises=True)
            await _until_confirmed(channel_b, "events", "order.probe")
            await audit.purge()
            await (await channel_b.get_exchange("events", ensure=False)).publish(
                aio_pika.Message(b"created"), "order.created", mandatory=True)
            message = await async_wait_for(lambda: audit.get(no_ack=True, fail=False), timeout=5, what="it on a")
            assert message.body == b"created"
            await audit.unbind(events, "order.*")
            unbound = time.monotonic()
            await async_wait_for(lambda: not _bound(b, "events", "audit"), timeout=5, interval=0.02,
                                 what="b to drop the binding")
            took = time.monotonic() - unbound
            print(f"\nunbind on a applied on b after {took:.2f} s")
            assert took < 1.5
            with pytest.raises((aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError)):  # routes nowhere on b now: returned
                await (await channel_b.get_exchange("events", ensure=False)).publish(
                    aio_pika.Message(b"late"), "order.late", mandatory=True)
            assert _binding_rows(cluster_settings("a"), "audit") == 0


async def test_closing_the_subscriber_connection_removes_its_bindings_everywhere(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    settings = cluster_settings("a")
    async with _node(settings) as a, _node(cluster_settings("b")) as b:
        subscriber, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_b:
            channel = await subscriber.channel()
            news = await channel.declare_exchange("news", aio_pika.ExchangeType.FANOUT, durable=True)
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(news)
            await queue.bind(news, "also")  # a second binding, to the same queue
            await async_wait_for(lambda: _bound(b, "news", queue.name), timeout=10, what="b to bind it")
            assert _binding_rows(settings, queue.name) == 2
            await subscriber.close()  # the exclusive queue dies with its connection
            await async_wait_for(lambda: _binding_rows(settings, queue.name) == 0, timeout=5,
                                 what="its binding rows to go")
            await async_wait_for(lambda: not _bound(b, "news", queue.name) and queue.name not in _queues(b),
                                 timeout=5, what="b to drop the queue and its bindings")
            with pytest.raises((aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError)):
                await (await (await on_b.channel(on_return_raises=True)).get_exchange("news", ensure=False)).publish(
                    aio_pika.Message(b"nobody"), "", mandatory=True)


@pytest.mark.slow
async def test_the_bindings_of_a_killed_node_s_exclusive_queue_are_deleted_everywhere(
    node_process: Callable[..., BrokerProcess], cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    a = node_process("a", "--cluster-link", "127.0.0.1:0", "--cluster-secret", SECRET, lease_ttl=2.0)
    subscriber = await aio_pika.connect(a.url)
    channel = await subscriber.channel()
    news = await channel.declare_exchange("news", aio_pika.ExchangeType.FANOUT, durable=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(news)
    settings = cluster_settings("b")
    async with _node(settings, lease_ttl=2.0) as b:
        await async_wait_for(lambda: _bound(b, "news", queue.name), timeout=10, what="b to bind a's queue")
        a.kill()
        await async_wait_for(lambda: queue.name not in _queues(b) and not _bound(b, "news", queue.name),
                             timeout=15, interval=0.05, what="a's exclusive queue and its binding gone on b")
        assert _binding_rows(settings, queue.name) == 0
        assert _queue_rows(settings, queue.name) == 0


async def pub_sub_across(nodes: tuple[BrokerServer, ...], connections: tuple[aio_pika.abc.AbstractConnection, ...],
                         exchange: str, *, durable: bool, rounds: int) -> None:
    """A subscriber on each node as a pub/sub client makes one (declares the fanout ``exchange``, binds an
    exclusive server-named queue to it) and a publisher with confirms on each: every subscriber gets every
    message published on any node (``rounds`` from each)."""
    got: dict[str, list[bytes]] = {}
    for connection in connections:
        channel = await connection.channel()
        fanout = await channel.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=durable)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(fanout)
        bodies = got[queue.name] = []
        await queue.consume(_collect(bodies), no_ack=True)
    await async_wait_for(lambda: all(_bound(n, exchange, q) for n in nodes for q in got), timeout=10,
                         what="every node to bind every subscriber's queue")
    publishers = [await c.channel(publisher_confirms=True, on_return_raises=True) for c in connections]
    for channel in publishers:
        await _until_confirmed(channel, exchange, "")
    names = "abcdefgh"[:len(publishers)]
    for i in range(rounds):
        for name, channel in zip(names, publishers, strict=True):
            await (await channel.get_exchange(exchange, ensure=False)).publish(aio_pika.Message(f"{name}{i}".encode()), "")
    wanted = sorted(f"{n}{i}".encode() for n in names for i in range(rounds))
    await async_wait_for(lambda: all(sorted(bodies) == wanted for bodies in got.values()), timeout=10,
                         what=lambda: f"every subscriber to get all {len(wanted)} messages, got {got}")


def _collect(bodies: list[bytes]) -> Callable[[aio_pika.abc.AbstractIncomingMessage], Awaitable[None]]:
    async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if message.body != PROBE:
            bodies.append(message.body)

    return take


async def _until_confirmed(channel: aio_pika.abc.AbstractChannel, exchange: str, routing_key: str) -> None:
    """Publish probes until one is routed and confirmed: the node knows the owners' links."""
    target = await channel.get_exchange(exchange, ensure=False)

    async def probe() -> bool:
        try:
            await target.publish(aio_pika.Message(PROBE), routing_key, mandatory=True)
            return True
        except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError):
            return False

    await async_wait_for(probe, timeout=15, interval=0.1, what="a publish through the node to be confirmed")


def _bound(broker: BrokerServer, exchange: str, queue: str) -> bool:
    found = broker.core.vhosts["/"].exchanges.get(exchange)
    return found is not None and any(destination == ("queue", queue) for destination, _, _ in found.bindings)


def _queues(broker: BrokerServer) -> dict[str, object]:
    return broker.core.vhosts["/"].queues  # type: ignore[return-value]


def _binding_rows(settings: PostgresSettings, queue: str) -> int:
    return _count(settings, "bindings WHERE destination_kind = 'queue' AND destination = %s", queue)


def _queue_rows(settings: PostgresSettings, queue: str) -> int:
    return _count(settings, "queues WHERE name = %s", queue)


def _count(settings: PostgresSettings, where: str, name: str) -> int:
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{settings.schema}".{where}', (name.encode(),)).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])
