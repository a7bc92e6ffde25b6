"""asyncio glue for AMQP: one listener, one stream protocol per socket, and the flush scheduler.

No protocol or broker logic lives here. Per read buffer: feed the bytes to the front end, ask
for a flush. The flush runs once per event-loop iteration (``call_soon``), so every connection
that read data in that iteration shares one dispatch pass and one store batch, and each
connection's deliveries are written with one ``transport.write`` before the store batch is
committed (a delivery need not wait for the fsync) and its confirms with one more after it. A batch whose store can write it
off the loop (``Batch.threadable``) is written and fsynced in one worker thread while the loop goes
on; the batch cut after it waits (grows) until it lands: group commit that uses the second core.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from ..core.broker import TICK_SECONDS, Batch, Broker
from ..core.stats import CommitStats
from ..frontends.amqp091 import AMQPConnection
from .admission import Admission
from .tls import HANDSHAKE_TIMEOUT, peer_certificate_of

log = logging.getLogger("mailslot.transport")

# Longest a throttled publisher goes unread while queues stay congested: a publisher must not starve
# (its other queues may be fine), it only has to yield the loop to deliveries.
MAX_THROTTLE = 0.05
# Why a stream is not being read (AMQPStream.hold): reading resumes only when no reason is left.
CREDIT = "credit"  # credit flow: it fed a congested queue (FlushScheduler.throttle)
ALARM = "alarm"  # a resource alarm blocks it as a publisher (transport/resources.py)
UNREAD = "unread"  # its peer is not reading what we write: read nothing more from it until it does


class FlushScheduler:
    """Once per loop turn: dispatch, cut a store batch (unless one is being written), write output."""

    def __init__(self, loop: asyncio.AbstractEventLoop, broker: Broker) -> None:
        self.loop = loop
        self.broker = broker
        self.outbox: set[AMQPConnection] = set()
        self.streams: dict[AMQPConnection, AMQPStream] = {}
        self._scheduled = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailslot-commit")
        self._in_flight: asyncio.Future[None] | None = None
        self._throttled: list[AMQPStream] = []
        self._throttle_deadline = 0.0
        broker.request_flush = self.request
        self._ticker = loop.call_later(TICK_SECONDS, self._tick)
        self.commit_stats = CommitStats()  # for the metrics endpoint: per batch, never per message
        self._commit_started = 0.0
        self._written = self._bytes_written()

    def _tick(self) -> None:
        """The broker's timers (TTL, expiry, timeouts, delays), then a flush for what they changed."""
        self._ticker = self.loop.call_later(TICK_SECONDS, self._tick)
        try:
            if self.broker.tickers:
                self.broker.tick()
                self.request()
        except Exception:
            log.exception("broker tick failed")

    def request(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.run)

    def run(self) -> None:
        self._scheduled = False
        broker = self.broker
        try:
            broker.dispatch()
            self._write_outbox()  # deliveries leave now: they need not wait for the fsync, confirms do
            if self._in_flight is None:
                self._commit(broker.cut())
        except Exception:
            log.exception("broker flush failed")
        self._write_outbox()  # what the commit released (confirms, tx.commit-ok)
        if self._throttled and (not broker.congested or self.loop.time() >= self._throttle_deadline):
            self.loop.call_soon(self._release_throttled)  # read them again from the next loop turn

    def _write_outbox(self) -> None:
        outbox = self.outbox
        while outbox:
            conn = outbox.pop()
            stream = self.streams.get(conn)
            if stream is not None:
                stream.write_pending()

    def throttle(self, stream: AMQPStream) -> None:
        """Stop reading a publisher that fed a congested queue until a flush has served its consumers."""
        if stream.transport is not None and stream.conn is not None:
            stream.hold(CREDIT)
            if not self._throttled:
                self._throttle_deadline = self.loop.time() + MAX_THROTTLE
            self._throttled.append(stream)

    def _release_throttled(self) -> None:
        throttled, self._throttled = self._throttled, []
        for stream in throttled:
            if stream.conn is not None:
                stream.conn.gate.throttled = False
            stream.release(CREDIT)  # a resource alarm may still hold it

    def _commit(self, batch: Batch) -> None:
        write = batch.write
        if write is None:
            self.broker.finish(batch, True)
        elif not batch.threadable:
            started = self.loop.time()
            ok = _run(write)
            self._measure(started)
            self.broker.finish(batch, ok)
        else:
            self._commit_started = self.loop.time()
            future = self.loop.run_in_executor(self._writer, write)
            self._in_flight = future
            future.add_done_callback(lambda done: self._landed(batch, done))

    def _measure(self, started: float) -> None:
        stats = self.commit_stats
        stats.seconds.observe(self.loop.time() - started)
        written = self._bytes_written()
        if written is not None and self._written is not None:
            stats.bytes.observe(written - self._written)
        self._written = written

    def _bytes_written(self) -> int | None:
        """What the store says it has written so far, if it says (the segment log's ``stats``)."""
        stats = getattr(self.broker.log, "stats", None)
        value = stats.get("bytes_written") if isinstance(stats, dict) else None
        return value if isinstance(value, int) else None

    def _landed(self, batch: Batch, done: asyncio.Future[None]) -> None:
        self._in_flight = None
        self._measure(self._commit_started)
        ok = not done.cancelled() and done.exception() is None
        if not ok and not done.cancelled():
            log.error("store commit failed", exc_info=done.exception())
        self.broker.finish(batch, ok)
        self.request()  # send the confirms; cut the batch that grew meanwhile

    async def drain(self) -> None:
        """Wait for the batch being written, then write what is left, synchronously."""
        if self._in_flight is not None:
            await asyncio.wait([self._in_flight])
        self.run()
        if self._in_flight is not None:
            await asyncio.wait([self._in_flight])
        self._ticker.cancel()
        self._writer.shutdown(wait=True)


