"""The cluster in the management API: /api/nodes lists every node of the schema with its state and
leases, and a queue's ``node`` is the node that owns it, on whichever node it is asked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aio_pika
import aiohttp

from helpers import async_wait_for
from mailslot.storage.postgres import PostgresSettings
from mailslot.testing import running_broker

GUEST = {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}  # guest:guest


def _config(settings: PostgresSettings) -> dict[str, Any]:
    return {"store": "postgres", "postgres_dsn": settings.dsn, "postgres_schema": settings.schema,
            "node_name": settings.node_name, "cluster": True, "lease_ttl": 1.5, "http_port": 0,
            "prometheus_port": 0}


async def test_nodes_lists_every_node_and_a_queue_names_its_owner(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    async with running_broker(**_config(cluster_settings("a"))) as a, aiohttp.ClientSession(headers=GUEST) as http:
        async def nodes() -> dict[str, dict[str, Any]]:
            async with http.get(f"{a.http_url}/api/nodes") as response:
                assert response.status == 200
                return {doc["name"]: doc for doc in await response.json()}

        async with running_broker(**_config(cluster_settings("b"))) as b:
            connection = await aio_pika.connect(a.amqp_url)
            async with connection:
                await (await connection.channel()).declare_queue("orders", durable=True)  # a owns it

            async def both_running() -> bool:
                found = await nodes()
                return set(found) == {"a", "b"} and found["b"]["running"] and found["b"]["cluster"]["leases"] == 0

            await async_wait_for(both_running, timeout=10, what="a's /api/nodes to list a and b, running")
            found = await nodes()
            assert found["a"]["running"] is True and found["a"]["cluster"]["leases"] == 1
            assert found["a"]["uptime"] >= 0  # this node's own document is the full one

            async def owner_on_b() -> str | None:
                async with http.get(f"{b.http_url}/api/queues/%2F/orders") as response:
                    return (await response.json())["node"] if response.status == 200 else None

            await async_wait_for(lambda: _is(owner_on_b(), "a"), timeout=10, what="b to name a as the owner")
            async with http.get(f"{a.http_url}/api/nodes/b") as response:
                assert response.status == 200 and (await response.json())["name"] == "b"
            async with http.get(f"{a.http_url}/api/nodes/nobody") as response:
                assert response.status == 404
            async with http.get(f"{a.prometheus_url}/metrics") as response:
                metrics = await response.text()
            for line in ("mailslot_cluster_leases 1.0", 'mailslot_cluster_nodes{state="running"} 2.0',
                         "mailslot_cluster_takeovers_total 0.0"):
                assert line in metrics.splitlines(), line

        async def b_stopped() -> bool:  # b stopped renewing: not running once its last heartbeat is a TTL old
            return (await nodes())["b"]["running"] is False

        await async_wait_for(b_stopped, timeout=10, what="a to show b not running")


async def _is(value: Any, want: Any) -> bool:
    return await value == want
