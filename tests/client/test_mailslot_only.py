"""Cases that need control over the broker: server-sent connection.close and heartbeats."""

from __future__ import annotations

import asyncio

import pytest

from mailslot import client
from mailslot.testing import running_broker


async def test_server_connection_close_raises_connection_closed() -> None:
    async with running_broker() as broker:
        conn = await client.connect(broker.amqp_url)
        ch = await conn.channel()
        await ch.declare_queue("q")
        await broker.stop()  # connection.close 320 CONNECTION_FORCED to every client
        with pytest.raises(client.ConnectionClosed) as info:
            await asyncio.wait_for(conn.wait_ready(), 5)
        assert info.value.code == 320
        with pytest.raises(client.ConnectionClosed):
            await ch.get("q")
        await conn.close()


async def test_reconnect_after_broker_restart_on_same_port() -> None:
    async with running_broker() as first:
        port = first.amqp_port
        conn = await client.connect(first.amqp_url, reconnect=True, reconnect_delay=0.05)
        ch = await conn.channel()
        await ch.declare_queue("q")  # memory store: the restarted broker has no queue until we declare it
        await ch.confirm_select()
        await ch.publish("", "q", b"one")
    async with running_broker(amqp_port=port):
        await asyncio.wait_for(conn.wait_ready(), 10)
        assert (await ch.declare_queue("q", passive=True))[1] == 0  # declared again, empty
        await ch.publish("", "q", b"two")
        m = await ch.get("q")
        assert m is not None and m.body == b"two"
        await conn.close()


async def test_heartbeats_keep_an_idle_connection_open() -> None:
    async with running_broker(heartbeat=1) as broker, await client.connect(broker.amqp_url, heartbeat=1) as conn:
        assert conn.heartbeat == 1
        ch = await conn.channel()
        await asyncio.sleep(3.5)  # the broker closes a client silent for 2 heartbeat intervals
        assert conn.is_open
        await ch.declare_queue("still-here")


async def test_a_server_that_breaks_the_protocol_loses_the_connection() -> None:
    """A misbehaving server (here: a delivery on a channel the client never opened) is a protocol error in
    the sans-IO layer; the client aborts the connection and operations in flight raise ConnectionLost."""
    from mailslot.protocols.amqp091 import ChannelOpened, ConnectionOpen, ConnectionStartOk, ServerConnection

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server = ServerConnection(server_properties={"product": "broken"})
        while data := await reader.read(65536):
            for event in server.receive_data(data, 0.0):
                if isinstance(event, ConnectionStartOk):
                    server.accept_login()
                elif isinstance(event, ConnectionOpen):
                    server.accept_open()
                elif isinstance(event, ChannelOpened):
                    server.send_deliver(event.channel + 8, "ctag", 1, False, "", "q", b"\x00\x00", b"x")
            writer.write(server.data_to_send())
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        conn = await client.connect(f"amqp://guest:guest@127.0.0.1:{port}/%2F")
        with pytest.raises(client.ConnectionLost, match="protocol error: .*channel 9, which is not open"):
            await asyncio.wait_for(conn.channel(), 5)
        assert not conn.is_open
        await conn.close()
    finally:
        listener.close()
        await listener.wait_closed()


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_several_urls_connect_to_the_first_that_answers_and_reconnect_to_the_next() -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{_closed_port()}/%2F"
    async with running_broker() as a, running_broker() as b:
        # The first connect skips an address that refuses (pika and aio-pika do the same with several hosts).
        conn = await client.connect([dead, a.amqp_url, b.amqp_url], reconnect=True, reconnect_delay=0.05)
        assert conn.params.port == a.amqp_port
        ch = await conn.channel()
        await ch.declare_queue("q")
        await ch.confirm_select()
        await a.stop()  # the node goes away: a does not answer any more, b does
        await asyncio.wait_for(conn.wait_ready(), 10)
        assert conn.params.port == b.amqp_port and conn.reconnects == 1
        await ch.publish("", "q", b"on b")  # the queue was declared again on b
        m = await ch.get("q")
        assert m is not None and m.body == b"on b"
        await conn.close()
    with pytest.raises(OSError):  # no address answers: the last error
        await client.connect([dead, dead])
