"""A transaction across queues of different owners (docs/transactions.md, "In a cluster"): tx.commit-ok
only once every owner committed its part; when an owner cannot, the channel is closed with 541 and the
parts other owners committed stay (durable, not atomic). Real ``mailslot serve --cluster`` processes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from helpers import async_wait_for
from mailslot import client
from mailslot.bench.broker_process import BrokerProcess

pytestmark = pytest.mark.slow

SECRET = ("--cluster-secret", "tx-owners-test-secret-0123456789")
GUEST = {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}  # guest:guest


async def _count(url: str, queue: str) -> int:
    async with await client.connect(url) as conn:
        ch = await conn.channel()
        return (await ch.declare_queue(queue, passive=True))[1]


async def test_a_transaction_across_owners_is_durable_when_committed_and_not_atomic_when_an_owner_fails(
    node_process: Callable[..., BrokerProcess], tmp_path: Any,
) -> None:
    a = node_process("a", "--cluster-link", f"unix:{tmp_path}/a.sock", *SECRET, lease_ttl=3.0)
    b = node_process("b", "--cluster-link", f"unix:{tmp_path}/b.sock", *SECRET, lease_ttl=3.0)
    for node, queue in ((a, "qa"), (b, "qb")):  # each declared on, so owned by, its own node
        async with await client.connect(node.url) as conn:
            await (await conn.channel()).declare_queue(queue)
    conn = await client.connect(a.url)
    try:
        ch = await conn.channel()
        async with aiohttp.ClientSession(headers=GUEST) as http:
            async def owner_of_qb_on_a() -> str | None:
                async with http.get(f"{a.http_url}/api/queues/%2F/qb") as response:
                    return (await response.json()).get("node") if response.status == 200 else None

            # a has synced qb and reads b as its owner: a publish there is forwarded to b
            await async_wait_for(lambda: _is(owner_of_qb_on_a(), "b"), timeout=10, what="a to name b as qb's owner")
        await ch.tx_select()
        await ch.publish("", "qa", b"both-1")
        await ch.publish("", "qb", b"both-1")
        await ch.tx_commit()  # commit-ok: a's part and b's part are both committed
        assert await _count(a.url, "qa") == 1
        assert await _count(b.url, "qb") == 1  # the owner's own count

        b.kill()  # qb's owner dies; its lease still names b for up to the TTL
        await ch.publish("", "qa", b"both-2")
        await ch.publish("", "qb", b"both-2")
        with pytest.raises(client.ChannelClosed) as closed:
            await ch.tx_commit()
        assert closed.value.code == 541  # no commit-ok: b did not commit its part
        assert await _count(a.url, "qa") == 2  # ... but a's part stays: not atomic across owners
    finally:
        await conn.close()


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected
