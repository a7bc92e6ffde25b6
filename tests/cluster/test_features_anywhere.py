"""Queue features behave on a shared queue as on one node, whichever node the client is on (issue 14): message
TTL with dead-lettering, retries with backoff (x-retry-delays), single active consumer, and a policy set
through another node's management API. Two nodes in this process on one PostgreSQL schema; every queue is
owned by a; each scenario runs with the client on a (the owner) and on b (the non-owner), same expectations."""

from __future__ import annotations

import time
from collections.abc import Callable

import aio_pika
import aiohttp
import pytest

from helpers import async_wait_for
from mailslot.storage.postgres import PostgresSettings

from .test_forward import _node
from .test_forward_semantics import GUEST, _get, _knows, _queue_on

CLIENT_ON = pytest.mark.parametrize("client_on", ["owner", "non-owner"])


@CLIENT_ON
async def test_an_expired_message_is_dead_lettered_by_the_owner(
    cluster_settings: Callable[[str], PostgresSettings], client_on: str
) -> None:
    """x-message-ttl 300 with a dead-letter queue, both owned by a; published (and the dead letter consumed)
    through the client's node, nobody consuming: after the TTL it is in the dead-letter queue, x-death
    reason expired, and no longer in the queue."""
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, _node(cluster_settings("b"), "127.0.0.1:0") as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            channel_a = await on_a.channel()
            await channel_a.declare_queue("short-dlq", durable=True)
            await channel_a.declare_queue("short", durable=True, arguments={
                "x-message-ttl": 300, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "short-dlq"})
            client = on_a if client_on == "owner" else on_b
            if client_on == "non-owner":
                await _knows(b, "a", "short", "short-dlq")
            queue = await _queue_on(client, "short")
            dlq = await _queue_on(client, "short-dlq")
            publisher = await client.channel(publisher_confirms=True)
            published = time.monotonic()
            await publisher.default_exchange.publish(aio_pika.Message(b"stale", delivery_mode=2),
                                                     routing_key="short", mandatory=True)
            dead = await _get(dlq, "the expired message in the dead-letter queue")
            waited = time.monotonic() - published
            assert await queue.get(no_ack=True, fail=False) is None
        assert waited >= 0.3, f"dead-lettered {waited:.3f} s after the publish, before its TTL"
        death = dead.headers["x-death"][0]
        assert (dead.body, death["reason"], death["queue"], death["count"]) == (b"stale", "expired", "short", 1)


