"""Chaos runs of the worker guarantees: N keyed messages through a worker subprocess
(:mod:`mailslot.bench.chaos_worker`) whose effect is a row in SQLite or PostgreSQL, while the worker is
SIGKILLed at random points and the broker (a subprocess on the segments store) is SIGKILLed and restarted,
and the producer republishes, with the same keys, whatever was not confirmed.

Kill points are random fractions of the queue's progress (messages taken off it), so every kill lands
while messages are in flight however fast the worker runs. One extra crash is forced at the worst point for
the guarantee (see chaos_worker) so its characteristic outcome shows in every run.

Cluster mode (``cluster=N``): the broker is N nodes of ``mailslot serve --store postgres --cluster`` on a
schema of their own (:mod:`mailslot.bench.chaos_cluster`); the producer and the worker get every node's URL
and reconnect to another node when theirs dies. The broker kills then SIGKILL one node each, in turn the
owner of the queue and the node the
worker is connected to while another node owns the queue (its consumer is served through that node); the
producer's kill hits the owner. Every other owner kill waits for a takeover before restarting the owner.

Counting, per key: lost = keys with no effect; duplicate keys = keys with more than one effect. Each
publish attempt carries an ``attempt`` header, so a duplicate made by a producer retry (two messages with one
key) is told from a duplicate made by the worker (one message handled twice): ``worker_duplicates`` counts
(key, attempt) pairs with more than one effect. Redeliveries = inbox hits (the worker logs each) + effects
written by a redelivered message.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mailslot.client
from mailslot.bench.broker_process import BrokerProcess
from mailslot.bench.chaos_cluster import ChaosCluster
from mailslot.worker import DEDUP_HEADER, Guarantee

QUEUE = "chaos"


@dataclass
class ChaosConfig:
    guarantee: Guarantee
    workdir: Path
    n: int = 1000
    worker_kills: int = 20
    broker_kills: int = 3
    db: str = "sqlite"  # or "postgres"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/test"
    concurrency: int = 16
    seed: int = 0
    forced_crash: bool = True
    queue_arguments: dict[str, Any] | None = None  # e.g. broker-side deduplication
    publish_seconds: float = 3.0  # the producer spreads its publishes over this long (so broker kills hit it)
    timeout: float = 600.0
    cluster: int = 0  # 0: one broker on the segments store; N >= 2: N cluster nodes on PostgreSQL (postgres_dsn)
    lease_ttl: float = 2.0  # cluster mode: the nodes' --lease-ttl


@dataclass
class ChaosResult:
    guarantee: str
    db: str
    n: int
    effects: int = 0
    lost: int = 0
    duplicate_keys: int = 0
    worker_duplicates: int = 0
    redeliveries: int = 0
    inbox_hits: int = 0
    worker_kills: int = 0
    broker_kills: int = 0
    producer_retries: int = 0
    nodes: int = 0  # cluster mode: how many nodes
    takeovers: int = 0  # cluster mode: changes of the queue's owner seen in the lease table
    owner_kills: int = 0  # cluster mode: broker kills that hit the queue's owner
    worker_node_kills: int = 0  # cluster mode: ... that hit the node serving the worker, not the owner
    seconds: float = 0.0
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (t, messages taken off the queue)
    kill_times: list[tuple[float, str]] = field(default_factory=list)
    node_errors: list[str] = field(default_factory=list)  # cluster mode: ERROR lines the nodes logged

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("timeline", "kill_times", "node_errors")}


class _Effects:
    def __init__(self, cfg: ChaosConfig, tag: str) -> None:
        self.cfg = cfg
        if cfg.db == "sqlite":
            self.path = cfg.workdir / "effects.db"
            self.table = "effects"
            self.prefix = "mailslot_"
            self.spec = f"sqlite:{self.path}"
        else:
            self.table = f"chaos_{tag}_effects"
            self.prefix = f"chaos_{tag}_"
            self.spec = f"postgres:{cfg.postgres_dsn}"

    def _connect(self) -> Any:
        if self.cfg.db == "sqlite":
            return sqlite3.connect(self.path, isolation_level=None, timeout=60)
        import psycopg

        return psycopg.connect(self.cfg.postgres_dsn, autocommit=True)

    def create(self) -> None:
        conn = self._connect()
        try:
            if self.cfg.db == "sqlite":
                conn.execute("PRAGMA journal_mode=WAL")
            else:
                for t in (self.table, f"{self.prefix}inbox", f"{self.prefix}outbox"):
                    conn.execute(f"DROP TABLE IF EXISTS {t}")
            conn.execute(f"CREATE TABLE {self.table} (key TEXT, attempt INTEGER, redelivered INTEGER)")
        finally:
            conn.close()

    def count(self) -> int:
        conn = self._connect()
        try:
            return int(conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])
        finally:
            conn.close()

    def tally(self, result: ChaosResult, keys: list[str]) -> None:
        conn = self._connect()
        try:
            per_key = dict(conn.execute(f"SELECT key, count(*) FROM {self.table} GROUP BY key").fetchall())
            result.worker_duplicates = int(conn.execute(
                f"SELECT count(*) FROM (SELECT key, attempt FROM {self.table} GROUP BY key, attempt "
                "HAVING count(*) > 1) d").fetchone()[0])
            result.redeliveries += int(conn.execute(
                f"SELECT count(*) FROM {self.table} WHERE redelivered = 1").fetchone()[0])
        finally:
            conn.close()
        result.effects = sum(per_key.values())
        result.lost = sum(1 for k in keys if per_key.get(k, 0) == 0)
        result.duplicate_keys = sum(1 for c in per_key.values() if c > 1)

    def drop(self) -> None:
        if self.cfg.db == "postgres":
            conn = self._connect()
            try:
                for t in (self.table, f"{self.prefix}inbox", f"{self.prefix}outbox"):
                    conn.execute(f"DROP TABLE IF EXISTS {t}")
            finally:
                conn.close()


class _WorkerProcess:
    def __init__(self, cfg: ChaosConfig, urls: Callable[[], list[str]], effects: _Effects, crash_key: str | None) -> None:
        self.cfg = cfg
        self.urls = urls  # the broker's URL, or the cluster's nodes in the order this start tries them
        self.effects = effects
        self.crash_key = crash_key
        self.log_path = cfg.workdir / "worker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, urls: list[str] | None = None) -> None:
        args = [sys.executable, "-m", "mailslot.bench.chaos_worker", "--queue", QUEUE,
                "--guarantee", self.cfg.guarantee.value, "--db", self.effects.spec, "--table", self.effects.table,
                "--inbox-prefix", self.effects.prefix, "--concurrency", str(self.cfg.concurrency),
                "--marker", str(self.cfg.workdir / "crash.marker")]
        if self.crash_key:
            args += ["--crash-key", self.crash_key]
        for url in urls or self.urls():
            args += ["--url", url]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def inbox_hits(self) -> int:
        return self.log_path.read_text(errors="replace").count("already processed")


class _Producer:
    """Publishes every key with confirms; what a broker kill leaves unconfirmed is published again."""

    def __init__(self, urls: list[str], keys: list[str], queue_arguments: dict[str, Any] | None, seconds: float) -> None:
        self.urls = urls
        self.seconds = seconds
        self.keys = keys
        self.queue_arguments = queue_arguments
        self.confirmed = 0
        self.retries = 0
        self.done = False
        self.kill_at: int | None = None  # kill the broker while the window holding this index is in flight
        self.kill: Callable[[], Awaitable[None]] | None = None

    async def run(self) -> None:
        conn = await mailslot.client.connect(self.urls, reconnect=True, reconnect_max_delay=0.5)
        try:
            ch = await conn.channel()
            await ch.declare_queue(QUEUE, arguments=self.queue_arguments)
            await ch.confirm_select()
            pending = list(self.keys)
            attempt = 0
            window = 50
            pause = self.seconds * window / max(1, len(self.keys))
            while pending:
                failed: list[str] = []
                for i in range(0, len(pending), window):
                    chunk = pending[i:i + window]
                    sending = asyncio.gather(*(ch.publish(
                        "", QUEUE, key.encode(), headers={DEDUP_HEADER: key, "attempt": attempt}, message_id=key)
                        for key in chunk), return_exceptions=True)
                    if self.kill is not None and self.kill_at is not None and i <= self.kill_at < i + window:
                        self.kill_at = None
                        await asyncio.sleep(0)  # the window goes on the wire; its confirms are yet to come
                        await self.kill()
                    results = await sending
                    for key, r in zip(chunk, results, strict=True):
                        if isinstance(r, BaseException):
                            failed.append(key)
                        else:
                            self.confirmed += 1
                    await asyncio.sleep(pause)
                if failed:
                    self.retries += len(failed)
                    attempt += 1
                    await conn.wait_ready()
                    await asyncio.sleep(0.05)  # a queue whose owner died is nacked until it is taken over
                pending = failed
        finally:
            self.done = True
            with contextlib.suppress(Exception):
                await conn.close()


class _Monitor:
    """Reads the queue's depth over one reconnecting connection."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.ch: Any = None

    async def depth(self, url: str | list[str]) -> int | None:
        """Ready messages in the queue, or None while the broker is unreachable."""
        try:
            if self.conn is None:
                self.conn = await asyncio.wait_for(mailslot.client.connect(url, reconnect=True,
                                                                           reconnect_max_delay=0.3), 2)
                self.ch = await self.conn.channel()
            if not self.conn.is_open:
                return None
            _n, count, _c = await asyncio.wait_for(self.ch.declare_queue(QUEUE, passive=True), 2)
            return int(count)
        except Exception:  # noqa: BLE001 - broker down or restarting: no reading this time
            if self.ch is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ch.reopen(), 2)
            return None

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), 5)


