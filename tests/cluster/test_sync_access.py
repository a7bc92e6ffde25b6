"""Access changes made on one node take effect on the other node's open connections
(mailslot.cluster.sync): a user deleted or given a new password there has its connections here
closed with RabbitMQ's reason (320 CONNECTION_FORCED), as on the node that changed it; permissions
removed there are refused here at the next check of an open channel. Two nodes in this process on
one schema."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import aiormq
import pytest

from helpers import async_wait_for
from mailslot.bootstrap import BrokerServer
from mailslot.storage.postgres import PostgresSettings

from .test_sync import GUEST, _node


async def _put(http: aiohttp.ClientSession, url: str, body: dict[str, str]) -> None:
    async with http.put(url, json=body) as response:
        assert response.status in (201, 204), await response.text()


async def _alice_on(http: aiohttp.ClientSession, a: BrokerServer, b: BrokerServer) -> aiormq.abc.AbstractConnection:
    """alice, made on a with full permissions on '/', connected to b (once b has heard of her)."""
    await _put(http, f"{a.http_url}/api/users/alice", {"password": "s3cret", "tags": ""})
    await _put(http, f"{a.http_url}/api/permissions/%2F/alice", {"configure": ".*", "write": ".*", "read": ".*"})
    url = b.amqp_url.replace("guest:guest", "alice:s3cret")

    async def connected() -> aiormq.abc.AbstractConnection | None:
        try:
            return await aiormq.connect(url)
        except (aiormq.exceptions.AMQPConnectionError, ConnectionError):
            return None

    connection: aiormq.abc.AbstractConnection = await async_wait_for(connected, timeout=10, interval=0.05,
                                                                    what="b to let alice in")
    return connection


async def _closed_within(connection: aiormq.abc.AbstractConnection, seconds: float) -> tuple[BaseException, float]:
    started = time.monotonic()
    with pytest.raises(aiormq.exceptions.ConnectionClosed) as closed:
        await asyncio.wait_for(asyncio.shield(connection.closing), seconds)
    return closed.value, time.monotonic() - started


@pytest.mark.parametrize("change, reason", [
    ("delete", "CONNECTION_FORCED - user 'alice' is deleted"),
    ("password", "CONNECTION_FORCED - user 'alice' password changed"),
])
async def test_a_user_deleted_or_given_a_new_password_on_one_node_is_disconnected_on_the_other(
    cluster_settings: Callable[[str], PostgresSettings], change: str, reason: str,
) -> None:
    async with _node(cluster_settings("a")) as a, _node(cluster_settings("b")) as b, \
            aiohttp.ClientSession(headers=GUEST) as http:
        alice = await _alice_on(http, a, b)
        bob = await aiormq.connect(b.amqp_url)  # another user's connection stays
        try:
            if change == "delete":
                async with http.delete(f"{a.http_url}/api/users/alice") as response:
                    assert response.status == 204, await response.text()
            else:
                await _put(http, f"{a.http_url}/api/users/alice", {"password": "changed", "tags": ""})
            error, after = await _closed_within(alice, 3.0)
            assert error.args[:2] == (320, reason), error.args
            print(f"\nalice's connection on b closed {after:.2f} s after the change on a")
            assert after < 1.5  # the metadata poll (every 0.5 s) and the close
            assert not bob.is_closed
            await (await bob.channel()).queue_declare("still-open", auto_delete=True)
        finally:
            await bob.close()
            if not alice.is_closed:
                await alice.close()


async def test_permissions_cleared_on_one_node_are_refused_on_an_open_channel_of_the_other(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    """As on one node (AccessAdmin.clear_permissions drops every connection's cached answers): the
    channel's next declare is refused with 403 ACCESS_REFUSED, the connection itself stays."""
    async with _node(cluster_settings("a")) as a, _node(cluster_settings("b")) as b, \
            aiohttp.ClientSession(headers=GUEST) as http:
        alice = await _alice_on(http, a, b)
        try:
            channel = await alice.channel()
            await channel.queue_declare("mine-1", auto_delete=True)  # allowed, and cached
            async with http.delete(f"{a.http_url}/api/permissions/%2F/alice") as response:
                assert response.status == 204, await response.text()

            async def refused() -> bool:
                fresh = await alice.channel()
                try:
                    await fresh.queue_declare("mine-1", auto_delete=True)
                except aiormq.exceptions.ChannelAccessRefused:
                    return True
                await fresh.close()
                return False

            await async_wait_for(refused, timeout=5, interval=0.05, what="b to refuse alice's declare")
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused, match="ACCESS_REFUSED"):
                await channel.queue_declare("mine-1", auto_delete=True)  # the channel opened before, too
            assert not alice.is_closed
        finally:
            await alice.close()
