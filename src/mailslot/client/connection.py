"""The connection: asyncio transport glue around the sans-IO
:class:`~mailslot.protocols.amqp091.client.ClientConnection`, heartbeats and reconnects.

Every socket read is parsed in one call into a list of events and dispatched synchronously (confirms,
deliveries and replies of one read cost no task switch each); what the handlers queue is written with one
``transport.write`` at the end of the read. Writes from user code are coalesced per loop iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Self

from pamqp import commands

from mailslot.protocols.amqp091.client import ClientConnection, ClientProtocolError
from mailslot.protocols.amqp091.events import (
    ChannelCloseReceived,
    Confirm,
    Connected,
    ConnectionCloseReceived,
    ConnectionTerminated,
    ContentReceived,
    Delivery,
    Event,
    MethodReceived,
)

from .channel import Channel
from .errors import ClientError, ConnectionClosed, ConnectionLost
from .link import LinkedChannel, Send, TopologyKey
from .url import ConnectParams

log = logging.getLogger("mailslot.client")

#: connection.close codes after which a reconnect makes sense (the broker went away or restarts);
#: any other code means this client did something wrong and would do it again.
RECONNECT_CODES = frozenset({320, 541})  # CONNECTION_FORCED, INTERNAL_ERROR
#: a peer silent for this many half-intervals is dead: two heartbeat intervals (AMQP 0-9-1 section 4.2.7)
MISSED_TICKS = 4
#: transport buffer limits: a publisher writes a whole confirm window at once; pause only when far behind
WRITE_HIGH, WRITE_LOW = 4 * 1024 * 1024, 1024 * 1024


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: Connection, cc: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        self.owner = owner
        self.cc = cc
        self.transport: Any = None  # uvloop transports do not subclass asyncio.Transport
        self.connected: asyncio.Future[Connected] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.received = False
        self.wrote = False
        self.paused = False
        self.resumed: asyncio.Future[None] | None = None
        self.close_error: ClientError | None = None  # connection.close from the server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self.cc.initiate()
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            events = self.cc.receive_data(data)
        except ClientProtocolError as exc:
            log.error("protocol error from the server: %s", exc)
            self.close_error = ConnectionLost(f"protocol error: {exc}")
            self.transport.abort()
            return
        if events:
            self.owner._dispatch(self, events)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.paused = False
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)
        error = self.close_error or ConnectionLost(f"connection lost: {exc or 'closed by the server'}")
        if not self.connected.done():
            self.connected.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(None)
        self.owner._on_lost(self, error)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def flush(self) -> None:
        data = self.cc.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.wrote = True


class Connection:
    """One AMQP connection. Use :func:`connect`; ``async with`` closes it.

    It is the :class:`~.link.ConnectionLink` of its channels: they queue frames on :attr:`wire` and
    ask for a flush; it routes each channel's events to it (:class:`~.link.LinkedChannel`).
    """

    def __init__(self, params: ConnectParams | Sequence[ConnectParams], *, reconnect: bool = False,
                 reconnect_delay: float = 0.1, reconnect_max_delay: float = 5.0, name: str | None = None) -> None:
        # Several addresses: the nodes of one cluster (or one broker behind several names). The connection
        # uses one at a time and moves to the next one that answers when it cannot connect.
        self.addresses = [params] if isinstance(params, ConnectParams) else list(params)
        if not self.addresses:
            raise ValueError("no address to connect to")
        self._address = 0  # index in self.addresses of the one in use (or tried next)
        self.name = name
        self.reconnect = reconnect
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.reconnects = 0  # how many times the connection was re-established
        self.server_properties: dict[str, Any] = {}
        self.heartbeat = 0  # negotiated, seconds
        self.blocked = False  # connection.blocked from the server (resource alarm): publishes wait
        self._unblocked = asyncio.Event()
        self._unblocked.set()
        self._loop = asyncio.get_running_loop()
        self._proto: _Protocol | None = None
        self._cc = ClientConnection()
        self._channels: dict[int, LinkedChannel] = {}
        self._ready = False
        self._ready_event = asyncio.Event()
        self._closing = False
        self._error: ClientError | None = None  # final: the connection is closed for good
        self._topology: dict[TopologyKey, tuple[Send, type]] = {}
        self._reconnect_task: asyncio.Task[None] | None = None
        self._hb_handle: asyncio.TimerHandle | None = None
        self._hb_missed = 0
        self._flush_scheduled = False

    # ------------------------------------------------------------------ public
    @property
    def params(self) -> ConnectParams:
        """The address in use (the one last connected to, or tried)."""
        return self.addresses[self._address]

    @property
    def is_open(self) -> bool:
        return self._ready

    async def channel(self) -> Channel:
        await self._wait_ready()
        number = next(i for i in range(1, 65536) if i not in self._channels)
        if self._cc.channel_max and number > self._cc.channel_max:
            raise ClientError(f"no free channel (channel_max {self._cc.channel_max})")
        ch = Channel(self, number)
        self._channels[number] = ch
        try:
            await ch.restore()
        except BaseException:
            self._channels.pop(number, None)
            raise
        return ch

    async def close(self) -> None:
        """connection.close and wait for close-ok (at most 5 s). Pending operations raise
        :class:`ConnectionClosed`; no reconnect follows."""
        if self._closing:
            return
        self._closing = True
        task = self._reconnect_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._stop_heartbeat()
        proto = self._proto
        if proto is not None and proto.transport is not None and not proto.transport.is_closing():
            proto.close_error = ConnectionClosed(200, "closed by the client")
            proto.cc.close()
            proto.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proto.lost), 5.0)
            if not proto.transport.is_closing():
                proto.transport.close()
        self._finish(ConnectionClosed(200, "closed by the client"))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def drop(self) -> None:
        """Abort the TCP connection at once (tests, chaos): what a network failure looks like."""
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.abort()

    async def wait_ready(self) -> None:
        """Wait until the connection is (re-)established; raises once it is closed for good."""
        await self._wait_ready()

    async def wait_unblocked(self) -> None:
        """Wait while the broker has this connection blocked (connection.blocked: a memory or disk
        alarm; https://www.rabbitmq.com/docs/connection-blocked). Publishing then would only fill the
        socket: the broker does not read it. Returns at connection.unblocked, a reconnect or a close."""
        while self.blocked and self._error is None:
            await self._unblocked.wait()

    # ------------------------------------------------------------------ connecting
    async def _connect_once(self) -> None:
        p = self.params
        cc = ClientConnection(p.username, p.password, p.vhost, frame_max=p.frame_max, heartbeat=p.heartbeat,
                              negotiate_heartbeat=True, client_properties={
                                  "product": "mailslot.client", "connection_name": self.name or "mailslot.client",
                                  "capabilities": {"publisher_confirms": True, "basic.nack": True,
                                                   "consumer_cancel_notify": True, "connection.blocked": True,
                                                   "authentication_failure_close": True},
                              })
        transport, proto = await asyncio.wait_for(
            self._loop.create_connection(lambda: _Protocol(self, cc), p.host, p.port, ssl=p.ssl_context(),
                                         server_hostname=p.server_hostname), p.connect_timeout)
        self._proto, self._cc = proto, cc
        try:
            connected = await asyncio.wait_for(asyncio.shield(proto.connected), p.connect_timeout)
        except BaseException:
            transport.abort()
            raise
        self.server_properties = connected.server_properties
        self.heartbeat = connected.heartbeat
        self._start_heartbeat()

    async def _connect_any(self) -> None:
        """Connect to the first address that answers, the one in use first, then the next ones in order
        (pika's and aio-pika's behaviour with several hosts). Raises the last error when none does."""
        for tried in range(len(self.addresses)):
            try:
                await self._connect_once()
                return
            except Exception as exc:  # refused, timed out, closed while opening: try the next one
                if tried == len(self.addresses) - 1:
                    raise
                log.info("cannot connect to %s:%d (%s); trying the next address", self.params.host,
                         self.params.port, exc)
                self._next_address()

    def _next_address(self) -> None:
        self._address = (self._address + 1) % len(self.addresses)

    def _set_ready(self) -> None:
        self._ready = True
        self._ready_event.set()

    async def _wait_ready(self) -> None:
        while not self._ready:
            if self._error is not None:
                raise self._error
            await self._ready_event.wait()
        if self._error is not None:
            raise self._error

    async def _reconnect_loop(self) -> None:
        delay = self.reconnect_delay
        while not self._closing:
            try:
                await self._connect_any()
                await self._recover()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: try again after a pause
                log.info("reconnect to %s:%d failed: %s; next try in %.1f s", self.params.host,
                         self.params.port, exc, delay)
                if self._proto is not None and self._proto.transport is not None:
                    self._proto.transport.abort()
                self._next_address()  # with several addresses, a round over all of them per pause
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_delay)
                continue
            self.reconnects += 1
            log.info("reconnected to %s:%d", self.params.host, self.params.port)
            self._set_ready()
            return

    async def _recover(self) -> None:
        """Declare again what was declared through this connection, then reopen every channel (its
        confirm/tx/qos modes and consumers)."""
        if self._topology:
            number = next(i for i in range(1, 65536) if i not in self._channels)
            tmp = Channel(self, number)
            self._channels[number] = tmp
            try:
                await tmp.restore()
                # exchanges before queues before bindings, each in declaration order
                for kind in ("exchange", "queue", "bind"):
                    for key, (send, reply) in list(self._topology.items()):
                        if key[0] != kind:
                            continue
                        try:
                            await tmp.call(send, reply)
                        except ClientError as exc:
                            if not tmp.failed:
                                raise
                            log.warning("could not declare %s again after reconnect: %s", key, exc)
                            await tmp.restore()
                await tmp.call(lambda cc, n: cc.close_channel(n), commands.Channel.CloseOk)
            finally:
                self._channels.pop(number, None)
        for number in sorted(self._channels):
            ch = self._channels[number]
            if ch.failed is None:
                await ch.restore()

    # ------------------------------------------------------------------ ConnectionLink (for channels)
    @property
    def wire(self) -> ClientConnection:
        return self._cc

    def remember(self, key: TopologyKey, send: Send, reply: type) -> None:
        self._topology[key] = (send, reply)

    def attach(self, number: int, channel: LinkedChannel) -> None:
        self._channels[number] = channel

    def detach(self, number: int) -> None:
        self._channels.pop(number, None)

    def forget(self, key: TopologyKey) -> None:
        self._topology.pop(key, None)
        if key[0] == "queue":  # its bindings went with it
            for k in [k for k in self._topology if k[0] == "bind" and k[1] == key[1]]:
                del self._topology[k]

    def flush(self) -> None:
        if self._proto is not None:
            self._proto.flush()

    def flush_soon(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_scheduled_now)

    def _flush_scheduled_now(self) -> None:
        self._flush_scheduled = False
        if self._proto is not None:
            self._proto.flush()

    @property
    def write_paused(self) -> bool:
        return self._proto is not None and self._proto.paused

    async def drain(self) -> None:
        proto = self._proto
        while proto is not None and proto.paused:
            if proto.resumed is None or proto.resumed.done():
                proto.resumed = self._loop.create_future()
            await proto.resumed

    # ------------------------------------------------------------------ events
    def _dispatch(self, proto: _Protocol, events: list[Event]) -> None:
        if proto is not self._proto:
            return  # a connection we already gave up on
        channels = self._channels
        for ev in events:
            match ev:
                case Delivery() | Confirm() | ContentReceived():  # the hot ones first
                    ch = channels.get(ev.channel)
                    if ch is not None:
                        ch.event_received(ev)
                case MethodReceived(channel=0, method=method):
                    self._on_connection_method(method)
                case MethodReceived(channel=number):
                    ch = channels.get(number)
                    if ch is not None:
                        ch.event_received(ev)
                case ChannelCloseReceived(channel=number):
                    ch = channels.pop(number, None)
                    if ch is not None:
                        ch.event_received(ev)
                case ConnectionCloseReceived(reply_code=code, reply_text=text):
                    log.warning("server closed the connection: %d %s", code, text)
                    proto.close_error = ConnectionClosed(code, text)
                case ConnectionTerminated():
                    proto.flush()  # close-ok
                    proto.transport.close()
                case Connected() if not proto.connected.done():
                    proto.connected.set_result(ev)

    def _on_connection_method(self, method: Any) -> None:
        match method:
            case commands.Connection.Blocked(reason=reason):
                self._set_blocked(True)
                log.warning("connection blocked by the broker: %s; publishes wait", reason)
            case commands.Connection.Unblocked():
                self._set_blocked(False)
                log.info("connection unblocked by the broker")

    def _set_blocked(self, blocked: bool) -> None:
        self.blocked = blocked
        if blocked:
            self._unblocked.clear()
        else:
            self._unblocked.set()

    def _on_lost(self, proto: _Protocol, error: ClientError) -> None:
        if proto is not self._proto:
            return
        self._ready = False
        self._ready_event.clear()
        self._set_blocked(False)  # a new connection starts unblocked; a closed one holds nobody
        self._stop_heartbeat()
        reconnecting = self.reconnect and not self._closing and (
            not isinstance(error, ConnectionClosed) or error.code in RECONNECT_CODES)
        for ch in list(self._channels.values()):
            ch.connection_lost(error, reconnecting)
        if not reconnecting:
            self._finish(error)
            return
        if self._reconnect_task is None or self._reconnect_task.done():
            log.warning("%s; reconnecting", error)
            self._reconnect_task = self._loop.create_task(self._reconnect_loop(), name="mailslot.client reconnect")

    def _finish(self, error: ClientError) -> None:
        if self._error is None:
            self._error = error
        self._ready = False
        self._set_blocked(False)
        for ch in list(self._channels.values()):
            ch.connection_lost(self._error, reconnecting=False)
        self._channels.clear()
        self._ready_event.set()  # wakes waiters, who find self._error

    # ------------------------------------------------------------------ heartbeats
    def _start_heartbeat(self) -> None:
        self._stop_heartbeat()
        if self.heartbeat > 0:
            self._hb_missed = 0
            self._hb_handle = self._loop.call_later(self.heartbeat / 2, self._heartbeat_tick)

    def _stop_heartbeat(self) -> None:
        if self._hb_handle is not None:
            self._hb_handle.cancel()
            self._hb_handle = None

    def _heartbeat_tick(self) -> None:
        """Every half interval: send a heartbeat if we wrote nothing, give up on a silent server."""
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            return
        if proto.received:
            proto.received = False
            self._hb_missed = 0
        else:
            self._hb_missed += 1
            if self._hb_missed >= MISSED_TICKS:
                log.warning("no data from the server for %d s: connection considered dead", 2 * self.heartbeat)
                proto.close_error = ConnectionLost("missed heartbeats: the server is unreachable")
                proto.transport.abort()
                return
        if not proto.wrote:
            proto.cc.send_heartbeat()
            proto.flush()
        proto.wrote = False
        self._hb_handle = self._loop.call_later(self.heartbeat / 2, self._heartbeat_tick)


async def connect(url: str | Sequence[str] = "amqp://guest:guest@localhost:5672/%2F", *, reconnect: bool = False,
                  heartbeat: int | None = None, name: str | None = None, reconnect_delay: float = 0.1,
                  reconnect_max_delay: float = 5.0) -> Connection:
    """Open a connection. ``reconnect=True``: after a drop, connect again (backoff from
    ``reconnect_delay`` doubling to ``reconnect_max_delay``), declare again the exchanges, queues and
    bindings declared through this connection, reopen its channels and consumers. The first connect is
    not retried: a wrong URL or password fails here.

    ``url`` may be a list of URLs (the nodes of a cluster): the connection uses the first that answers,
    and after a drop reconnects to the same one or, when it does not answer, to the next ones in turn."""
    urls = [url] if isinstance(url, str) else list(url)
    addresses = [ConnectParams.parse(u) for u in urls]
    if heartbeat is not None:
        addresses = [dataclasses.replace(params, heartbeat=heartbeat) for params in addresses]
    conn = Connection(addresses, reconnect=reconnect, reconnect_delay=reconnect_delay,
                      reconnect_max_delay=reconnect_max_delay, name=name)
    await conn._connect_any()
    conn._set_ready()
    return conn


__all__ = ["Connection", "connect"]
