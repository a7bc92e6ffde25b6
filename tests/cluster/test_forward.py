"""Publishes to a node that does not own the queue are forwarded to the owner over the cluster link
(mailslot.cluster.forward): confirmed only after the owner committed, in order, one frame per batch;
a node without the cluster's secret cannot forward. Two or three nodes in this process, each with its
own link listener (TCP or Unix socket), on one PostgreSQL schema."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from helpers import async_wait_for
from mailslot.bootstrap import BrokerServer
from mailslot.cluster.forward import Forwarder
from mailslot.storage.postgres import PostgresSettings
from mailslot.testing import running_broker
from mailslot.testing.certificates import CertificateAuthority

SECRET = "a-secret-of-the-cluster-0123456789"


@asynccontextmanager
async def _node(settings: PostgresSettings, link: str, secret: str = SECRET, **more: Any) -> AsyncIterator[BrokerServer]:
    async with running_broker(store="postgres", postgres_dsn=settings.dsn, postgres_schema=settings.schema,
                              node_name=settings.node_name, cluster=True, lease_ttl=1.5, cluster_link=link,
                              cluster_secret=secret, **more) as broker:
        yield broker


def _link(transport: str, tmp_path: Path, name: str) -> str:
    return f"unix:{tmp_path}/{name}.sock" if transport == "unix" else "127.0.0.1:0"


async def _publish(channel: aio_pika.abc.AbstractChannel, body: bytes, queue: str = "orders") -> None:
    # mandatory: a queue this node has not heard of yet returns the message instead of confirming it
    await channel.default_exchange.publish(aio_pika.Message(body, delivery_mode=2), routing_key=queue, mandatory=True)


async def _until_forwarded(channel: aio_pika.abc.AbstractChannel, queue: str = "orders") -> None:
    """Publish probes until one is confirmed: the non-owner has polled who owns the queue and where."""

    async def probe() -> bool:
        try:
            await _publish(channel, b"probe", queue)
            return True
        except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError):
            return False

    await async_wait_for(probe, timeout=15, interval=0.1, what="a publish through the non-owner to be confirmed")


async def _drain(url: str, queue: str = "orders") -> list[bytes]:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=True, passive=True)
        out = []
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            out.append(message.body)
        return out


def _forwarder(broker: BrokerServer) -> Forwarder:
    assert broker.cluster is not None and isinstance(broker.cluster.remote, Forwarder)
    return broker.cluster.remote


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_a_publish_to_a_non_owner_is_forwarded_and_confirmed_after_the_owner_committed(
    cluster_settings: Callable[[str], PostgresSettings], tmp_path: Path, transport: str
) -> None:
    async with _node(cluster_settings("a"), _link(transport, tmp_path, "a")) as a, \
            _node(cluster_settings("b"), _link(transport, tmp_path, "b")) as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            await (await on_a.channel()).declare_queue("orders", durable=True)  # a owns it
            channel = await on_b.channel(publisher_confirms=True, on_return_raises=True)
            await _until_forwarded(channel)
            bodies = [f"m-{i}".encode() for i in range(500)]
            frames_before = _forwarder(b).frames
            await asyncio.gather(*(_publish(channel, body) for body in bodies))  # every one confirmed
            frames = _forwarder(b).frames - frames_before
        assert frames < len(bodies) / 5, f"{frames} frames for {len(bodies)} messages: not batch-shaped"
        got = [body for body in await _drain(a.amqp_url) if body != b"probe"]
    assert got == bodies  # all there, once, in publish order, on the owner


async def test_a_publish_routed_to_queues_of_two_owners_is_confirmed_once_both_committed(
    cluster_settings: Callable[[str], PostgresSettings], tmp_path: Path
) -> None:
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, _node(cluster_settings("b"), "127.0.0.1:0") as b, \
            _node(cluster_settings("c"), "127.0.0.1:0") as c:
        connections = [await aio_pika.connect(n.amqp_url) for n in (a, b, c)]
        try:
            channel_a, channel_b, channel_c = [await conn.channel(publisher_confirms=True, on_return_raises=True) for conn in connections]
            # Declared on every node (a redeclare is a no-op), so none waits for the sync to bind or publish.
            fanouts = [await ch.declare_exchange("both", aio_pika.ExchangeType.FANOUT, durable=True)
                       for ch in (channel_a, channel_b, channel_c)]
            await (await channel_a.declare_queue("on-a", durable=True)).bind(fanouts[0])  # a owns on-a
            await (await channel_b.declare_queue("on-b", durable=True)).bind(fanouts[1])  # b owns on-b
            await _until_forwarded(channel_c, "on-a")
            await _until_forwarded(channel_c, "on-b")

            async def both_bound() -> bool:  # c routes "both" to the two queues once it has both bindings
                async with connections[2].channel() as probe:
                    try:
                        await (await probe.get_queue("on-a")).bind("both")
                        await (await probe.get_queue("on-b")).bind("both")
                        return True
                    except aio_pika.exceptions.AMQPError:
                        return False

            await async_wait_for(both_bound, timeout=10, what="c to know both queues")
            exchange_c = fanouts[2]
            for i in range(20):
                await exchange_c.publish(aio_pika.Message(f"f-{i}".encode(), delivery_mode=2), routing_key="",
                                         mandatory=True)
        finally:
            for conn in connections:
                await conn.close()
        want = [f"f-{i}".encode() for i in range(20)]
        assert [m for m in await _drain(a.amqp_url, "on-a") if m != b"probe"] == want
        assert [m for m in await _drain(b.amqp_url, "on-b") if m != b"probe"] == want


async def test_a_node_without_the_cluster_secret_cannot_forward(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, \
            _node(cluster_settings("m"), "127.0.0.1:0", secret="another-secret-0123456789") as m:
        on_a, on_m = await aio_pika.connect(a.amqp_url), await aio_pika.connect(m.amqp_url)
        async with on_a, on_m:
            await (await on_a.channel()).declare_queue("orders", durable=True)
            channel = await on_m.channel(publisher_confirms=True, on_return_raises=True)
            await async_wait_for(lambda: m.cluster is not None and "a" in m.cluster.links, timeout=10,
                                 what="m to learn where a's link listens")
            await async_wait_for(lambda: m.cluster is not None and "/\x00orders" in m.cluster.owners, timeout=10,
                                 what="m to learn who owns the queue")
            for _ in range(3):
                with pytest.raises(aio_pika.exceptions.DeliveryError):
                    await _publish(channel, b"smuggled")
        assert await _drain(a.amqp_url) == []


async def test_a_consumer_on_a_non_owner_is_served_through_its_node(
    cluster_settings: Callable[[str], PostgresSettings], tmp_path: Path
) -> None:
    """b's consumer of a queue a owns gets every message, in order; its acks reach a (a holds nothing
    after); what b's consumer left unacked when it cancelled goes back to a, flagged redelivered."""
    async with _node(cluster_settings("a"), "127.0.0.1:0", http_port=0) as a, \
            _node(cluster_settings("b"), "127.0.0.1:0") as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            publisher = await on_a.channel(publisher_confirms=True, on_return_raises=True)
            await publisher.declare_queue("orders", durable=True)  # a owns it
            bodies = [f"o-{i}".encode() for i in range(200)]
            await asyncio.gather(*(_publish(publisher, body) for body in bodies))

            channel_b = await on_b.channel()
            await channel_b.set_qos(prefetch_count=20)
            queue_b = await async_wait_for(lambda: _passive(channel_b, "orders"), timeout=10,
                                           what="b to know the queue")
            got: list[bytes] = []
            kept: list[aio_pika.abc.AbstractIncomingMessage] = []

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                got.append(message.body)
                if len(got) <= 150:
                    await message.ack()
                else:
                    kept.append(message)  # the last 50: delivered to b's consumer, never acked

            tag = await queue_b.consume(on_message)
            await async_wait_for(lambda: len(got) >= 170, timeout=15, what=lambda: f"deliveries on b ({len(got)})")
            assert got[:170] == bodies[:170]  # in order, through b
            await queue_b.cancel(tag)
            await channel_b.close()  # b's unacked deliveries are requeued: b gives them back to a

            consumer_a = await on_a.channel()
            queue_a = await consumer_a.declare_queue("orders", durable=True, passive=True)
            back: list[tuple[bytes, bool]] = []
            while len(back) < 50:
                message = await async_wait_for(lambda: queue_a.get(no_ack=True, fail=False), timeout=10,
                                               what=lambda: f"the rest back on a ({len(back)})")
                back.append((message.body, message.redelivered))
            assert await queue_a.get(no_ack=True, fail=False) is None, "an acked message came back"
        assert [body for body, _ in back] == bodies[150:]
        assert all(flag for body, flag in back[:20]), "what b had delivered is not flagged redelivered"


