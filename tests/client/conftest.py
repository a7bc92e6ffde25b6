"""Fixtures for mailslot.client tests: every test runs against mailslot (``running_broker`` in the test's
loop) and RabbitMQ (interop), through ``async_broker_url`` from tests/conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from mailslot import client


@pytest.fixture
async def conn(async_broker_url: str) -> AsyncIterator[client.Connection]:
    c = await client.connect(async_broker_url)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def queue_name(async_broker_url: str, uname: Callable[[str], str]) -> AsyncIterator[Callable[[], str]]:
    """``queue_name()`` -> a unique queue name, deleted after the test (the RabbitMQ is shared)."""
    names: list[str] = []

    def make() -> str:
        names.append(uname("q"))
        return names[-1]

    yield make
    if names:
        with contextlib.suppress(Exception):
            async with await client.connect(async_broker_url) as c:
                ch = await c.channel()
                for name in names:
                    await ch.delete_queue(name)


class Proxy:
    """A TCP proxy in the test's loop: ``drop()`` cuts every connection through it (what a network
    failure or a broker restart looks like to the client); ``hold()`` stops forwarding server -> client."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.held = asyncio.Event()
        self.accepted = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.pairs.append((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, downstream: bool) -> None:
            try:
                while data := await src.read(65536):
                    while downstream and self.held.is_set():
                        await asyncio.sleep(0.005)
                    dst.write(data)
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    def hold(self) -> None:
        self.held.set()

    def drop(self) -> None:
        self.held.clear()
        for a, b in self.pairs:
            for w in (a, b):
                w.transport.abort()
        self.pairs.clear()

    async def close(self) -> None:
        self.drop()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def proxy(async_broker_url: str) -> AsyncIterator[tuple[Proxy, str]]:
    from urllib.parse import urlsplit

    parts = urlsplit(async_broker_url)
    p = Proxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    port = await p.start()
    try:
        yield p, f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    finally:
        await p.close()