def _run(write: Callable[[], None]) -> bool:
    try:
        write()
        return True
    except Exception:
        log.exception("store commit failed")
        return False


class AMQPStream(asyncio.Protocol):
    def __init__(self, listener: AMQPListener) -> None:
        self.listener = listener
        self.loop = listener.loop
        self.transport: asyncio.Transport | None = None
        self.conn: AMQPConnection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._paused = False
        self._holds: set[str] = set()  # CREDIT / ALARM: reasons reading is paused
        # For the management API (one addition per read or write call, not per frame or message).
        self.connected_at = 0.0  # wall-clock seconds
        self.peer: tuple[str, int] = ("", 0)
        self.local: tuple[str, int] = ("", 0)
        self.recv_oct = self.recv_cnt = self.send_oct = self.send_cnt = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        admission = self.listener.admission
        if admission is not None and not admission.admit(len(self.listener.streams)):
            cast(asyncio.Transport, transport).abort()  # over the connection cap: its descriptor is freed at once (transport/admission.py)
            return
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        self.peer, self.local = (str(peer[0]), int(peer[1])), (str(local[0]), int(local[1]))
        self.connected_at = time.time()
        self.listener.opened_total += 1
        scheduler = self.listener.scheduler
        self.conn = self.listener.make_connection(str(peer[0]), scheduler.outbox)
        # TLS: the handshake is done before connection_made, so the client certificate is known before
        # the first protocol byte (SASL EXTERNAL reads it from the connection).
        self.conn.peer_certificate = peer_certificate_of(transport)
        self.conn.peer_port = int(peer[1]) if len(peer) > 1 else 0
        local = transport.get_extra_info("sockname") or ("", 0)
        self.conn.local = (str(local[0]), int(local[1]) if len(local) > 1 else 0)
        self.conn.tls = transport.get_extra_info("ssl_object") is not None
        scheduler.streams[self.conn] = self
        self.listener.streams.add(self)
        # The write buffer watermarks decide when a slow consumer stops getting deliveries.
        self.transport.set_write_buffer_limits(high=1024 * 1024, low=256 * 1024)
        self._arm_timer()
        scheduler.request()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        self.recv_oct += len(data)
        self.recv_cnt += 1
        conn.receive(data, self.loop.time())
        self.listener.scheduler.request()
        if conn.gate.throttled:
            self.listener.scheduler.throttle(self)
        if self.listener.alarm and conn.publisher:
            self.block(self.listener.alarm)  # RabbitMQ blocks a connection when it publishes during an alarm
        self._arm_timer()  # negotiation may have brought heartbeats (an earlier deadline)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        conn = self.conn
        self.listener.closed_total += 1
        if conn is not None:
            conn.connection_lost()
            self.listener.scheduler.streams.pop(conn, None)
            self.listener.scheduler.outbox.discard(conn)
        self.listener.streams.discard(self)
        self.listener.scheduler.request()

    def hold(self, why: str) -> None:
        """Stop reading the socket for ``why``; it stays paused until every reason is released."""
        if self.transport is None:
            return
        if not self._holds and not self.transport.is_closing():
            self.transport.pause_reading()
            if self.conn is not None:
                self.conn.reading_paused()  # its heartbeats now wait unread
        self._holds.add(why)

    def release(self, why: str) -> None:
        if why not in self._holds:
            return
        self._holds.discard(why)
        if not self._holds and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            if self.conn is not None:
                self.conn.reading_resumed(self.loop.time())

    def block(self, reason: str) -> None:
        """Resource alarm: connection.blocked (if the client asked for it), then stop reading."""
        if ALARM in self._holds or self.conn is None or self.conn.closed:
            return
        self.conn.alarm_blocked(reason)
        self.hold(ALARM)

    def unblock(self) -> None:
        if ALARM not in self._holds:
            return
        if self.conn is not None:
            self.conn.alarm_unblocked()
        self.release(ALARM)

    def pause_writing(self) -> None:
        """Its peer does not read: no more deliveries, and nothing more read from it, since every
        request it sends makes a reply (confirms, returns with bodies) that would pile up here."""
        self._paused = True
        if self.conn is not None:
            self.conn.set_writable(False)
        self.hold(UNREAD)

    def resume_writing(self) -> None:
        self._paused = False
        self.release(UNREAD)
        if self.conn is not None:
            self.conn.set_writable(True)
            self.listener.scheduler.request()

    def write_pending(self) -> None:
        conn, transport = self.conn, self.transport
        if conn is None or transport is None or transport.is_closing():
            return
        data = conn.data_to_send()
        if data:
            self.send_oct += len(data)
            self.send_cnt += 1
            transport.write(data)
        if conn.terminated:
            transport.close()
        elif not self._paused and not conn.gate.open:
            conn.set_writable(True)  # the output that closed the gate has been handed to the socket
            self.listener.scheduler.request()

    def _arm_timer(self) -> None:
        """Keep one loop timer at the connection's earliest deadline. Deadlines only move later with
        traffic, so a timer that fires early just finds nothing due and is armed again."""
        conn = self.conn
        if conn is None:
            return
        due = conn.next_timer()
        if due is None:
            return
        if self._timer is not None:
            if due >= self._timer_due:
                return
            self._timer.cancel()
        self._timer_due = due
        self._timer = self.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        conn = self.conn
        if conn is None or conn.terminated:
            return
        conn.timer(self.loop.time())
        self.listener.scheduler.request()
        if not conn.terminated:
            self._arm_timer()