async def _passive(channel: aio_pika.abc.AbstractChannel, name: str) -> aio_pika.abc.AbstractQueue | None:
    try:
        return await channel.declare_queue(name, durable=True, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        await channel.reopen()
        return None


async def test_the_link_with_mutual_tls_forwards_and_refuses_a_node_of_another_ca(
    cluster_settings: Callable[[str], PostgresSettings], tmp_path: Path
) -> None:
    ca, stranger_ca = CertificateAuthority("cluster CA"), CertificateAuthority("another CA")
    ca_file = ca.write(tmp_path, "ca")

    def tls(issuer: CertificateAuthority, name: str) -> dict[str, Any]:
        files = issuer.issue(name, server=True, client=True).write(tmp_path, name)
        return {"cluster_link_tls": True, "tls_cert": files.cert, "tls_key": files.key, "tls_ca": ca_file}

    async with _node(cluster_settings("a"), "127.0.0.1:0", **tls(ca, "a")) as a, \
            _node(cluster_settings("b"), "127.0.0.1:0", **tls(ca, "b")) as b, \
            _node(cluster_settings("m"), "127.0.0.1:0", **tls(stranger_ca, "m")) as m:
        on_a, on_b, on_m = [await aio_pika.connect(n.amqp_url) for n in (a, b, m)]
        async with on_a, on_b, on_m:
            await (await on_a.channel()).declare_queue("orders", durable=True)
            channel_b = await on_b.channel(publisher_confirms=True, on_return_raises=True)
            await _until_forwarded(channel_b)
            await _publish(channel_b, b"over-tls")
            channel_m = await on_m.channel(publisher_confirms=True, on_return_raises=True)
            await async_wait_for(lambda: m.cluster is not None and "/\x00orders" in m.cluster.owners
                                 and "a" in m.cluster.links, timeout=10, what="m to know the owner and its link")
            with pytest.raises(aio_pika.exceptions.DeliveryError):  # its certificate is not the cluster's
                await _publish(channel_m, b"from-a-stranger")
        assert [body for body in await _drain(a.amqp_url) if body != b"probe"] == [b"over-tls"]


async def test_a_consumer_served_through_its_node_goes_on_when_the_owner_stops(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    """Three nodes: c's consumer of a queue a owns keeps getting messages after a stops, whether c or b
    takes the queue over (c is then served from the log, or subscribes at b)."""
    async with _node(cluster_settings("b"), "127.0.0.1:0") as b, _node(cluster_settings("c"), "127.0.0.1:0") as c:
        got: list[bytes] = []
        on_c = await aio_pika.connect(c.amqp_url)
        async with on_c:
            async with _node(cluster_settings("a"), "127.0.0.1:0") as a:
                on_a = await aio_pika.connect(a.amqp_url)
                async with on_a:
                    publisher = await on_a.channel(publisher_confirms=True)
                    await publisher.declare_queue("orders", durable=True)  # a owns it
                    channel_c = await on_c.channel()
                    queue_c = await async_wait_for(lambda: _passive(channel_c, "orders"), timeout=10,
                                                   what="c to know the queue")

                    async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                        got.append(message.body)
                        await message.ack()

                    await queue_c.consume(take)
                    for i in range(20):
                        await _publish(publisher, f"before-{i}".encode())
                    await async_wait_for(lambda: len(got) >= 20, timeout=10, what="c served through c from a")
            # a stopped (its leases given up): b or c takes the queue over; publish through b.
            on_b = await aio_pika.connect(b.amqp_url)
            async with on_b:
                channel_b = await on_b.channel(publisher_confirms=True, on_return_raises=True)
                await _until_forwarded_or_owned(channel_b)
                for i in range(20):
                    await _publish(channel_b, f"after-{i}".encode())
                await async_wait_for(lambda: sum(body.startswith(b"after-") for body in got) >= 20, timeout=15,
                                     what=lambda: f"c's consumer served after the takeover ({len(got)})")
    assert [body for body in got if body.startswith(b"before-")] == [f"before-{i}".encode() for i in range(20)]
    assert [body for body in got if body.startswith(b"after-")] == [f"after-{i}".encode() for i in range(20)]


async def _until_forwarded_or_owned(channel: aio_pika.abc.AbstractChannel) -> None:
    async def probe() -> bool:
        try:
            await _publish(channel, b"probe-after")
            return True
        except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError):
            return False

    await async_wait_for(probe, timeout=15, interval=0.1, what="a publish through b after the takeover")