async def run_chaos(cfg: ChaosConfig, progress: Callable[[ChaosResult, int], None] | None = None) -> ChaosResult:
    """One run; ``progress(result, taken)`` is called as messages are taken off the queue."""
    rng = random.Random(cfg.seed)
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{cfg.guarantee.value.replace('-', '_')}_{cfg.seed}"
    result = ChaosResult(cfg.guarantee.value, cfg.db, cfg.n, nodes=cfg.cluster)
    keys = [f"m-{i}" for i in range(cfg.n)]
    effects = _Effects(cfg, tag)
    effects.create()
    crash_key = keys[cfg.n // 3] if cfg.forced_crash else None
    # Kill points: fractions of the queue's progress. The first broker kill falls in the publishing.
    worker_points = sorted(rng.uniform(0.02, 0.9) for _ in range(cfg.worker_kills))
    broker_points = sorted(rng.uniform(0.1, 0.85) for _ in range(max(0, cfg.broker_kills - 1)))
    brokers: _Broker | ChaosCluster = ChaosCluster(cfg, rng, result, QUEUE) if cfg.cluster else _Broker(cfg, rng, result)
    brokers.start()
    worker = _WorkerProcess(cfg, brokers.worker_urls, effects, crash_key)
    producer = _Producer(brokers.urls, keys, cfg.queue_arguments, cfg.publish_seconds)
    monitor = _Monitor()
    if cfg.broker_kills:
        producer.kill_at = int(rng.uniform(0.2, 0.7) * cfg.n)
        producer.kill = lambda: kill_broker(owner=True)
    start = time.monotonic()
    deadline = start + cfg.timeout

    def now() -> float:
        return time.monotonic() - start

    broker_lock = asyncio.Lock()  # the producer's kill and the main loop's must not overlap

    async def kill_broker(owner: bool) -> None:
        async with broker_lock:
            what = await brokers.kill_and_restart(owner, worker, lambda what: result.kill_times.append((now(), what)))
            result.broker_kills += 1
            if what == "worker":  # the worker was moved to another node first: a worker kill too
                result.worker_kills += 1

    try:
        worker.start()
        producing = asyncio.ensure_future(producer.run())
        taken = 0
        idle_since: float | None = None
        owner_next = False  # the producer's kill hits the owner, then the worker's node and the owner in turn
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"chaos run did not finish in {cfg.timeout:.0f} s: {result.row()}")
            await asyncio.sleep(0.02)
            if producing.done() and producing.exception() is not None:
                raise producing.exception()  # type: ignore[misc]
            depth = await monitor.depth(brokers.urls)
            if depth is None:
                continue
            await brokers.observe()
            taken = max(taken, producer.confirmed - depth)
            result.timeline.append((now(), taken))
            if progress is not None:
                progress(result, taken)
            if worker_points and taken >= worker_points[0] * cfg.n:
                worker_points.pop(0)
                await asyncio.sleep(rng.uniform(0.0, 0.05))
                worker.kill()
                result.worker_kills += 1
                result.kill_times.append((now(), "worker"))
                worker.start()
                continue
            if broker_points and taken >= broker_points[0] * cfg.n:
                broker_points.pop(0)
                await kill_broker(owner=owner_next)
                owner_next = not owner_next
                continue
            if not worker.alive():  # the forced crash
                result.kill_times.append((now(), "forced"))
                worker.start()
                continue
            done_killing = not worker_points and not broker_points and producer.kill_at is None
            if done_killing and producer.done and depth == 0:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 1.0:
                    worker.terminate()  # graceful: unacked messages go back to the queue
                    if await monitor.depth(brokers.urls) == 0:
                        break
                    worker.start()
                    idle_since = None
            else:
                idle_since = None
        await producing
        result.seconds = now()
        result.producer_retries = producer.retries
        result.inbox_hits = worker.inbox_hits()
        result.redeliveries = result.inbox_hits
        effects.tally(result, keys)
        return result
    finally:
        worker.kill()
        await monitor.close()
        brokers.stop()
        with contextlib.suppress(Exception):
            effects.drop()