class AMQPListener:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        broker: Broker,
        make_connection: Callable[[str, set[AMQPConnection]], AMQPConnection],
    ) -> None:
        self.loop = loop
        self.broker = broker
        self.make_connection = make_connection
        self.scheduler = FlushScheduler(loop, broker)
        self.streams: set[AMQPStream] = set()
        self.servers: list[asyncio.Server] = []
        self.alarm = ""  # connection.blocked reason while a resource alarm is set (transport/resources.py)
        self.admission: Admission | None = None  # the connection cap; None: no cap (transport/admission.py)
        self.opened_total = self.closed_total = 0  # connection churn, for the management API and metrics

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Bind and listen (AMQPS with ``ssl_context``); returns the bound port. Call once per port: the
        plain and the TLS port share this listener's flush scheduler, so they share its store batches.
        Raises OSError(EADDRINUSE) when taken."""
        server = await self.loop.create_server(
            lambda: AMQPStream(self),
            host,
            port,
            reuse_address=True,
            backlog=1024,
            ssl=ssl_context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if ssl_context is not None else None,
        )
        self.servers.append(server)
        sockets = server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting, close every connection as its front end closes on shutdown (AMQP: 320
        CONNECTION_FORCED), wait briefly for the clients to answer."""
        for server in self.servers:
            server.close()
        for stream in list(self.streams):
            if stream.conn is not None:
                stream.conn.shutdown()
        self.scheduler.run()
        deadline = self.loop.time() + grace
        while self.streams and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for stream in list(self.streams):
            if stream.transport is not None:
                stream.transport.abort()
        await self.scheduler.drain()
        for server in self.servers:
            await server.wait_closed()


def is_address_in_use(error: OSError) -> bool:
    return error.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1))

