"""Browsing and redriving a queue through a node that does not own it (mailslot.cluster.proxy): the
owner answers, over the cluster link, and `mailslot dlq` sees the owner's view; a 503 saying why when
the owner cannot be reached. Two nodes in this process on one schema, each with its management API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import aiohttp
from typer.testing import CliRunner

from helpers import async_wait_for
from mailslot.bootstrap import BrokerServer
from mailslot.cli.main import app
from mailslot.storage.postgres import PostgresSettings
from mailslot.testing import running_broker

SECRET = "a-secret-of-the-cluster-0123456789"
GUEST = {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}  # guest:guest
DLQ = "/api/mailslot/dlq/%2F/jobs.dlq"


@asynccontextmanager
async def _node(settings: PostgresSettings) -> AsyncIterator[BrokerServer]:
    async with running_broker(store="postgres", postgres_dsn=settings.dsn, postgres_schema=settings.schema,
                              node_name=settings.node_name, cluster=True, lease_ttl=3.0, http_port=0,
                              cluster_link="127.0.0.1:0", cluster_secret=SECRET) as broker:
        yield broker


async def _dead_letters(url: str, count: int) -> None:
    """``count`` messages rejected from jobs into jobs.dlq, both owned by the node at ``url``."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue("jobs.dlq", durable=True)
        jobs = await channel.declare_queue("jobs", durable=True, arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "jobs.dlq"})
        for i in range(count):
            await channel.default_exchange.publish(aio_pika.Message(f"job {i}".encode(), delivery_mode=2), "jobs")
        for _ in range(count):
            message = await async_wait_for(lambda: jobs.get(fail=False), timeout=5, what="a job")
            await message.reject(requeue=False)
        await async_wait_for(lambda: _count(channel, dlq.name, count), timeout=5, what="the dead letters")


async def _count(channel: aio_pika.abc.AbstractChannel, queue: str, count: int) -> bool:
    declared = await channel.declare_queue(queue, durable=True, passive=True)
    return declared.declaration_result.message_count == count


async def _json(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as response:
        return response.status, await response.json(content_type=None)


async def test_browse_show_and_redrive_on_a_non_owner_answer_the_owners_view(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    async with _node(cluster_settings("a")) as a, _node(cluster_settings("b")) as b, \
            aiohttp.ClientSession(headers=GUEST) as http:
        await _dead_letters(a.amqp_url, 3)

        async def b_knows_the_owner() -> bool:  # b has polled the leases and a's link
            status, doc = await _json(http, "GET", f"{b.http_url}/api/queues/%2F/jobs.dlq")
            return status == 200 and doc.get("node") == "a" and b.cluster is not None and "a" in b.cluster.links

        await async_wait_for(b_knows_the_owner, timeout=10, interval=0.05, what="b to know a owns jobs.dlq")

        status, page = await _json(http, "GET", f"{b.http_url}/api/mailslot/queues/%2F/jobs.dlq/messages")
        assert status == 200, page
        assert [item["payload"] for item in page["items"]] == ["job 0", "job 1", "job 2"]
        assert all(item["first_death"]["reason"] == "rejected" for item in page["items"])
        status, peeked = await _json(http, "GET", f"{b.http_url}/api/mailslot/queues/%2F/jobs.dlq/peek?count=1")
        assert status == 200 and [item["payload"] for item in peeked] == ["job 0"]
        status, summary = await _json(http, "GET", f"{b.http_url}{DLQ}")
        assert status == 200 and summary["by_reason"] == {"rejected": 3}, summary

        status, dry = await _json(http, "POST", f"{b.http_url}{DLQ}/redrive", {"dry_run": True})
        assert status == 200 and dry["would_move"] == 3, dry
        async with http.post(f"{b.http_url}{DLQ}/redrive", json={"ids": [page["items"][0]["id"]]}) as response:
            assert response.status == 202, await response.text()
            location = response.headers["Location"]

        async def finished() -> dict[str, Any] | None:
            status, progress = await _json(http, "GET", f"{b.http_url}{location}")  # asked of b, answered by a
            assert status == 200, progress
            return progress if progress["state"] != "running" else None

        progress = await async_wait_for(finished, timeout=10, interval=0.05, what="the redrive to end")
        assert progress["moved"] == 1, progress

        # A slow redrive started through b and cancelled through b: it ran, and stops, at the owner.
        async with http.post(f"{b.http_url}{DLQ}/redrive", json={"rate": 0.5}) as response:
            assert response.status == 202, await response.text()
            slow = response.headers["Location"]
        async with http.delete(f"{b.http_url}{slow}") as response:
            assert response.status == 204, await response.text()
        status, progress = await _json(http, "GET", f"{a.http_url}{slow}")  # the owner's own record
        assert status == 200 and progress["state"] == "cancelled" and progress["moved"] <= 1, progress

        # mailslot dlq against b (in a thread: both nodes run on this event loop)
        shown = await asyncio.to_thread(CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke, app,
                                        ["dlq", "show", "jobs.dlq", "--url", b.http_url, "--json"])
        assert shown.exit_code == 0, shown.output
        document = json.loads(shown.output)
        left = [m["payload"] for m in document["messages"]["items"]]
        assert left in (["job 1", "job 2"], ["job 2"]), left  # the cancel came before or after its first step
        assert document["summary"]["by_reason"] == {"rejected": len(left)}
        moved_before = 2 - len(left)
        connection = await aio_pika.connect(a.amqp_url)
        async with connection:
            channel = await connection.channel()
            assert await _count(channel, "jobs", 1 + moved_before)  # moved back, at the owner

        # The owner's link gone: b says so, rather than answering its own (empty) view.
        assert a.cluster is not None
        for close in a.cluster.closers:
            close()
        status, error = await _json(http, "GET", f"{b.http_url}/api/mailslot/queues/%2F/jobs.dlq/messages")
        assert status == 503, error
        assert error["error"] == "service_unavailable"
        assert "queue 'jobs.dlq' in vhost '/' is owned by node 'a', which could not answer: cannot reach node 'a'" \
            in error["reason"], error