class _Broker:
    """One broker process on the segments store, SIGKILLed and restarted on its data."""

    def __init__(self, cfg: ChaosConfig, rng: random.Random, result: ChaosResult) -> None:
        self.rng = rng
        self.process = BrokerProcess(store="segments", data_dir=cfg.workdir / "broker")

    def start(self) -> None:
        self.process.start()

    @property
    def urls(self) -> list[str]:
        return [self.process.url]

    def worker_urls(self) -> list[str]:
        return self.urls

    async def observe(self) -> None:
        pass

    async def kill_and_restart(self, owner: bool, worker: _WorkerProcess, log: Callable[[str], None]) -> str:
        self.process.kill()
        log("broker")
        await asyncio.sleep(self.rng.uniform(0.0, 0.3))
        await asyncio.to_thread(self.process.start)
        return "broker"

    def stop(self) -> None:
        self.process.stop()


COLUMNS = [("guarantee", "guarantee"), ("db", "db"), ("n", "N"), ("effects", "effects"), ("lost", "lost"),
           ("duplicate_keys", "dup keys"), ("worker_duplicates", "dup by worker"), ("redeliveries", "redeliveries"),
           ("worker_kills", "worker kills"), ("broker_kills", "broker kills"), ("producer_retries", "producer retries"),
           ("seconds", "seconds")]
CLUSTER_COLUMNS = [("inbox_hits", "inbox hits"), ("nodes", "nodes"), ("owner_kills", "owner kills"), ("worker_node_kills", "worker's node kills"),
                   ("takeovers", "takeovers")]


def table(results: list[ChaosResult]) -> str:
    """The results side by side as a Markdown table."""
    columns = COLUMNS[:-1] + CLUSTER_COLUMNS + COLUMNS[-1:] if any(r.nodes for r in results) else COLUMNS
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" if k in ("guarantee", "db") else "---:" for k, _ in columns) + "|"
    rows = []
    for r in results:
        cells = [f"{getattr(r, k):.1f}" if k == "seconds" else str(getattr(r, k)) for k, _ in columns]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows])
