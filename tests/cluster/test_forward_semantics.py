"""A client on a node that does not own the queue gets what it would get on the owner (mailslot.cluster.forward):
nack/reject relayed to the owner (requeued there at its place, dead-lettered there, x-delivery-limit counted
there), priority order through another node, and a reject-publish refusal that nacks that publish only. Two
nodes in this process on one PostgreSQL schema; where it helps, the same scenario on the owner itself."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aio_pika
import aiohttp
import pytest

from helpers import async_wait_for
from mailslot.bootstrap import BrokerServer
from mailslot.cluster import link
from mailslot.cluster.forward import (
    ACK,
    PROXY_PREFETCH,
    REJECT,
    decode_deliver,
    decode_refused,
    decode_tags,
    encode_deliver,
    encode_refused,
    encode_tags,
)
from mailslot.core.message import Entry, Message
from mailslot.frontends.amqp091 import AMQP_CODEC
from mailslot.storage.postgres import PostgresSettings

from .test_forward import _node, _passive

QUEUE_KEY = "/\x00{}"
GUEST = {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}  # guest:guest


async def _knows(node: BrokerServer, owner: str, *queues: str) -> None:
    """``node`` has polled the owner of each queue and where the owner's link listens."""
    await async_wait_for(
        lambda: node.cluster is not None and owner in node.cluster.links
        and all(QUEUE_KEY.format(q) in node.cluster.owners for q in queues),
        timeout=10, what=f"the node to learn the owner of {queues}")


async def _queue_on(connection: aio_pika.abc.AbstractConnection, name: str) -> aio_pika.abc.AbstractQueue:
    channel = await connection.channel()
    return await async_wait_for(lambda: _passive(channel, name), timeout=10, what=f"the node to know {name}")


async def _get(queue: aio_pika.abc.AbstractQueue, what: str) -> aio_pika.abc.AbstractIncomingMessage:
    return await async_wait_for(lambda: queue.get(no_ack=True, fail=False), timeout=10, what=what)


