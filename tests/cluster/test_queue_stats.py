"""Every node shows the owner's figures of a queue: the owner shares them through PostgreSQL's
queue_stats at each lease poll (mailslot.cluster.stats), so /api/queues, /api/queues/{vhost}/{name} and
/api/mailslot/dlq on a node that does not own the queue show its real depths and consumers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aio_pika
import aiohttp
import psycopg

from helpers import async_wait_for
from mailslot.core.storekeys import queue_key
from mailslot.storage.postgres import PostgresSettings
from mailslot.testing import running_broker

GUEST = {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}  # guest:guest


def _config(settings: PostgresSettings) -> dict[str, Any]:
    return {"store": "postgres", "postgres_dsn": settings.dsn, "postgres_schema": settings.schema,
            "node_name": settings.node_name, "cluster": True, "lease_ttl": 1.5, "http_port": 0,
            "prometheus_port": 0}


def _stats_rows(settings: PostgresSettings) -> dict[str, str]:
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        rows = conn.execute(f'SELECT queue, node FROM "{settings.schema}".queue_stats').fetchall()
    return {bytes(queue).decode(): node for queue, node in rows}


async def test_a_node_shows_the_owners_figures_of_a_queue(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    async with (
        running_broker(**_config(cluster_settings("a"))) as a,
        running_broker(**_config(cluster_settings("b"))) as b,
        aiohttp.ClientSession(headers=GUEST) as http,
    ):
        async def get(url: str) -> Any:
            async with http.get(url) as response:
                assert response.status == 200, await response.text()
                return await response.json()

        async def on_b(want: dict[str, int]) -> bool:
            listed = {q["name"]: q for q in await get(f"{b.http_url}/api/queues/%2F")}
            if "jobs.dlq" not in listed:
                return False  # b has not loaded it yet
            doc = await get(f"{b.http_url}/api/queues/%2F/jobs.dlq")
            return doc["node"] == "a" and all(doc[k] == v and listed["jobs.dlq"][k] == v for k, v in want.items())

        connection = await aio_pika.connect(a.amqp_url)
        async with connection:
            channel = await connection.channel()  # publisher confirms: every message is committed on a
            dlx = await channel.declare_exchange("dlx", aio_pika.ExchangeType.FANOUT, durable=True)
            await channel.declare_queue("jobs", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
            dlq = await channel.declare_queue("jobs.dlq", durable=True)  # a owns both
            await dlq.bind(dlx)
            for i in range(30):
                await channel.default_exchange.publish(aio_pika.Message(str(i).encode()), routing_key="jobs.dlq")
            want = {"messages": 30, "messages_ready": 30, "messages_unacknowledged": 0, "consumers": 0}
            await async_wait_for(lambda: on_b(want), timeout=10, what="b to show a's 30 messages")

            for _ in range(10):  # taken and acknowledged on a
                message = await dlq.get(timeout=5)
                assert message is not None
                await message.ack()
            await channel.set_qos(prefetch_count=5)
            await dlq.consume(_hold)  # holds 5 unacknowledged on a
            want = {"messages": 20, "messages_ready": 15, "messages_unacknowledged": 5, "consumers": 1}
            await async_wait_for(lambda: on_b(want), timeout=10, what="b to follow a's gets, acks and consumer")

            dead_letter_queues = {q["name"]: q for q in await get(f"{b.http_url}/api/mailslot/dlq")}
            assert dead_letter_queues["jobs.dlq"]["messages"] == 15
            assert dead_letter_queues["jobs.dlq"]["consumers"] == 1
            assert dead_letter_queues["jobs.dlq"]["sources"] == ["jobs"]

            b_connection = await aio_pika.connect(b.amqp_url)  # a consumer on b too: the owner's + b's own
            async with b_connection:
                b_channel = await b_connection.channel()
                await (await b_channel.get_queue("jobs.dlq")).consume(_hold)
                doc = await get(f"{b.http_url}/api/queues/%2F/jobs.dlq")
                assert doc["consumers"] == 2 and doc["messages"] == 20

            rows = _stats_rows(cluster_settings("a"))
            assert rows == {queue_key("/", "jobs"): "a", queue_key("/", "jobs.dlq"): "a"}

            await channel.queue_delete("jobs.dlq")  # its row goes with it
            await async_wait_for(lambda: queue_key("/", "jobs.dlq") not in _stats_rows(cluster_settings("a")),
                                 timeout=10, what="the deleted queue's row to be dropped")
            assert queue_key("/", "jobs") in _stats_rows(cluster_settings("a"))


async def _hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A consumer that never acknowledges: what it was sent stays unacknowledged."""
