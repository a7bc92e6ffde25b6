"""The brokers of a chaos run in cluster mode (:mod:`mailslot.bench.chaos`): ``count`` nodes of
``mailslot serve --store postgres --cluster`` on a PostgreSQL schema of their own (made here, dropped at
the end), linked over Unix sockets so a client can use the queue from any node (:class:`ClusterNodes`),
and which node each broker kill of the run SIGKILLs (:class:`ChaosCluster`): in turn the owner of the
work queue (another node takes it over, or it is restarted at once) and the node the worker is on.

The owner and its lease epoch are read from the ``leases`` table, the source of truth for ownership; a
takeover is counted when the owner of the queue changes to another node. The worker's node is read from
each node's ``/api/connections`` (the worker names its connection ``mailslot.worker ...``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mailslot.bench.broker_process import BrokerProcess

if TYPE_CHECKING:
    from mailslot.bench.chaos import ChaosConfig, ChaosResult


class WorkerProcess(Protocol):
    """The chaos run's worker process, as the kills here use it."""

    def kill(self) -> None: ...

    def start(self, urls: list[str] | None = None) -> None: ...


class _Node(BrokerProcess):
    """A node whose log lines at ERROR (and tracebacks) are kept for the run's report, the rest dropped
    as BrokerProcess does (its pipe must never fill up)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors: list[str] = []

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        in_error = False  # the lines of an ERROR record (its traceback) up to the next record
        for line in self.process.stdout:
            if line[:1].isdigit():  # a new record starts with its time
                in_error = " ERROR " in line or " CRITICAL " in line
            if in_error or "Traceback" in line:
                self.errors.append(line.rstrip())
            self.output.append(line)
            del self.output[:-200]


class ClusterNodes:
    def __init__(self, workdir: Path, count: int, dsn: str, queue: str, lease_ttl: float = 2.0) -> None:
        if count < 2:
            raise ValueError("a cluster run needs at least 2 nodes")
        self.dsn = dsn
        self.queue = queue
        self.lease_ttl = lease_ttl
        self.schema = f"mailslot_chaos_{uuid.uuid4().hex[:12]}"
        secret = secrets.token_hex(16)
        self.names = [f"n{i + 1}" for i in range(count)]
        self.nodes = {
            name: _Node(store="postgres", data_dir=workdir / name, extra_args=(
                "--postgres-dsn", dsn, "--postgres-schema", self.schema, "--node-name", name, "--cluster",
                "--lease-ttl", str(lease_ttl), "--cluster-link", f"unix:{workdir}/{name}.sock",
                "--cluster-secret", secret))
            for name in self.names
        }
        self.takeovers = 0
        self._lease: tuple[str, int] | None = None  # (owner, epoch) last read
        self._db: Any = None  # the connection the lease is read on (read often: kept open)

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes.values()]  # a restarted node keeps its port

    def live(self) -> list[str]:
        return [name for name, node in self.nodes.items() if node.alive()]

    # ------------------------------------------------------------------ who owns, who serves the worker
    @property
    def owner(self) -> str | None:
        """The queue's owner as last read by :meth:`lease`."""
        return self._lease[0] if self._lease else None

    def lease(self) -> tuple[str, int] | None:
        """(owner, epoch) of the work queue's lease, counting a takeover when the owner changed."""
        import psycopg
        from psycopg import sql

        if self._db is None or self._db.closed:
            self._db = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
        row = self._db.execute(sql.SQL("SELECT owner, epoch FROM {}.leases WHERE position(%s in queue) > 0").format(
            sql.Identifier(self.schema)), (self.queue.encode(),)).fetchone()
        if row is None:
            return None
        lease = (str(row[0]), int(row[1]))
        if self._lease is not None and lease[0] != self._lease[0]:
            self.takeovers += 1
        self._lease = lease
        return lease

    def worker_node(self) -> str | None:
        """The live node a ``mailslot.worker`` connection is open on (None: none right now)."""
        for name in self.live():
            node = self.nodes[name]
            try:
                connections = _get_json(node.http_url + "/api/connections")
            except OSError:
                continue
            for c in connections:
                if str((c.get("client_properties") or {}).get("connection_name", "")).startswith("mailslot.worker"):
                    return name
        return None

    def errors(self) -> list[str]:
        """ERROR lines and tracebacks the nodes logged (after their start)."""
        return [f"{name}: {line}" for name, node in self.nodes.items() for line in node.errors]

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        if self._db is not None:
            self._db.close()
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))


