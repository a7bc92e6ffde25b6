"""asyncio glue for :class:`~mailslot.protocols.amqp091.client.ClientConnection`: one
``asyncio.Protocol`` per connection, awaitable request/reply for setup, and a batch handler for the hot path
(the handler gets the whole list of events of one ``data_received`` and nothing is awaited per message)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from pamqp import base

from mailslot.protocols.amqp091.client import ClientConnection
from mailslot.protocols.amqp091.events import (
    ChannelCloseReceived,
    Connected,
    ConnectionCloseReceived,
    ConnectionTerminated,
    Event,
    MethodReceived,
)

Handler = Callable[[list[Event]], None]


class BenchConnectionError(Exception):
    pass


@dataclass(frozen=True)
class AMQPUrl:
    host: str
    port: int
    username: str
    password: str
    vhost: str

    @classmethod
    def parse(cls, url: str) -> AMQPUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", ""):
            raise ValueError(f"only amqp:// URLs are supported, not {url!r}")
        path = parts.path.removeprefix("/")
        return cls(parts.hostname or "localhost", parts.port or 5672, unquote(parts.username or "guest"),
                   unquote(parts.password or "guest"), unquote(path) if path else "/")


class ClientProtocol(asyncio.Protocol):
    """Feeds a sans-IO client connection; writes what it emits after each batch."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.handler: Handler | None = None
        self.on_resume: Callable[[], None] | None = None
        self.paused = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.connected: asyncio.Future[Connected] = asyncio.get_running_loop().create_future()
        self._waiters: list[tuple[int, type, asyncio.Future[Any]]] = []
        self.error: str | None = None

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transports do not subclass Transport
        assert self.transport is not None
        # Big buffers: a producer writes a whole window in one go; pause only when far behind.
        self.transport.set_write_buffer_limits(high=4 * 1024 * 1024, low=1024 * 1024)
        self.conn.initiate()
        self.flush()

    def data_received(self, data: bytes) -> None:
        events = self.conn.receive_data(data)
        if events:
            if self.handler is None or self._waiters or not self.connected.done():
                self._control(events)
            if self.handler is not None:
                self.handler(events)  # hands events it does not know to control()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self.error or (str(exc) if exc else "connection closed")
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(BenchConnectionError(reason))
        self._waiters.clear()
        if not self.connected.done():
            self.connected.set_exception(BenchConnectionError(reason))
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.on_resume is not None:
            self.on_resume()

    # ------------------------------------------------------------------ helpers
    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def control(self, events: list[Event]) -> None:
        """Setup replies, connection/channel closes (the handler passes on what it does not handle)."""
        if self.handler is not None and not self._waiters and self.connected.done():
            self._control(events)

    def _control(self, events: list[Event]) -> None:
        for ev in events:
            t = type(ev)
            if t is MethodReceived:
                for i, (ch, cls, fut) in enumerate(self._waiters):
                    if ch == ev.channel and isinstance(ev.method, cls):  # type: ignore[attr-defined]
                        del self._waiters[i]
                        if not fut.done():
                            fut.set_result(ev.method)  # type: ignore[attr-defined]
                        break
            elif t is Connected:
                if not self.connected.done():
                    self.connected.set_result(ev)  # type: ignore[arg-type]
            elif t is ChannelCloseReceived or t is ConnectionCloseReceived:
                text = f"{ev.reply_code} {ev.reply_text}"  # type: ignore[attr-defined]
                if t is ConnectionCloseReceived:
                    self.error = f"connection closed: {text}"
                self._fail_waiters(None if t is ConnectionCloseReceived else ev.channel,  # type: ignore[attr-defined]
                                   f"channel closed: {text}")
            elif t is ConnectionTerminated:  # close-ok is queued (the server closed) or arrived (we did)
                if self.transport is not None:
                    self.flush()
                    self.transport.close()
                self._fail_waiters(None, "channel closed: the connection is closed")

    def _fail_waiters(self, channel: int | None, text: str) -> None:
        """Fail the waiters of ``channel`` (None: every waiter)."""
        for i in reversed(range(len(self._waiters))):
            ch, _, fut = self._waiters[i]
            if channel is None or ch == channel:
                del self._waiters[i]
                if not fut.done():
                    fut.set_exception(BenchConnectionError(text))

    async def call(self, channel: int, send: Callable[[], None], reply: type[base.Frame],
                   timeout: float = 30.0) -> Any:
        """Queue a request (``send`` calls a ClientConnection method), flush, await the reply method."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append((channel, reply, fut))
        send()
        self.flush()
        return await asyncio.wait_for(fut, timeout)

    async def close(self, timeout: float = 3.0) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.conn.close()
        self.flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), timeout)
        except TimeoutError:
            pass
        finally:
            if not self.transport.is_closing():
                self.transport.close()


async def connect(url: AMQPUrl, name: str = "mailslot-bench", timeout: float = 15.0) -> ClientProtocol:
    loop = asyncio.get_running_loop()
    conn = ClientConnection(url.username, url.password, url.vhost, client_properties={
        "product": "mailslot-bench", "connection_name": name,
        "capabilities": {"publisher_confirms": True, "basic.nack": True, "consumer_cancel_notify": True,
                         "authentication_failure_close": True},
    })
    _, proto = await loop.create_connection(lambda: ClientProtocol(conn), url.host, url.port)
    await asyncio.wait_for(proto.connected, timeout)
    return proto
