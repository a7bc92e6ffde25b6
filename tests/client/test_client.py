"""mailslot.client against mailslot and RabbitMQ (every test runs on both)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from helpers import async_wait_for
from mailslot import client
from mailslot.client import ChannelClosed, ConnectionLost, PublishNacked

from .conftest import Proxy

QueueName = Callable[[], str]


async def drain(ch: client.Channel, queue: str, n: int, timeout: float = 10.0) -> list[client.Message]:
    out: list[client.Message] = []
    async with ch.consume(queue, prefetch=1000) as messages:
        async def take() -> None:
            async for m in messages:
                out.append(m)
                if len(out) % 100 == 0 or len(out) == n:
                    await ch.ack(m, multiple=True)  # batched acks: one frame per 100 messages
                if len(out) == n:
                    return
        await asyncio.wait_for(take(), timeout)
    return out


async def test_declare_publish_confirm_consume_ack(conn: client.Connection, queue_name: QueueName) -> None:
    ch = await conn.channel()
    q = queue_name()
    assert await ch.declare_queue(q, durable=True) == (q, 0, 0)
    await ch.confirm_select()
    await ch.publish("", q, b"hello", headers={"k": "v"}, message_id="id-1", content_type="text/plain")
    assert (await ch.declare_queue(q, passive=True))[1] == 1
    async with ch.consume(q, prefetch=10) as messages:
        m = await asyncio.wait_for(messages.__anext__(), 5)
        assert m.body == b"hello" and not m.redelivered and m.routing_key == q
        assert m.headers == {"k": "v"} and m.message_id == "id-1" and m.persistent
        assert m.properties.content_type == "text/plain"
        assert await m.ack()
    await ch.close()
    ch2 = await conn.channel()
    assert (await ch2.declare_queue(q, passive=True))[1:] == (0, 0)  # acked, consumer gone


async def test_exchange_bind_and_concurrent_publishes(conn: client.Connection, queue_name: QueueName,
                                                      uname: Callable[[str], str]) -> None:
    ch = await conn.channel()
    q, ex = queue_name(), uname("x")
    await ch.declare_exchange(ex, "topic", durable=False, auto_delete=True)
    await ch.declare_queue(q)
    await ch.bind_queue(q, ex, "a.*")
    await ch.confirm_select()
    await asyncio.gather(*(ch.publish(ex, f"a.{i}", str(i).encode()) for i in range(200)))
    await ch.publish(ex, "b.x", b"unrouted")  # confirmed although no queue takes it
    got = await drain(ch, q, 200)
    assert sorted(int(m.body) for m in got) == list(range(200))


async def test_publish_many_order_and_count(conn: client.Connection, queue_name: QueueName) -> None:
    ch = await conn.channel()
    q = queue_name()
    await ch.declare_queue(q)
    n = 5000
    msgs = [("", q, i.to_bytes(4, "big") + b"x" * 252) for i in range(n)]
    assert await ch.publish_many(msgs, window=300) == n  # turns confirm mode on by itself
    assert (await ch.declare_queue(q, passive=True))[1] == n
    got = await drain(ch, q, n)
    assert [int.from_bytes(m.body[:4], "big") for m in got] == list(range(n))
    assert all(len(m.body) == 256 for m in got)


async def test_large_body_spans_frames(conn: client.Connection, queue_name: QueueName) -> None:
    ch = await conn.channel()
    q = queue_name()
    await ch.declare_queue(q)
    body = bytes(range(256)) * 2000  # 512 kB: several frames at frame_max 131072
    await ch.publish_many([("", q, body), ("", q, b"")])
    m1, m2 = await drain(ch, q, 2)
    assert m1.body == body and m2.body == b""


async def test_nack_raises_publish_nacked(conn: client.Connection, queue_name: QueueName) -> None:
    ch = await conn.channel()
    q = queue_name()
    await ch.declare_queue(q, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    await ch.confirm_select()
    await ch.publish("", q, b"first")
    with pytest.raises(PublishNacked) as info:
        await ch.publish("", q, b"second")
    assert info.value.indexes == [0]
    with pytest.raises(PublishNacked) as info:
        await ch.publish_many([("", q, b"%d" % i) for i in range(5)])
    assert info.value.indexes == [0, 1, 2, 3, 4]
    m = await ch.get(q)
    assert m is not None and m.body == b"first"
    await m.ack()
    with pytest.raises(PublishNacked) as info:
        await ch.publish_many([("", q, b"%d" % i) for i in range(3)], window=1)
    assert info.value.indexes == [1, 2]  # the first fits again
    await ch.publish("", q + "-nonexistent", b"x")  # unroutable is still confirmed, not nacked


async def test_channel_error_raises_channel_closed_and_reopens(conn: client.Connection,
                                                               queue_name: QueueName) -> None:
    ch = await conn.channel()
    missing = queue_name()
    with pytest.raises(ChannelClosed) as info:
        await ch.declare_queue(missing, passive=True)
    assert info.value.code == 404
    assert "NOT_FOUND" in info.value.text
    with pytest.raises(ChannelClosed):
        await ch.get(missing)  # still closed
    await ch.reopen()
    q = queue_name()
    await ch.declare_queue(q)
    with pytest.raises(ChannelClosed) as info:
        await ch.get(missing)
    assert info.value.code == 404
    other = await conn.channel()  # the connection survived
    assert (await other.declare_queue(q, passive=True))[0] == q


async def test_get(conn: client.Connection, queue_name: QueueName) -> None:
    ch = await conn.channel()
    q = queue_name()
    await ch.declare_queue(q)
    assert await ch.get(q) is None
    await ch.publish_many([("", q, b"a"), ("", q, b"b")])
    m = await ch.get(q)
    assert m is not None and m.body == b"a" and m.message_count == 1
    await m.reject(requeue=True)
    m = await ch.get(q)
    assert m is not None and m.body == b"a" and m.redelivered
    await m.ack()
    m = await ch.get(q, no_ack=True)
    assert m is not None and m.body == b"b"
    assert await ch.get(q) is None


async def test_tx_commit_and_rollback(conn: client.Connection, queue_name: QueueName) -> None:
    ch = await conn.channel()
    q = queue_name()
    await ch.declare_queue(q)
    await ch.tx_select()
    with pytest.raises(client.ClientError):
        await ch.confirm_select()
    await ch.publish("", q, b"rolled back")
    await ch.tx_rollback()
    assert (await ch.declare_queue(q, passive=True))[1] == 0
    await ch.publish("", q, b"one")
    await ch.publish_many([("", q, b"two"), ("", q, b"three")])
    assert (await ch.declare_queue(q, passive=True))[1] == 0
    await ch.tx_commit()
    assert (await ch.declare_queue(q, passive=True))[1] == 3
    # acks are transactional too
    m = await ch.get(q)
    assert m is not None and m.body == b"one"
    await m.ack()
    await ch.tx_rollback()
    await ch.tx_commit()
    assert (await ch.declare_queue(q, passive=True))[1] == 2  # one is unacked (rolled-back ack), two ready


async def test_consumer_exit_requeues_unhanded_messages(conn: client.Connection, queue_name: QueueName) -> None:
    ch = await conn.channel()
    q = queue_name()
    await ch.declare_queue(q)
    await ch.publish_many([("", q, b"%d" % i) for i in range(50)])
    async with ch.consume(q, prefetch=50) as messages:
        first = await asyncio.wait_for(messages.__anext__(), 5)
        await first.ack()
        await async_wait_for(lambda: len(messages._buffer) == 49, what="the rest in the buffer")
    rest = await drain(ch, q, 49)
    assert sorted(int(m.body) for m in rest) == list(range(1, 50))


async def test_reconnect_redeclares_reopens_consumers(proxy: tuple[Proxy, str], queue_name: QueueName) -> None:
    px, url = proxy
    q = queue_name()
    async with await client.connect(url, reconnect=True, reconnect_delay=0.05) as conn:
        ch = await conn.channel()
        # exclusive: the broker deletes it when the connection dies, so seeing it work afterwards
        # proves it was declared again
        await ch.declare_queue(q, exclusive=True, durable=False)
        await ch.confirm_select()
        async with ch.consume(q, prefetch=100) as messages:
            await ch.publish("", q, b"before")
            m = await asyncio.wait_for(messages.__anext__(), 5)
            assert m.body == b"before"
            await m.ack()

            # a publish in flight when the connection drops: ConnectionLost, the caller decides
            px.hold()
            pending = asyncio.ensure_future(ch.publish("", q, b"in flight"))
            pending_many = asyncio.ensure_future(ch.publish_many([("", q, b"many")] * 10))
            await asyncio.sleep(0.05)
            assert not pending.done()
            px.drop()
            with pytest.raises(ConnectionLost):
                await pending
            with pytest.raises(ConnectionLost) as info:
                await pending_many
            assert info.value.confirmed == 0

            await asyncio.wait_for(conn.wait_ready(), 10)
            assert conn.reconnects == 1 and px.accepted == 2
            await ch.publish("", q, b"after")
            bodies = []
            async for m in messages:
                bodies.append(m.body)
                assert await m.ack()
                if m.body == b"after":
                    break
            # the in-flight ones may or may not have made it (the queue was exclusive: they went with it)
            assert bodies[-1] == b"after"


async def test_reconnect_waits_for_new_calls_and_stale_acks_are_noops(proxy: tuple[Proxy, str],
                                                                      queue_name: QueueName) -> None:
    px, url = proxy
    q = queue_name()
    async with await client.connect(url, reconnect=True, reconnect_delay=0.05) as conn:
        ch = await conn.channel()
        await ch.declare_queue(q)
        await ch.publish_many([("", q, b"x")])
        m = await ch.get(q)
        assert m is not None
        px.drop()
        # The client has seen the drop (a call made before would fail): down, or already back (0.05 s delay).
        await async_wait_for(lambda: not conn.is_open or conn.reconnects, what="the client seeing the drop")
        # a call made while reconnecting waits for the new connection
        assert await asyncio.wait_for(ch.declare_queue(q, passive=True), 10) == (q, 1, 0)  # requeued
        assert not await m.ack()  # its delivery tag died with the old connection
        m2 = await ch.get(q)
        assert m2 is not None and m2.redelivered
        assert await m2.ack()


async def test_no_reconnect_fails_everything(proxy: tuple[Proxy, str], queue_name: QueueName) -> None:
    px, url = proxy
    conn = await client.connect(url)
    ch = await conn.channel()
    q = queue_name()
    await ch.declare_queue(q)
    px.drop()
    await async_wait_for(lambda: not conn.is_open, what="the client seeing the drop")
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(conn.wait_ready(), 5)
    with pytest.raises(ConnectionLost):
        await ch.get(q)
    with pytest.raises(ConnectionLost):
        await conn.channel()
    await conn.close()


async def test_deliveries_on_a_reopened_channel_can_be_acked_while_others_still_reopen(
        proxy: tuple[Proxy, str], queue_name: QueueName, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a reconnect, channels reopen one by one; a consumer's channel that is back gets deliveries
    before the connection is ready, and acking them must reach the broker (they used to be dropped,
    leaving the messages unacked for as long as the connection lived)."""
    px, url = proxy
    q = queue_name()
    async with await client.connect(url, reconnect=True, reconnect_delay=0.05) as conn:
        first = await conn.channel()
        second = await conn.channel()
        await first.declare_queue(q)
        await first.publish_many([("", q, b"a"), ("", q, b"b")])
        release = asyncio.Event()
        original_restore = client.Channel.restore

        async def slow_restore(self: client.Channel) -> None:
            if self is second and conn.reconnects == 0 and not release.is_set():
                await release.wait()  # hold the connection in recovery after `first` has reopened
            await original_restore(self)

        async with first.consume(q, prefetch=10) as messages:
            got = await asyncio.wait_for(messages.__anext__(), 5)
            monkeypatch.setattr(client.Channel, "restore", slow_restore)
            px.drop()
            redelivered = []
            while len(redelivered) < 2:  # both come again on the reopened channel, redelivered
                m = await asyncio.wait_for(messages.__anext__(), 10)
                if m.redelivered:
                    redelivered.append(m)
            assert not conn.is_open  # `second` is still being reopened
            assert not await got.ack()  # a tag of the old connection is dead
            assert all([await m.ack() for m in redelivered])  # these were sent
            release.set()
            await asyncio.wait_for(conn.wait_ready(), 10)
        assert await second.declare_queue(q, passive=True) == (q, 0, 0)