class ChaosCluster:
    """Cluster nodes on PostgreSQL: each kill SIGKILLs one node, the queue's owner or the worker's node."""

    def __init__(self, cfg: ChaosConfig, rng: random.Random, result: ChaosResult, queue: str) -> None:
        self.rng = rng
        self.result = result
        self.nodes = ClusterNodes(cfg.workdir, cfg.cluster, cfg.postgres_dsn, queue, cfg.lease_ttl)
        self.lease_ttl = cfg.lease_ttl

    def start(self) -> None:
        self.nodes.start()

    @property
    def urls(self) -> list[str]:
        return self.nodes.urls

    def worker_urls(self) -> list[str]:
        """Every node, from a random one on: each worker start lands on some node, owner or not."""
        urls = self.nodes.urls
        first = self.rng.randrange(len(urls))
        return urls[first:] + urls[:first]

    async def observe(self) -> None:
        await asyncio.to_thread(self.nodes.lease)  # counts takeovers
        self.result.takeovers = self.nodes.takeovers

    async def _owner(self) -> str | None:
        lease = await asyncio.to_thread(self.nodes.lease)
        self.result.takeovers = self.nodes.takeovers
        return lease[0] if lease else None

    async def _wait(self, condition: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not await condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"chaos run: {what} did not happen within {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def kill_and_restart(self, owner: bool, worker: WorkerProcess, log: Callable[[str], None]) -> str:
        """SIGKILL the owner (restarted once another node took the queue over, or at once every other
        time), or the node the worker is connected to while another node owns the queue (the worker is
        moved to such a node first if it sits on the owner), restarted after a moment. Returns "worker"
        when the worker was restarted."""
        moved = ""
        # The owner as last observed (the main loop reads it all the time): the producer's kill must land
        # while its publishes are in flight, not a database round trip later.
        holder = self.nodes.owner if owner and self.nodes.owner else await self._owner()
        victim: str | None
        if owner or holder is None:
            victim = holder or self.rng.choice(self.nodes.live())
        else:
            victim = await asyncio.to_thread(self.nodes.worker_node)
            if victim is None or victim == holder:
                others = [name for name in self.nodes.live() if name != holder]
                victim = self.rng.choice(others)
                worker.kill()
                log("worker")
                moved = "worker"
                worker.start([self.nodes.nodes[victim].url] + [u for u in self.nodes.urls
                                                               if u != self.nodes.nodes[victim].url])

                async def on_victim() -> bool:
                    return await asyncio.to_thread(self.nodes.worker_node) == victim

                await self._wait(on_victim, f"the worker connected to {victim}", 30)
        self.nodes.nodes[victim].kill()
        if victim == holder:
            self.result.owner_kills += 1
            kind = "owner"
        else:
            self.result.worker_node_kills += 1
            kind = "worker's node"
        log(f"node {victim} ({kind})")
        if victim == holder and self.result.owner_kills % 2 == 1:
            # Every other owner kill waits for a takeover; the others restart the owner at once, before
            # its lease expired (a supervisor restarting a crashed node), while the lease names it.
            async def taken_over() -> bool:
                current = await self._owner()
                return current is not None and current != victim

            await self._wait(taken_over, f"a takeover of {victim}'s queue", 10 * self.lease_ttl)
        else:
            await asyncio.sleep(self.rng.uniform(0.0, 0.3))
        await asyncio.to_thread(self.nodes.nodes[victim].start)
        return moved

    def stop(self) -> None:
        self.nodes.stop()
        self.result.node_errors = self.nodes.errors()


def _get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(request, timeout=3) as response:  # a local node's API
        return json.loads(response.read())
