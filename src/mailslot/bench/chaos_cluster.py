"""The brokers of a chaos run in cluster mode (:mod:`mailslot.bench.chaos`): ``count`` nodes of
``mailslot serve --store postgres --cluster`` on a PostgreSQL schema of their own (made here, dropped at
the end), linked over Unix sockets so a client can use the queue from any node. The run SIGKILLs them in
turn: the owner of the work queue (another node takes it over) and the node the worker is connected to.

The owner and its lease epoch are read from the ``leases`` table, the source of truth for ownership; a
takeover is counted when the owner of the queue changes to another node. The worker's node is read from
each node's ``/api/connections`` (the worker names its connection ``mailslot.worker ...``).
"""

from __future__ import annotations

import base64
import json
import secrets
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from mailslot.bench.broker_process import BrokerProcess


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


def _get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(request, timeout=3) as response:  # a local node's API
        return json.loads(response.read())
