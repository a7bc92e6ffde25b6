"""``mailslot spike``: a traffic spike against a slow consumer, with exact loss/duplicate accounting.

Black Friday: producers push ``rate`` msg/s (persistent, publisher confirms) into one durable queue for
``duration`` seconds while workers process ``worker_rate`` msg/s (paced acks under a prefetch limit). The
backlog builds up in the broker; after the spike the workers keep going until every message the broker
confirmed has been processed (``drain``). Usable from Python:

    result = asyncio.run(run_spike(SpikeConfig(url=..., rate=2000, duration=2, worker_rate=300)))

Every body starts with a 24-octet stamp: send time (``time.monotonic_ns()``), run id, producer index,
sequence number. The sequence number is the producer channel's confirm delivery tag, so
:class:`~mailslot.bench.ledger.Ledger` knows per message whether the broker acked or nacked it and whether
a worker processed it (once, or more): *lost* and *duplicates* are exact. Built on the same sans-IO client
and asyncio glue as ``mailslot bench`` (:mod:`mailslot.bench.driver`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from pamqp import commands

from mailslot.protocols.amqp091.events import Confirm, Delivery, Event

from .driver import AMQPUrl, BenchConnectionError, ClientProtocol, connect
from .ledger import Ledger
from .pacing import TokenBucket, rate_series, split_rate
from .ticker import Ticker

STAMP = struct.Struct(">QIIQ")  # send time (monotonic ns), run id, producer index, sequence number
STAMP_SIZE = STAMP.size
#: how often producers and workers top up from their token buckets, seconds
PRODUCER_TICK = 0.005
WORKER_TICK = 0.01
#: a drain that makes no progress for this long with an empty queue and idle workers has lost messages
STALL_AFTER = 3.0


@dataclass
class SpikeConfig:
    url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    rate: float = 10_000.0  # total publish rate, msg/s
    duration: float = 60.0  # seconds of spike
    worker_rate: float = 500.0  # total processing rate of all workers, msg/s
    workers: int = 4
    producers: int = 2
    size: int = 256
    queue: str = ""  # "" = a fresh mailslot-spike-<id>, deleted at the end
    max_length: int = 0  # > 0: declare with x-max-length and x-overflow: reject-publish
    drain: bool = True  # after the spike keep the workers going until the queue is empty
    drain_rate: float = 0.0  # total worker rate while draining; 0 = worker_rate
    drain_timeout: float = 0.0  # give up draining after this many seconds; 0 = never
    confirm_window: int = 5000  # unconfirmed messages per producer at most
    prefetch: int = 100  # per worker
    pid: int | None = None  # broker process for RSS (psutil)
    sample_interval: float = 0.5
    progress: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)


# ---------------------------------------------------------------------------------------------- producers
class SpikeProducer:
    def __init__(self, index: int, run_id: int, proto: ClientProtocol, queue: str, rate: float, cfg: SpikeConfig,
                 ledger: Ledger) -> None:
        self.index = index
        self.run_id = run_id
        self.proto = proto
        self.conn = proto.conn
        self.ledger = ledger
        self.window = cfg.confirm_window
        self.loop = asyncio.get_running_loop()
        props = commands.Basic.Properties(delivery_mode=2)
        self.template = self.conn.publish_template(1, "", queue, b"\x00" * cfg.size, properties=props,
                                                   stamp_size=STAMP_SIZE)
        self.bucket = TokenBucket(rate, self.loop.time(), burst=0.1)
        self.seq = 0
        self.decided = 0  # acked + nacked
        self.stopped = False
        self.done: asyncio.Future[None] = self.loop.create_future()
        self._ticker = Ticker(PRODUCER_TICK, self.pump)
        proto.handler = self.on_events
        proto.on_resume = self.pump

    def start(self) -> None:
        self.bucket = TokenBucket(self.bucket.rate, self.loop.time(), burst=self.bucket.burst)
        self._ticker.start()

    def stop(self) -> None:
        self.stopped = True
        self._ticker.stop()
        self._check_done()

    def pump(self) -> None:
        if self.stopped or self.proto.paused:
            return
        n = self.bucket.take(self.loop.time(), self.window - (self.seq - self.decided))
        if n <= 0:
            return
        now = time.monotonic_ns()
        pack = STAMP.pack
        run, idx = self.run_id, self.index
        first = self.seq + 1
        self.seq = self.conn.publish_stamped(self.template, [pack(now, run, idx, s) for s in range(first, first + n)])
        self.ledger.on_publish(idx, self.seq)
        self.proto.flush()

    def _check_done(self) -> None:
        if self.stopped and self.decided >= self.seq and not self.done.done():
            self.done.set_result(None)

    def on_events(self, events: list[Event]) -> None:
        other = None
        confirmed = False
        ledger, idx = self.ledger, self.index
        for ev in events:
            if type(ev) is Confirm:
                self.decided += ledger.on_confirm(idx, ev.delivery_tag, ev.multiple, ev.ack)
                confirmed = True
            else:
                if other is None:
                    other = []
                other.append(ev)
        if other:
            self.proto.control(other)
        if confirmed and self.stopped:
            self._check_done()


# ---------------------------------------------------------------------------------------------- workers
class Worker:
    """Consumes with a prefetch limit and processes (acks) at a paced rate: the broker sends at most
    ``prefetch`` unacked messages, so the worker's ack rate is the queue's drain rate."""

    def __init__(self, proto: ClientProtocol, rate: float, run_id: int, ledger: Ledger) -> None:
        self.proto = proto
        self.conn = proto.conn
        self.run_id = run_id
        self.ledger = ledger
        self.loop = asyncio.get_running_loop()
        self.bucket = TokenBucket(rate, self.loop.time(), burst=0.05)
        self.buffer: deque[tuple[int, int, int, int]] = deque()  # (delivery tag, producer, seq, send ns)
        self.processed = 0
        self.foreign = 0  # messages of another run or another client: processed, not accounted
        self.max_wait_ns = 0  # longest publish -> processed time
        self.last_progress = self.loop.time()
        self.stopped = False
        self._ticker = Ticker(WORKER_TICK, self._process)
        proto.handler = self.on_events

    def start(self) -> None:
        self.bucket = TokenBucket(self.bucket.rate, self.loop.time(), burst=self.bucket.burst)
        self._ticker.start()

    def set_rate(self, rate: float) -> None:
        self.bucket.set_rate(rate, self.loop.time())

    def stop(self) -> None:
        self.stopped = True
        self._ticker.stop()

    def on_events(self, events: list[Event]) -> None:
        other = None
        buf = self.buffer
        unpack = STAMP.unpack_from
        for ev in events:
            if type(ev) is Delivery:
                body = ev.body  # type: ignore[attr-defined]
                if len(body) >= STAMP_SIZE:
                    ts, run, p, seq = unpack(body)
                    if run != self.run_id:
                        p = -1
                else:
                    ts, p, seq = 0, -1, 0
                buf.append((ev.delivery_tag, p, seq, ts))  # type: ignore[attr-defined]
            else:
                if other is None:
                    other = []
                other.append(ev)
        if other:
            self.proto.control(other)

    def _process(self) -> None:
        """Ack what the paced rate allows of the buffered deliveries."""
        buf = self.buffer
        n = self.bucket.take(self.loop.time(), len(buf)) if buf else 0
        if n:
            now = time.monotonic_ns()
            on_delivered = self.ledger.on_delivered
            tag = 0
            for _ in range(n):
                tag, p, seq, ts = buf.popleft()
                if p < 0:
                    self.foreign += 1
                    continue
                on_delivered(p, seq)
                self.max_wait_ns = max(self.max_wait_ns, now - ts)
            self.processed += n
            self.conn.basic_ack(1, tag, True)  # deliveries of one channel come in tag order
            self.proto.flush()
            self.last_progress = self.loop.time()
        else:
            self.bucket.take(self.loop.time(), 0)  # keep the clock moving; credit stays capped


# ---------------------------------------------------------------------------------------------- monitors
class DepthPoller:
    """Queue depth (ready messages) by a passive queue.declare on a side connection every ``interval``."""

    def __init__(self, proto: ClientProtocol, queue: str, interval: float) -> None:
        self.proto = proto
        self.queue = queue
        self.interval = interval
        self.depth: int | None = None
        self.error: str | None = None

    async def poll_once(self, timeout: float = 5.0) -> int | None:
        conn = self.proto.conn
        try:
            ok = await self.proto.call(1, lambda: conn.queue_declare(1, self.queue, passive=True),
                                       commands.Queue.DeclareOk, timeout=timeout)
        except (BenchConnectionError, TimeoutError) as exc:
            self.error = str(exc) or type(exc).__name__
            if "channel closed" in self.error and not self.proto.lost.done():
                with contextlib.suppress(Exception):
                    await _open_channel(self.proto)
            return self.depth
        self.depth = int(ok.message_count)
        return self.depth


class RssSampler:
    def __init__(self, pid: int | None) -> None:
        self.process: Any = None
        self.gone = False
        if pid:
            import psutil

            try:
                self.process = psutil.Process(pid)
            except psutil.Error:
                self.gone = True

    def sample(self) -> int | None:
        if self.process is None:
            return None
        try:
            return int(self.process.memory_info().rss)
        except Exception:  # noqa: BLE001 - psutil.NoSuchProcess / AccessDenied: the broker went away
            self.gone = True
            self.process = None
            return None


# ---------------------------------------------------------------------------------------------- the run
async def _open_channel(proto: ClientProtocol) -> None:
    conn = proto.conn
    await proto.call(1, lambda: conn.open_channel(1), commands.Channel.OpenOk)


def queue_arguments(max_length: int) -> dict[str, Any] | None:
    if max_length <= 0:
        return None
    return {"x-max-length": max_length, "x-overflow": "reject-publish"}


class _Run:
    """State of one spike: the connections, the samples, the phase."""

    def __init__(self, cfg: SpikeConfig, queue: str, ledger: Ledger, depth: DepthPoller, rss: RssSampler) -> None:
        self.cfg = cfg
        self.queue = queue
        self.ledger = ledger
        self.depth = depth
        self.rss = rss
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.phase = "setup"
        self.workers: list[Worker] = []
        self.samples: list[dict[str, Any]] = []
        self.at_spike_end = (0, 0)  # (published, processed) when the producers stopped

    def processed(self) -> int:
        return sum(w.processed - w.foreign for w in self.workers)

    def sample(self) -> dict[str, Any]:
        t = self.loop.time() - self.t0
        led = self.ledger
        s: dict[str, Any] = {
            "t": round(t, 3), "phase": self.phase, "published": led.published, "confirmed": led.acked,
            "rejected": led.nacked, "delivered": led.delivered + led.duplicates, "depth": self.depth.depth,
            "rss": self.rss.sample(),
        }
        self.samples.append(s)
        recent = self.samples[-8:]
        times = [x["t"] for x in recent]
        for key, name in (("published", "publish_rate"), ("confirmed", "confirm_rate"),
                          ("rejected", "reject_rate"), ("delivered", "deliver_rate")):
            s[name] = round(rate_series(times, [x[key] for x in recent])[-1], 1)
        return s

    async def sampler(self) -> None:
        """Every ``sample_interval``: poll the queue depth (so depth and counters are of the same moment),
        sample, report progress."""
        interval = self.cfg.sample_interval
        next_at = self.loop.time()
        while True:
            await self.depth.poll_once(timeout=max(interval, 2.0))
            s = self.sample()
            if self.cfg.progress is not None:
                self.cfg.progress({**s, "requested_rate": self.cfg.rate if self.phase == "spike" else 0.0,
                                   "queue": self.queue})
            next_at += interval
            if next_at <= self.loop.time():
                next_at = self.loop.time() + interval  # fell behind (a slow depth reply): no burst of samples
            await asyncio.sleep(next_at - self.loop.time())


async def run_spike(cfg: SpikeConfig) -> dict[str, Any]:
    """Run one spike (and drain); returns the result dict (report + time series)."""
    if cfg.size < STAMP_SIZE:
        raise ValueError(f"--size must be at least {STAMP_SIZE} (the body carries a stamp: time, run, producer, seq)")
    if cfg.duration <= 0 or cfg.rate <= 0:
        raise ValueError("--rate and --duration must be > 0")
    if cfg.producers < 1 or cfg.workers < 1:
        raise ValueError("--producers and --workers must be >= 1")
    url = AMQPUrl.parse(cfg.url)
    run_id = int.from_bytes(os.urandom(4), "big")
    own_queue = not cfg.queue
    queue = cfg.queue or f"mailslot-spike-{uuid.uuid4().hex[:8]}"
    ledger = Ledger(cfg.producers)
    loop = asyncio.get_running_loop()
    control = await connect(url, "mailslot-spike-control")
    protos: list[ClientProtocol] = []
    producers: list[SpikeProducer] = []
    tasks: list[asyncio.Future[Any]] = []
    spike_end = drained_at = None
    confirm_wait_s = 0.0
    drain_result = "off"
    rss = RssSampler(cfg.pid)
    run: _Run | None = None
    try:
        await _open_channel(control)
        await control.call(1, lambda: control.conn.queue_declare(1, queue, durable=True,
                                                                 arguments=queue_arguments(cfg.max_length)),
                           commands.Queue.DeclareOk)
        depth = DepthPoller(control, queue, cfg.sample_interval)
        run = _Run(cfg, queue, ledger, depth, rss)
        for i, r in enumerate(split_rate(cfg.worker_rate, cfg.workers)):
            proto = await connect(url, f"mailslot-spike-worker-{i}")
            protos.append(proto)
            await _open_channel(proto)
            await proto.call(1, lambda c=proto.conn: c.basic_qos(1, cfg.prefetch),  # type: ignore[misc]
                             commands.Basic.QosOk)
            run.workers.append(Worker(proto, r, run_id, ledger))
            await proto.call(1, lambda c=proto.conn, i=i: c.basic_consume(1, queue, f"spike-worker-{i}"),  # type: ignore[misc]
                             commands.Basic.ConsumeOk)
        for i, r in enumerate(split_rate(cfg.rate, cfg.producers)):
            proto = await connect(url, f"mailslot-spike-producer-{i}")
            protos.append(proto)
            await _open_channel(proto)
            await proto.call(1, lambda c=proto.conn: c.confirm_select(1),  # type: ignore[misc]
                             commands.Confirm.SelectOk)
            producers.append(SpikeProducer(i, run_id, proto, queue, r, cfg, ledger))
        await depth.poll_once()
        rss_start = rss.sample()

        # ---------------------------------------------------------------- spike
        run.t0 = loop.time()
        run.phase = "spike"
        tasks.append(asyncio.ensure_future(run.sampler()))
        for w in run.workers:
            w.start()
        for p in producers:
            p.start()
        lost = [p.lost for p in (*protos, control)]
        await asyncio.wait(lost, timeout=cfg.duration, return_when=asyncio.FIRST_COMPLETED)
        for p in producers:
            p.stop()
        spike_end = loop.time()
        run.at_spike_end = (ledger.published, run.processed())
        _check_connections(protos, control)
        # the last confirms: every publish is acked or nacked before the drain starts
        confirms: asyncio.Future[Any] = asyncio.gather(*(p.done for p in producers))
        waits: list[asyncio.Future[Any]] = [confirms, *lost]
        await asyncio.wait(waits, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        confirm_wait_s = loop.time() - spike_end
        _check_connections(protos, control)

        # ---------------------------------------------------------------- drain
        if cfg.drain:
            run.phase = "drain"
            if cfg.drain_rate > 0:
                for w, r in zip(run.workers, split_rate(cfg.drain_rate, cfg.workers), strict=True):
                    w.set_rate(r)
            drain_result = await _drain(run, cfg, spike_end, lost)
            if drain_result == "drained":
                drained_at = loop.time()
            _check_connections(protos, control)
        await depth.poll_once()
        run.sample()
        end = loop.time()
    finally:
        for t in tasks:
            t.cancel()
        for p in producers:
            p.stop()
        if run is not None:
            for w in run.workers:
                w.stop()
        await asyncio.gather(*(p.close() for p in protos), return_exceptions=True)
        if own_queue and not control.lost.done():
            with contextlib.suppress(Exception):
                await control.call(1, lambda: control.conn.queue_delete(1, queue), commands.Queue.DeleteOk,
                                   timeout=30)
        await control.close()
    return _result(cfg, queue, run, spike_end, confirm_wait_s, drained_at, end, drain_result, rss_start)


def _check_connections(protos: list[ClientProtocol], control: ClientProtocol) -> None:
    broken = [p.error or "connection lost" for p in (*protos, control) if p.lost.done()]
    if broken:
        raise RuntimeError(f"a connection broke during the spike: {broken[0]}")


async def _drain(run: _Run, cfg: SpikeConfig, spike_end: float, lost: list[asyncio.Future[None]]) -> str:
    """Until every broker-acked message is processed ("drained"), or the queue is empty and nothing moved
    for STALL_AFTER seconds ("stalled": messages lost), or the drain timeout ("timeout")."""
    loop = run.loop
    while True:
        if run.ledger.drained:
            return "drained"
        if any(f.done() for f in lost):
            return "broken"
        now = loop.time()
        if cfg.drain_timeout and now - spike_end > cfg.drain_timeout:
            return "timeout"
        idle = all(not w.buffer for w in run.workers)
        last = max(w.last_progress for w in run.workers)
        if idle and run.depth.depth == 0 and now - max(last, spike_end) > STALL_AFTER:
            return "stalled"
        await asyncio.sleep(0.02)


def _result(cfg: SpikeConfig, queue: str, run: _Run | None, spike_end: float | None, confirm_wait_s: float,
            drained_at: float | None, end: float, drain_result: str, rss_start: int | None) -> dict[str, Any]:
    assert run is not None and spike_end is not None
    summ = run.ledger.summary()
    samples = run.samples
    spike_s = spike_end - run.t0
    depths = [s["depth"] for s in samples if s["depth"] is not None]
    rsss = [s["rss"] for s in samples if s["rss"] is not None]
    pub_spike, del_spike = run.at_spike_end
    drain_s = drained_at - spike_end if drained_at is not None else None
    drained_count = summ.delivered + summ.duplicates - del_spike
    conf = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "progress"}
    report = {
        "queue": queue,
        "requested_rate": cfg.rate,
        "requested_worker_rate": cfg.worker_rate,
        "spike_s": round(spike_s, 3),
        "published": summ.published,
        "confirmed": summ.confirmed,
        "rejected": summ.rejected,
        "unconfirmed": summ.unconfirmed,
        "delivered": summ.delivered,
        "duplicates": summ.duplicates,
        # lost is only known once the queue is drained (or provably empty): otherwise they may still be queued
        "lost": summ.lost if drain_result in ("drained", "stalled") else None,
        "unprocessed": summ.lost,
        "lost_sample": summ.lost_sample if drain_result in ("drained", "stalled") else [],
        "delivered_rejected": summ.delivered_rejected,
        "delivered_unconfirmed": summ.delivered_unconfirmed,
        "foreign": sum(w.foreign for w in run.workers),
        "reached_publish_rate": round(pub_spike / spike_s, 1) if spike_s > 0 else 0.0,
        "reached_deliver_rate": round(del_spike / spike_s, 1) if spike_s > 0 else 0.0,
        "drain_deliver_rate": round(drained_count / drain_s, 1) if drain_s else None,
        "confirm_wait_s": round(confirm_wait_s, 3),
        "peak_depth": max(depths) if depths else None,
        "final_depth": run.depth.depth,
        "rss_start": rss_start,
        "peak_rss": max(rsss) if rsss else None,
        "drain": drain_result,
        "time_to_drain_s": round(drain_s, 3) if drain_s is not None else None,
        "max_wait_s": round(max((w.max_wait_ns for w in run.workers), default=0) / 1e9, 3),
        "elapsed_s": round(end - run.t0, 3),
    }
    return {"config": conf, "report": report, "series": samples, "spike_end_t": round(spike_s, 3),
            "drained_t": round(drained_at - run.t0, 3) if drained_at is not None else None}
