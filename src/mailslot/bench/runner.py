"""The load generator behind ``mailslot bench`` (PerfTest-like), usable from Python too:

    result = asyncio.run(run_bench(BenchConfig(url=..., duration=10)))

Each producer and consumer is its own connection (one channel). Bodies start with 16 octets
(send time in ``time.monotonic_ns()``, sequence number): consumers compute publish->deliver latency from
them; producers keep the send time of each published batch and compute publish->confirm latency when the
confirms arrive. Producers publish as fast as the confirm window (or --rate, or socket back-pressure
when neither limits) allows: every publish of one loop iteration is one ``transport.write``.
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from array import array
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from pamqp import commands

from mailslot.protocols.amqp091.events import Confirm, Delivery, Event

from .driver import AMQPUrl, ClientProtocol, connect
from .ticker import Ticker

STAMP = struct.Struct(">QQ")  # send time (monotonic ns), sequence number
STAMP_SIZE = STAMP.size
_TS = struct.Struct(">Q").unpack_from
#: publishes per write when nothing else limits a producer (no confirms, no rate)
UNBOUNDED_BATCH = 500
#: how often rate-limited producers top up, seconds (5,000 msg/s -> 10 messages per tick)
RATE_TICK = 0.002
#: consumers send any pending multi-ack after this long without reaching --multi-ack
ACK_FLUSH_INTERVAL = 0.05


@dataclass
class BenchConfig:
    url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    producers: int = 1
    consumers: int = 1
    queues: int = 1
    size: int = 256
    persistent: bool = True
    confirm: int = 1000  # window of unconfirmed messages per producer; 0 = no confirms
    prefetch: int = 1000
    multi_ack: int = 100
    rate: int = 0  # per producer, msg/s; 0 = unlimited
    duration: float = 10.0
    count: int = 0  # messages per producer; when > 0 it ends the run instead of --duration
    auto_ack: bool = False
    queue_prefix: str = "mailslot-bench"
    durable_queues: bool | None = None  # None: durable when persistent
    delete_queues: bool = True
    progress: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)
    # Declare (and delete) the queues through this broker instead of ``url`` ("": ``url``): in a cluster, the
    # node that is to own them while producers and consumers use another (benchmarks/cluster_forward.py).
    declare_url: str = ""
    # Awaited with the queue names once they are declared, before any consumer or producer starts.
    prepared: Callable[[list[str]], Awaitable[None]] | None = field(default=None, repr=False)


class Stats:
    """Counters shared by every producer/consumer of a run (one event loop, no locks needed)."""

    def __init__(self) -> None:
        self.published = 0
        self.confirmed = 0  # messages the broker acked
        self.nacked = 0  # messages the broker nacked (refused): never counted as confirmed
        self.consumed = 0
        self.confirm_lat = array("q")  # ns, one entry per confirmed message
        self.deliver_lat = array("q")  # ns, one entry per delivered message
        self.recording = True


def percentiles(values: array[int] | list[int], ps: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles in milliseconds, plus max."""
    if not values:
        return {**{f"p{p:g}": 0.0 for p in ps}, "max": 0.0}
    s = sorted(values)
    n = len(s)
    out = {f"p{p:g}": s[min(n - 1, max(0, int(-(-p * n // 100)) - 1))] / 1e6 for p in ps}
    out["max"] = s[-1] / 1e6
    return out


class Producer:
    def __init__(self, proto: ClientProtocol, queue: str, cfg: BenchConfig, stats: Stats) -> None:
        self.proto = proto
        self.conn = proto.conn
        self.cfg = cfg
        self.stats = stats
        self.loop = asyncio.get_running_loop()
        props = commands.Basic.Properties(delivery_mode=2 if cfg.persistent else 1)
        self.template = self.conn.publish_template(1, "", queue, b"\x00" * cfg.size, properties=props,
                                                   stamp_size=STAMP_SIZE)
        self.window = cfg.confirm
        self.seq = 0  # last published sequence number (== confirm delivery tag)
        self.acked_upto = 0  # every tag <= this is decided (acked or nacked)
        self.out_of_order: set[int] = set()  # single confirms beyond acked_upto, counted already
        self.batches: deque[list[int]] = deque()  # [first seq, last seq, send ns]
        self.stopped = False
        self.done = asyncio.get_running_loop().create_future()
        self.started_at = 0.0
        self._ticker = Ticker(RATE_TICK, self.pump)
        self._scheduled = False
        proto.handler = self.on_events
        proto.on_resume = self.pump

    def start(self) -> None:
        self.started_at = self.loop.time()
        if self.cfg.rate:
            self._ticker.start()
        else:
            self.pump()

    def stop(self) -> None:
        self.stopped = True
        self._ticker.stop()
        self._finish_if_done()

    def _resched(self) -> None:
        self._scheduled = False
        self.pump()

    def pump(self) -> None:
        if self.stopped or self.proto.paused:
            return
        cfg = self.cfg
        allow = UNBOUNDED_BATCH if not self.window else self.window - (self.seq - self.acked_upto)
        if cfg.rate:
            due = int((self.loop.time() - self.started_at) * cfg.rate) - self.seq
            allow = min(allow, due) if self.window else due
        if cfg.count:
            allow = min(allow, cfg.count - self.seq)
        if allow <= 0:
            if cfg.count and self.seq >= cfg.count:
                self.stop()
            return
        now = time.monotonic_ns()
        first = self.seq + 1
        pack = STAMP.pack
        self.seq = self.conn.publish_stamped(self.template, [pack(now, s) for s in range(first, first + allow)])
        if self.stats.recording:
            self.stats.published += allow
        if self.window:
            self.batches.append([first, self.seq, now])
        self.proto.flush()
        if not self.window and not cfg.rate and not self._scheduled:
            # Nothing else will call us back: go again next iteration unless the socket pushes back.
            self._scheduled = True
            self.loop.call_soon(self._resched)
        if cfg.count and self.seq >= cfg.count:
            self.stop()

    def _finish_if_done(self) -> None:
        if self.stopped and not self.done.done() and (not self.window or self.acked_upto >= self.seq):
            self.done.set_result(None)

    def on_events(self, events: list[Event]) -> None:
        now = 0
        other = None
        for ev in events:
            if type(ev) is Confirm:
                if not now:
                    now = time.monotonic_ns()
                self._settle(ev.delivery_tag, ev.multiple, ev.ack, now)
            else:
                if other is None:
                    other = []
                other.append(ev)
        if other:
            self.proto.control(other)
        if now:
            self._finish_if_done()
            if not self.stopped and not self.cfg.rate:
                self.pump()

    def _settle(self, tag: int, multiple: bool, ack: bool, now: int) -> None:
        """One basic.ack / basic.nack: count each message it decides once, as confirmed or as nacked.

        ``multiple`` decides every undecided tag up to ``tag``; a single confirm beyond the next undecided
        tag is counted at once and remembered in ``out_of_order`` so that a later range skips it."""
        if tag <= self.acked_upto:
            return
        ooo = self.out_of_order
        if multiple or tag == self.acked_upto + 1:
            skip = [t for t in ooo if t <= tag] if ooo else []
            self._count_upto(tag, ack, now, skip)
            if skip:
                ooo.difference_update(skip)
            while ooo and self.acked_upto + 1 in ooo:  # counted when they came: only move past them
                ooo.discard(self.acked_upto + 1)
                self._count_upto(self.acked_upto + 1, ack, now, [self.acked_upto + 1])
        elif tag not in ooo:
            ooo.add(tag)
            self._count(1, ack, now - self._sent_at(tag))

    def _count(self, n: int, ack: bool, latency: int) -> None:
        stats = self.stats
        if not stats.recording or n <= 0:
            return
        if ack:
            stats.confirmed += n
            lat = stats.confirm_lat
            lat.extend([latency] * n) if n > 1 else lat.append(latency)
        else:
            stats.nacked += n

    def _sent_at(self, tag: int) -> int:
        for first, last, sent in self.batches:  # only for out-of-order confirms (rare): a short scan
            if first <= tag <= last:
                return sent
        return 0

    def _count_upto(self, tag: int, ack: bool, now: int, skip: list[int]) -> None:
        """Count the tags up to ``tag`` not yet decided, except ``skip`` (already counted)."""
        batches = self.batches
        while batches and batches[0][0] <= tag:
            b = batches[0]
            hi = min(b[1], tag)
            n = hi - b[0] + 1
            if skip:
                n -= sum(1 for t in skip if b[0] <= t <= hi)
            self._count(n, ack, now - b[2])
            if hi == b[1]:
                batches.popleft()
            else:
                b[0] = hi + 1
        self.acked_upto = max(self.acked_upto, tag)


class Consumer:
    def __init__(self, proto: ClientProtocol, cfg: BenchConfig, stats: Stats,
                 on_consumed: Callable[[], None] | None = None) -> None:
        self.proto = proto
        self.conn = proto.conn
        self.cfg = cfg
        self.stats = stats
        self.multi = cfg.multi_ack if not cfg.auto_ack else 0
        self.pending = 0
        self.last_tag = 0
        self.on_consumed = on_consumed
        self.loop = asyncio.get_running_loop()
        self._flusher: asyncio.TimerHandle | None = None
        proto.handler = self.on_events

    def on_events(self, events: list[Event]) -> None:
        now = time.monotonic_ns()
        stats = self.stats
        lat = stats.deliver_lat
        n = 0
        tag = 0
        other = None
        single = self.multi == 1
        conn = self.conn
        for ev in events:
            if type(ev) is Delivery:
                n += 1
                tag = ev.delivery_tag  # type: ignore[attr-defined]
                if stats.recording:
                    lat.append(now - _TS(ev.body)[0])  # type: ignore[attr-defined]
                if single:
                    conn.basic_ack(1, tag, False)
            else:
                if other is None:
                    other = []
                other.append(ev)
        if other:
            self.proto.control(other)
        if n:
            if stats.recording:
                stats.consumed += n
            if self.multi > 1:
                self.last_tag = tag
                self.pending += n
                if self.pending >= self.multi:
                    conn.basic_ack(1, tag, True)
                    self.pending = 0
                elif self._flusher is None:
                    self._flusher = self.loop.call_later(ACK_FLUSH_INTERVAL, self._flush_acks)
            if self.on_consumed is not None:
                self.on_consumed()

    def _flush_acks(self) -> None:
        self._flusher = None
        if self.pending:
            self.conn.basic_ack(1, self.last_tag, True)
            self.pending = 0
            self.proto.flush()


async def _open_channel(proto: ClientProtocol) -> None:
    conn = proto.conn
    await proto.call(1, lambda: conn.open_channel(1), commands.Channel.OpenOk)


async def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run one benchmark; returns the result dict (the ``--json`` object)."""
    if cfg.size < STAMP_SIZE:
        raise ValueError(f"--size must be at least {STAMP_SIZE} (the body carries a timestamp + sequence)")
    if cfg.count <= 0 and cfg.duration <= 0:
        raise ValueError("give --duration or --count")
    url = AMQPUrl.parse(cfg.url)
    run_id = uuid.uuid4().hex[:8]
    queues = [f"{cfg.queue_prefix}-{run_id}-{i}" for i in range(cfg.queues)]
    durable = cfg.persistent if cfg.durable_queues is None else cfg.durable_queues
    stats = Stats()
    stats.recording = False
    control = await connect(AMQPUrl.parse(cfg.declare_url) if cfg.declare_url else url, "mailslot-bench-control")
    await _open_channel(control)
    protos: list[ClientProtocol] = []
    producers: list[Producer] = []
    consumers: list[Consumer] = []
    loop = asyncio.get_running_loop()
    total = cfg.count * cfg.producers
    all_consumed = loop.create_future()

    def check_consumed() -> None:
        if total and stats.consumed >= total and not all_consumed.done():
            all_consumed.set_result(None)

    try:
        for q in queues:
            await control.call(1, lambda q=q: control.conn.queue_declare(1, q, durable=durable),  # type: ignore[misc]
                               commands.Queue.DeclareOk)
        if cfg.prepared is not None:
            await cfg.prepared(queues)
        for i in range(cfg.consumers):
            proto = await connect(url, f"mailslot-bench-consumer-{i}")
            protos.append(proto)
            await _open_channel(proto)
            if not cfg.auto_ack and cfg.prefetch:
                await proto.call(1, lambda c=proto.conn: c.basic_qos(1, cfg.prefetch),  # type: ignore[misc]
                                 commands.Basic.QosOk)
            consumers.append(Consumer(proto, cfg, stats, check_consumed if total else None))
            await proto.call(1, partial(proto.conn.basic_consume, 1, queues[i % len(queues)], f"bench-{i}",
                                        no_ack=cfg.auto_ack), commands.Basic.ConsumeOk)
        for i in range(cfg.producers):
            proto = await connect(url, f"mailslot-bench-producer-{i}")
            protos.append(proto)
            await _open_channel(proto)
            if cfg.confirm:
                await proto.call(1, lambda c=proto.conn: c.confirm_select(1),  # type: ignore[misc]
                                 commands.Confirm.SelectOk)
            producers.append(Producer(proto, queues[i % len(queues)], cfg, stats))

        stats.recording = True
        t0 = loop.time()
        for p in producers:
            p.start()
        ticker = asyncio.ensure_future(_progress(cfg, stats, t0))
        lost = [p.lost for p in protos]
        try:
            if cfg.count:
                waits: list[asyncio.Future[Any]] = [p.done for p in producers]
                if cfg.consumers:
                    waits.append(all_consumed)
                done_all = asyncio.gather(*waits)
                await asyncio.wait([done_all, *lost], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
            else:
                await asyncio.wait(lost, timeout=cfg.duration, return_when=asyncio.FIRST_COMPLETED)
        finally:
            elapsed = loop.time() - t0
            stats.recording = False
            ticker.cancel()
            for p in producers:
                p.stop()
        broken = [p.error or "connection lost" for p in protos if p.lost.done()]
        if broken:
            raise RuntimeError(f"a connection broke during the run: {broken[0]}")
    finally:
        await asyncio.gather(*(p.close() for p in protos), return_exceptions=True)
        if cfg.delete_queues and not control.lost.done():
            for q in queues:
                try:
                    await control.call(1, lambda q=q: control.conn.queue_delete(1, q),  # type: ignore[misc]
                                       commands.Queue.DeleteOk, timeout=30)
                except Exception:  # noqa: BLE001 - best effort cleanup
                    break
        await control.close()
    return _result(cfg, stats, elapsed, queues)


def _result(cfg: BenchConfig, stats: Stats, elapsed: float, queues: list[str]) -> dict[str, Any]:
    conf = asdict(cfg)
    conf.pop("progress", None)
    return {
        "config": conf,
        "queues": queues,
        "elapsed_s": round(elapsed, 3),
        "published": stats.published,
        "confirmed": stats.confirmed,
        "nacked": stats.nacked,
        "consumed": stats.consumed,
        "published_per_s": round(stats.published / elapsed, 1),
        "confirmed_per_s": round(stats.confirmed / elapsed, 1),
        "nacked_per_s": round(stats.nacked / elapsed, 1),
        "consumed_per_s": round(stats.consumed / elapsed, 1),
        "confirm_latency_ms": percentiles(stats.confirm_lat),
        "deliver_latency_ms": percentiles(stats.deliver_lat),
    }


async def _progress(cfg: BenchConfig, stats: Stats, t0: float) -> None:
    if cfg.progress is None:
        return
    loop = asyncio.get_running_loop()
    last = (stats.published, stats.confirmed, stats.consumed, len(stats.confirm_lat), len(stats.deliver_lat))
    last_t = t0
    while True:
        await asyncio.sleep(1.0)
        now = loop.time()
        dt = now - last_t
        cur = (stats.published, stats.confirmed, stats.consumed, len(stats.confirm_lat), len(stats.deliver_lat))
        cl = stats.confirm_lat[last[3]:cur[3]]
        dl = stats.deliver_lat[last[4]:cur[4]]
        cfg.progress({
            "elapsed_s": now - t0,
            "published_per_s": (cur[0] - last[0]) / dt,
            "confirmed_per_s": (cur[1] - last[1]) / dt,
            "consumed_per_s": (cur[2] - last[2]) / dt,
            "confirm_p99_ms": percentiles(cl)["p99"],
            "deliver_p99_ms": percentiles(dl)["p99"],
            "published": cur[0], "consumed": cur[2],
        })
        last, last_t = cur, now