@CLIENT_ON
async def test_a_nack_is_held_for_the_retry_delay_then_redelivered(
    cluster_settings: Callable[[str], PostgresSettings], client_on: str
) -> None:
    """x-retry-delays [600]: the consumer nacks (requeue) its first delivery; the message comes back
    redelivered, not before 600 ms (the owner holds it), and well within the delay plus slack."""
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, _node(cluster_settings("b"), "127.0.0.1:0") as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            publisher = await on_a.channel(publisher_confirms=True)
            await publisher.declare_queue("retried", durable=True, arguments={"x-retry-delays": [600]})
            await publisher.default_exchange.publish(aio_pika.Message(b"flaky", delivery_mode=2),
                                                     routing_key="retried")
            client = on_a if client_on == "owner" else on_b
            if client_on == "non-owner":
                await _knows(b, "a", "retried")
            queue = await _queue_on(client, "retried")
            seen: list[tuple[bytes, bool, float]] = []

            async def fail_once(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                seen.append((message.body, message.redelivered, time.monotonic()))
                if len(seen) == 1:
                    await message.nack(requeue=True)
                else:
                    await message.ack()

            await queue.consume(fail_once)
            await async_wait_for(lambda: len(seen) >= 2, timeout=10, what="the retried delivery")
            assert await queue.get(no_ack=True, fail=False) is None
        (first, first_redelivered, t0), (again, redelivered, t1) = seen[:2]
        assert (first, first_redelivered, again, redelivered) == (b"flaky", False, b"flaky", True)
        assert 0.6 <= t1 - t0 < 3.0, f"redelivered {t1 - t0:.3f} s after the nack, the delay is 0.6 s"
        assert len(seen) == 2


@pytest.mark.parametrize("client_on", ["owner", "non-owner", "split"])
async def test_a_single_active_consumer_queue_feeds_one_consumer_then_the_next(
    cluster_settings: Callable[[str], PostgresSettings], client_on: str
) -> None:
    """x-single-active-consumer, owned by a: two consumers on the client's node, or (split) the first on b
    and the second on a. The first registered is the active one, as in RabbitMQ: only it gets the first 5;
    once it is cancelled the other gets the rest; no message goes to both and none is lost."""
    async with _node(cluster_settings("a"), "127.0.0.1:0") as a, _node(cluster_settings("b"), "127.0.0.1:0") as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            publisher = await on_a.channel(publisher_confirms=True)
            await publisher.declare_queue("single", durable=True, arguments={"x-single-active-consumer": True})

            async def publish(bodies: list[bytes]) -> None:
                for body in bodies:
                    await publisher.default_exchange.publish(aio_pika.Message(body, delivery_mode=2),
                                                             routing_key="single")

            client = on_a if client_on == "owner" else on_b
            if client_on == "non-owner":
                await _knows(b, "a", "single")
            got: dict[str, list[bytes]] = {"first": [], "second": []}
            held: list[aio_pika.abc.AbstractIncomingMessage] = []  # the first consumer's, acked by the test
            queues, tags = {}, {}
            clients = {"first": client, "second": on_a if client_on == "split" else client}
            if client_on == "split":
                clients["first"] = on_b
                await _knows(b, "a", "single")
            for name in ("first", "second"):
                queues[name] = await _queue_on(clients[name], "single")
                await queues[name].channel.set_qos(prefetch_count=2)

                async def take(message: aio_pika.abc.AbstractIncomingMessage, name: str = name) -> None:
                    got[name].append(message.body)
                    if name == "first":
                        held.append(message)
                    else:
                        await message.ack()

                tags[name] = await queues[name].consume(take)
                # b's node subscribes at the owner without waiting: let the first be registered there first
                await async_wait_for(lambda: a.core.vhosts["/"].queues["single"].consumers, timeout=10,
                                     what="the first consumer registered at the owner")
            early = [f"s-{i}".encode() for i in range(5)]
            await publish(early)
            acked = 0
            while acked < 5:  # the active consumer's prefetch full: the others still get nothing
                await async_wait_for(lambda acked=acked: len(held) > acked, timeout=10,
                                     what=lambda: f"the active consumer to get more ({got})")
                assert got["second"] == []
                for message in held[acked:]:
                    await message.ack()
                acked = len(held)
            await queues["first"].cancel(tags["first"])
            late = [f"s-{i}".encode() for i in range(5, 10)]
            await publish(late)
            await async_wait_for(lambda: len(got["second"]) == 5, timeout=10,
                                 what=lambda: f"the next consumer to get the rest ({got})")
        assert got == {"first": early, "second": late}


@CLIENT_ON
async def test_a_policy_put_through_any_node_caps_the_owners_queue(
    cluster_settings: Callable[[str], PostgresSettings], client_on: str
) -> None:
    """PUT /api/policies/%2F/cap (max-length 2, drop-head, apply-to queues) on the client's node; once the
    owner a applies it (within about a second), 5 messages published through that node leave the last 2."""
    async with _node(cluster_settings("a"), "127.0.0.1:0", http_port=0) as a, \
            _node(cluster_settings("b"), "127.0.0.1:0", http_port=0) as b, aiohttp.ClientSession(headers=GUEST) as http:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            await (await on_a.channel()).declare_queue("capped-by-policy", durable=True)
            node, client = (a, on_a) if client_on == "owner" else (b, on_b)
            if client_on == "non-owner":
                await _knows(b, "a", "capped-by-policy")
            queue = await _queue_on(client, "capped-by-policy")
            async with http.put(f"{node.http_url}/api/policies/%2F/cap", json={
                    "pattern": "^capped-by-policy$", "apply-to": "queues",
                    "definition": {"max-length": 2, "overflow": "drop-head"}}) as response:
                assert response.status in (201, 204), await response.text()
            owned = a.core.vhosts["/"].queues["capped-by-policy"]
            await async_wait_for(lambda: owned.policy.max_length == 2, timeout=3,
                                 what="the owner to apply the policy")
            publisher = await client.channel(publisher_confirms=True)
            bodies = [f"p-{i}".encode() for i in range(5)]
            for body in bodies:
                await publisher.default_exchange.publish(aio_pika.Message(body, delivery_mode=2),
                                                         routing_key="capped-by-policy", mandatory=True)
            kept = [message.body for message in [await queue.get(no_ack=True) for _ in range(2)]]
            assert await queue.get(no_ack=True, fail=False) is None
        assert kept == bodies[3:]