async def test_a_nack_with_requeue_on_a_non_owner_requeues_at_the_owner_for_any_consumer(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    """b's consumer nacks (requeue) everything it gets; a's consumer acks. The nacked messages go back to the
    owner, flagged redelivered, and a's consumer gets them: all 20 end on a, none is lost or kept by b."""
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, _node(cluster_settings("b"), "127.0.0.1:0") as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            publisher = await on_a.channel(publisher_confirms=True)
            await publisher.declare_queue("jobs", durable=True)
            bodies = [f"j-{i}".encode() for i in range(20)]
            for body in bodies:
                await publisher.default_exchange.publish(aio_pika.Message(body, delivery_mode=2), routing_key="jobs")
            queue_b = await _queue_on(on_b, "jobs")
            await queue_b.channel.set_qos(prefetch_count=5)
            nacked_on_b: list[bytes] = []

            async def refuse(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nacked_on_b.append(message.body)
                await message.nack(requeue=True)

            tag_b = await queue_b.consume(refuse)
            await async_wait_for(lambda: len(set(nacked_on_b)) >= 5, timeout=10, what="b's consumer to nack some")
            channel_a = await on_a.channel()
            await channel_a.set_qos(prefetch_count=5)
            queue_a = await channel_a.declare_queue("jobs", durable=True, passive=True)
            got_on_a: dict[bytes, bool] = {}

            async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                got_on_a[message.body] = message.redelivered
                await message.ack()

            await queue_a.consume(take)
            await async_wait_for(lambda: len(got_on_a) == 20, timeout=20,
                                 what=lambda: f"every message on a's consumer ({len(got_on_a)})")
            await queue_b.cancel(tag_b)
        assert sorted(got_on_a) == sorted(bodies)
        first_nacked = nacked_on_b[:5]
        assert all(got_on_a[body] for body in first_nacked), "a message nacked on b came back not redelivered"


async def test_requeue_counts_toward_the_delivery_limit_at_the_owner_and_dead_letters_there(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    """x-delivery-limit 1: a's channel nacks the message once (1 failed delivery), b's consumer gets it with
    x-delivery-count 1, nacks it (2 > 1): the owner dead-letters it (reason delivery_limit) as on one node;
    b's consumer never sees it again."""
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, _node(cluster_settings("b"), "127.0.0.1:0") as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            channel_a = await on_a.channel(publisher_confirms=True)
            dlq = await channel_a.declare_queue("limited-dlq", durable=True)
            queue_a = await channel_a.declare_queue("limited", durable=True, arguments={
                "x-delivery-limit": 1, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "limited-dlq"})
            await channel_a.default_exchange.publish(aio_pika.Message(b"once", delivery_mode=2), routing_key="limited")
            first = await queue_a.get(no_ack=False)
            await first.nack(requeue=True)  # one failed delivery, counted by the owner
            queue_b = await _queue_on(on_b, "limited")
            seen_on_b: list[tuple[bytes, Any, bool]] = []

            async def refuse(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                seen_on_b.append((message.body, message.headers.get("x-delivery-count"), message.redelivered))
                await message.nack(requeue=True)

            await queue_b.consume(refuse)
            dead = await _get(dlq, "the message dead-lettered on a")
            assert await queue_a.get(no_ack=True, fail=False) is None
        assert seen_on_b == [(b"once", 1, True)]
        death = dead.headers["x-death"][0]
        assert (dead.body, death["reason"], death["queue"]) == (b"once", "delivery_limit", "limited")


@pytest.mark.parametrize("consumer_on", ["owner", "non-owner"])
async def test_a_reject_without_requeue_is_dead_lettered_by_the_owner(
    cluster_settings: Callable[[str], PostgresSettings], consumer_on: str
) -> None:
    """The same on the owner and through b: x-death reason rejected, and the owner counts it dead-lettered
    (its dead-letter exchange, its statistics); b's own counters stay at 0."""
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, _node(cluster_settings("b"), "127.0.0.1:0") as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            channel_a = await on_a.channel(publisher_confirms=True)
            dlq = await channel_a.declare_queue("refused-dlq", durable=True)
            await channel_a.declare_queue("refused", durable=True, arguments={
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "refused-dlq"})
            await channel_a.default_exchange.publish(aio_pika.Message(b"bad", delivery_mode=2), routing_key="refused")
            queue = await _queue_on(on_a if consumer_on == "owner" else on_b, "refused")

            async def reject(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                await message.reject(requeue=False)

            await queue.consume(reject)
            dead = await _get(dlq, "the rejected message dead-lettered on a")
        death = dead.headers["x-death"][0]
        assert (dead.body, death["reason"], death["queue"], death["count"]) == (b"bad", "rejected", "refused", 1)
        assert a.core.vhosts["/"].stats.dead_lettered == {("rejected", True): 1}
        assert b.core.vhosts["/"].stats.dead_lettered == {}


@pytest.mark.parametrize("consumer_on", ["owner", "non-owner"])
async def test_a_priority_queue_is_served_in_priority_order_through_another_node(
    cluster_settings: Callable[[str], PostgresSettings], consumer_on: str
) -> None:
    """A consumer (prefetch 1) holds the first of 10 priority-0 messages; 5 of priority 7 (capped at 5)
    arrive meanwhile: they come next, before the other 9, on b as on a. (b's node takes in only what its
    consumer's prefetch holds, so the other messages wait on the owner, in its priority lanes.)"""
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, _node(cluster_settings("b"), "127.0.0.1:0") as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            publisher = await on_a.channel(publisher_confirms=True)
            await publisher.declare_queue("urgent", durable=True, arguments={"x-max-priority": 5})

            async def send(bodies: list[bytes], priority: int) -> None:
                for body in bodies:
                    await publisher.default_exchange.publish(
                        aio_pika.Message(body, delivery_mode=2, priority=priority), routing_key="urgent")

            low, high = [f"low-{i}".encode() for i in range(10)], [f"high-{i}".encode() for i in range(5)]
            await send(low, 0)
            queue = await _queue_on(on_a if consumer_on == "owner" else on_b, "urgent")
            await queue.channel.set_qos(prefetch_count=1)
            got: list[bytes] = []
            release = asyncio.Event()

            async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                got.append(message.body)
                if len(got) == 1:
                    await release.wait()
                await message.ack()

            await queue.consume(take)
            ready = a.core.vhosts["/"].queues["urgent"]
            await async_wait_for(lambda: len(got) == 1 and ready.message_count == 9, timeout=10,
                                 what="the first delivery, the other 9 ready on the owner")
            await send(high, 7)
            await async_wait_for(lambda: ready.message_count == 14, timeout=10,
                                 what="the 5 urgent ones ready on the owner")
            release.set()
            await async_wait_for(lambda: len(got) == 15, timeout=15, what=lambda: f"every message ({len(got)})")
    assert got == [low[0], *high, *low[1:]]


@pytest.mark.parametrize("publisher_on", ["owner", "non-owner"])
async def test_a_full_reject_publish_queue_nacks_only_the_publishes_it_refused(
    cluster_settings: Callable[[str], PostgresSettings], publisher_on: str
) -> None:
    """x-max-length 3, reject-publish: of 8 publishes sent at once (one forwarded frame), the first 3 are
    confirmed and the other 5 nacked, whether published on the owner or forwarded from b."""
    async with _node(cluster_settings("a"), "127.0.0.1:0", http_port=0) as a, \
            _node(cluster_settings("b"), "127.0.0.1:0", http_port=0) as b, aiohttp.ClientSession(headers=GUEST) as http:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            channel_a = await on_a.channel()
            queue_a = await channel_a.declare_queue("capped", durable=True, arguments={
                "x-max-length": 3, "x-overflow": "reject-publish"})
            connection = on_a if publisher_on == "owner" else on_b
            if publisher_on == "non-owner":
                await _knows(b, "a", "capped")
                await _queue_on(on_b, "capped")
            channel = await connection.channel(publisher_confirms=True)
            bodies = [f"c-{i}".encode() for i in range(8)]

            async def publish(body: bytes) -> bool:
                try:
                    await channel.default_exchange.publish(aio_pika.Message(body, delivery_mode=2),
                                                           routing_key="capped")
                    return True
                except aio_pika.exceptions.DeliveryError:
                    return False

            confirmed = await asyncio.gather(*(publish(body) for body in bodies))
            node = a if publisher_on == "owner" else b
            async with http.post(f"{node.http_url}/api/exchanges/%2F/amq.default/publish", json={
                    "routing_key": "capped", "properties": {}, "payload": "via-http",
                    "payload_encoding": "string"}) as response:
                assert (response.status, (await response.json())["reason"]) == (400, "Unable to publish message. "
                                                                                 "Check queue limits.")
            kept = [message.body for message in [await queue_a.get(no_ack=True) for _ in range(3)]]
            assert await queue_a.get(no_ack=True, fail=False) is None
    assert confirmed == [True] * 3 + [False] * 5
    assert kept == bodies[:3]


def test_the_settle_refused_and_deliver_frames_round_trip_and_refuse_garbage() -> None:
    assert decode_tags(encode_tags(4, REJECT, [7, 9])) == (4, REJECT, [7, 9])
    with pytest.raises(link.LinkError, match="unknown mode"):
        decode_tags(encode_tags(4, 9, [7]))
    with pytest.raises(link.LinkError, match="ends early"):
        decode_tags(encode_tags(4, ACK, [7, 9])[:-3])
    assert decode_refused(encode_refused(12, [0, 5])) == (12, [0, 5])
    with pytest.raises(link.LinkError, match="ends early"):
        decode_refused(encode_refused(12, [0, 5])[:-1])
    entry = Entry(1, Message("ex", "rk", b"p", b"body", True, AMQP_CODEC), True, False, 0, 3)
    assert decode_deliver(encode_deliver(2, 40, [entry])) == (2, 40, [(True, True, 3, [b"ex", b"rk", b"p", b"body",
                                                                                       b"amqp091"])])


@pytest.mark.parametrize("client_on", ["owner", "non-owner"])
async def test_get_purge_and_delete_answer_the_same_on_any_node(
    cluster_settings: Callable[[str], PostgresSettings], client_on: str
) -> None:
    """basic.get (ack, nack, no-ack, unacked when the channel closes), queue.purge and queue.delete on b are
    run by the owner a: the same messages, flags and counts as on a itself."""
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, _node(cluster_settings("b"), "127.0.0.1:0") as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            publisher = await on_a.channel(publisher_confirms=True)
            await publisher.declare_queue("orders", durable=True)

            async def publish(*bodies: bytes) -> None:
                for body in bodies:
                    await publisher.default_exchange.publish(aio_pika.Message(body, delivery_mode=2),
                                                             routing_key="orders")

            await publish(b"m0", b"m1", b"m2", b"m3")
            client = on_a if client_on == "owner" else on_b
            if client_on == "non-owner":
                await _knows(b, "a", "orders")
            queue = await _queue_on(client, "orders")
            first = await queue.get(no_ack=False)
            assert (first.body, first.redelivered, first.message_count) == (b"m0", False, 3)
            await first.nack(requeue=True)  # back at its place on the owner
            again = await queue.get(no_ack=False)
            assert (again.body, again.redelivered) == (b"m0", True)
            await again.ack()
            taken = await queue.get(no_ack=True)
            assert (taken.body, taken.message_count) == (b"m1", 2)
            kept = await queue.get(no_ack=False)
            assert kept.body == b"m2"
            await queue.channel.close()  # m2 unacked: given back to the owner
            queue = await _queue_on(client, "orders")
            assert (await queue.purge()).message_count == 2  # m2 (redelivered) and m3
            assert await queue.get(no_ack=True, fail=False) is None
            await publish(b"m4", b"m5", b"m6")
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match="not empty"):
                await queue.delete(if_unused=False, if_empty=True)  # the owner's count says it is not
            queue = await _queue_on(client, "orders")
            assert (await queue.delete(if_unused=False, if_empty=False)).message_count == 3

            async def gone_on_a() -> bool:
                return await _passive(await on_a.channel(), "orders") is None

            await async_wait_for(gone_on_a, timeout=10, what="the owner to delete the queue")


async def test_the_management_api_gets_and_purges_through_the_owner(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, \
            _node(cluster_settings("b"), "127.0.0.1:0", http_port=0) as b, \
            aiohttp.ClientSession(headers=GUEST) as http:
        on_a = await aio_pika.connect(a.amqp_url)
        async with on_a:
            publisher = await on_a.channel(publisher_confirms=True)
            dlq = await publisher.declare_queue("mgmt-dlq", durable=True)
            queue_a = await publisher.declare_queue("mgmt", durable=True, arguments={
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "mgmt-dlq"})
            for body in (b"g0", b"g1", b"g2", b"g3", b"g4"):
                await publisher.default_exchange.publish(aio_pika.Message(body, delivery_mode=2), routing_key="mgmt")
            await _knows(b, "a", "mgmt")
            await _queue_on(await aio_pika.connect(b.amqp_url), "mgmt")
            url = f"{b.http_url}/api/queues/%2F/mgmt"

            async def get(ackmode: str, count: int) -> list[dict[str, Any]]:
                async with http.post(f"{url}/get", json={"count": count, "ackmode": ackmode,
                                                          "encoding": "auto"}) as response:
                    assert response.status == 200, await response.text()
                    return await response.json()

            peeked = await get("ack_requeue_true", 2)
            assert [(d["payload"], d["redelivered"], d["message_count"]) for d in peeked] == [
                ("g0", False, 4), ("g1", False, 3)]
            taken = await get("ack_requeue_false", 1)
            assert [(d["payload"], d["redelivered"]) for d in taken] == [("g0", True)]
            rejected = await get("reject_requeue_false", 1)
            assert [d["payload"] for d in rejected] == ["g1"]
            dead = await _get(dlq, "g1 dead-lettered on a")
            assert (dead.body, dead.headers["x-death"][0]["reason"]) == (b"g1", "rejected")
            async with http.delete(f"{url}/contents") as response:
                assert response.status == 204, await response.text()
            assert await queue_a.get(no_ack=True, fail=False) is None  # g2..g4 purged on a


async def test_a_message_got_through_a_link_that_breaks_is_requeued_by_the_owner(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    """At-least-once: b's client holds a message got from a unacked; the link breaks; a requeues it
    (redelivered). b's later ack goes nowhere, and b asks a again over a new link."""
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, _node(cluster_settings("b"), "127.0.0.1:0") as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            publisher = await on_a.channel(publisher_confirms=True)
            queue_a = await publisher.declare_queue("held", durable=True)
            await publisher.default_exchange.publish(aio_pika.Message(b"h0", delivery_mode=2), routing_key="held")
            await _knows(b, "a", "held")
            queue_b = await _queue_on(on_b, "held")
            held = await queue_b.get(no_ack=False)
            assert held.body == b"h0"
            assert b.cluster is not None
            link_to_a = b.cluster.remote._peers["a"]  # type: ignore[union-attr]
            assert link_to_a._writer is not None
            link_to_a._writer.close()
            back = await _get(queue_a, "h0 requeued on a")
            assert (back.body, back.redelivered) == (b"h0", True)
            await held.ack()  # its delivery is gone with the link: nothing happens, the channel stays open
            assert await queue_b.get(no_ack=True, fail=False) is None  # asked again over a new link
            assert await queue_a.get(no_ack=True, fail=False) is None


async def test_a_no_ack_consumer_served_through_another_node_gets_more_than_the_links_prefetch(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    """Deliveries to a no-ack consumer on b are settled at the owner too, so the owner goes on past the
    1,000 it may have outstanding at b: every message arrives, in order, and a keeps none."""
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, _node(cluster_settings("b"), "127.0.0.1:0") as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            publisher = await on_a.channel(publisher_confirms=True)
            queue_a = await publisher.declare_queue("firehose", durable=True)
            bodies = [f"f-{i}".encode() for i in range(PROXY_PREFETCH + 300)]
            await asyncio.gather(*(publisher.default_exchange.publish(aio_pika.Message(body), routing_key="firehose")
                                   for body in bodies))
            queue_b = await _queue_on(on_b, "firehose")
            got: list[bytes] = []

            async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                got.append(message.body)

            await queue_b.consume(take, no_ack=True)
            await async_wait_for(lambda: len(got) == len(bodies), timeout=20,
                                 what=lambda: f"every message on b's no-ack consumer ({len(got)})")
            await async_wait_for(lambda: a.core.vhosts["/"].queues["firehose"].unacked == 0, timeout=10,
                                 what="a to have nothing outstanding at b")
            assert await queue_a.get(no_ack=True, fail=False) is None
        assert got == bodies


async def test_a_consumer_on_a_non_owner_holds_its_prefetch_not_the_nodes_whole_window(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    """Two workers with prefetch 1, one on each node, on a queue a owns: b's node holds one message for its
    worker (its window is its consumers' prefetch), so a's worker gets the other 19 instead of b's node
    buffering up to PROXY_PREFETCH of them; a second consumer on b widens b's window to 2."""
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, _node(cluster_settings("b"), "127.0.0.1:0") as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            publisher = await on_a.channel(publisher_confirms=True)
            await publisher.declare_queue("work", durable=True)
            queue_b = await _queue_on(on_b, "work")
            await _knows(b, "a", "work")
            await queue_b.channel.set_qos(prefetch_count=1)
            held_on_b: list[bytes] = []

            async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:  # never acks
                held_on_b.append(message.body)

            await queue_b.consume(hold)
            for i in range(20):
                await publisher.default_exchange.publish(aio_pika.Message(f"w-{i}".encode(), delivery_mode=2),
                                                         routing_key="work")
            await async_wait_for(lambda: held_on_b, timeout=10, what="b's worker to get a message")
            channel_a = await on_a.channel()
            await channel_a.set_qos(prefetch_count=1)
            queue_a = await channel_a.get_queue("work")
            done_on_a: list[bytes] = []

            async def work(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                done_on_a.append(message.body)
                await message.ack()

            await queue_a.consume(work)
            await async_wait_for(lambda: len(done_on_a) == 19, timeout=10,
                                 what=lambda: f"a's worker to do the other 19 ({len(done_on_a)})")
            assert len(held_on_b) == 1

            second = await on_b.channel()
            await second.set_qos(prefetch_count=1)
            await (await second.get_queue("work")).consume(hold)
            sub = next(iter(b.cluster.remote._subs.values()))
            await async_wait_for(lambda: sub.window == 2, timeout=5, what="b's window to count both consumers")
