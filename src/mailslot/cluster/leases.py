"""Queue leases in PostgreSQL: which node owns which shared queue, and since which epoch.

Rules of this module:

* A lease row is ``(queue, owner, epoch, expires_at)``; ``queue`` is the queue's store key
  (core/storekeys.py). Every time is the database's (``now()``): a node's clock never decides
  anything, so nodes whose clocks disagree still agree on who owns what.
* The owner renews all its leases with one statement every ``ttl / 3``; a lease not renewed for
  ``ttl`` may be taken by any node, which bumps its epoch. Expiry only says when a takeover may
  happen. Safety is the epoch: every write transaction of the owner checks it under ``FOR SHARE``
  (``check_leases`` in migrations/0002_cluster.sql), so a paused owner that wakes up after a
  takeover can never write again for that queue, whatever it believes.
* ``held`` (queue key -> epoch) is what this process holds; ``lock`` serialises taking and renewing
  with each other (the event loop takes a lease at declare time, the poller thread every poll).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from mailslot.storage.postgres import PostgresSettings
from mailslot.storage.postgres._connect import Link
from mailslot.storage.postgres._queries import load_queries

Q = load_queries("mailslot.cluster", "cluster.sql")

# The lease TTL by default (seconds): a node that died is replaced within about this long. Shorter
# makes takeovers faster and a node more likely to lose its queues to a pause (a long GC, a VM
# migration, a slow database): 10 s, as issue 14 asks, rides out the usual ones.
DEFAULT_LEASE_TTL = 10.0
# Renewals per TTL: two renewals may fail (a database blip) before a lease can expire.
RENEWALS_PER_TTL = 3


@dataclass(frozen=True, slots=True)
class Lease:
    queue: str  # the queue's store key
    owner: str
    epoch: int
    expired: bool


@dataclass(frozen=True, slots=True)
class NodeRow:
    name: str
    epoch: int
    started_at: datetime
    seen_at: datetime | None
    link: str
    running: bool  # seen within the lease TTL


class LeaseTable:
    """This node's view of and hand on the ``leases`` table (its own connection)."""

    def __init__(self, settings: PostgresSettings, ttl: float = DEFAULT_LEASE_TTL) -> None:
        if ttl <= 0:
            raise ValueError("the lease TTL must be more than 0 seconds")
        self.node = settings.node_name
        self.ttl = ttl
        self.held: dict[str, int] = {}
        self.lock = threading.Lock()
        self._link = Link(settings, "leases")

    @property
    def renew_every(self) -> float:
        return self.ttl / RENEWALS_PER_TTL

    def table(self) -> list[Lease]:
        rows = self._link.run(lambda conn: conn.execute(Q["lease_table"]).fetchall())
        return [Lease(bytes(q).decode(), owner, int(epoch), bool(expired)) for q, owner, epoch, expired in rows]

    def take(self, queues: Iterable[str]) -> dict[str, int]:
        """Take the leases of ``queues`` that are missing, expired or held by a former process under this
        node's name; returns those taken (queue -> new epoch). Those held by this process are skipped."""
        with self.lock:
            wanted = sorted({q for q in queues if q not in self.held})  # one lock order for every taker
            if not wanted:
                return {}
            params = {"node": self.node, "ttl": self.ttl, "queues": [q.encode() for q in wanted]}
            rows = self._link.run(lambda conn: conn.execute(Q["take_leases"], params).fetchall())
            taken = {bytes(q).decode(): int(epoch) for q, epoch in rows}
            self.held.update(taken)
        return taken

    def renew(self) -> set[str]:
        """Renew every held lease; returns those this process no longer holds (taken over, or deleted
        with their queue), which it forgets. Raises StoreUnavailable when the database is away (then
        nothing is known: the leases are neither renewed nor given up)."""
        with self.lock:
            held = dict(self.held)
            if not held:
                return set()
            params = {"node": self.node, "ttl": self.ttl, "queues": [q.encode() for q in held],
                      "epochs": list(held.values())}
            rows = self._link.run(lambda conn: conn.execute(Q["renew_leases"], params).fetchall())
            renewed = {bytes(q).decode() for (q,) in rows}
            lost = set(held) - renewed
            for queue in lost:
                if self.held.get(queue) == held[queue]:
                    del self.held[queue]
        return lost

    def release(self) -> None:
        """A clean stop: every held lease expires now, so other nodes take the queues over at once."""
        with self.lock:
            held, self.held = self.held, {}
            if held:
                params = {"node": self.node, "queues": [q.encode() for q in held], "epochs": list(held.values())}
                self._link.run(lambda conn: conn.execute(Q["release_leases"], params))

    def drop(self, queue: str) -> None:
        """The queue was deleted: its lease goes with it."""
        with self.lock:
            self.held.pop(queue, None)
            self._link.run(lambda conn: conn.execute(Q["drop_lease"], {"queue": queue.encode()}))

    def drop_lost(self, queues: list[str]) -> list[str]:
        """Of these queues' leases, delete those lost by their owner (expired, or a former process's of
        this node); returns them with the queues that have no lease (transient.py)."""
        with self.lock:  # as take(): a lease this process takes meanwhile is never one of them
            wanted = [q for q in queues if q not in self.held]
            if not wanted:
                return []
            params = {"queues": [q.encode() for q in wanted], "node": self.node}
            rows = self._link.run(lambda conn: conn.execute(Q["drop_lost_transient"], params).fetchall())
        return [bytes(q).decode() for (q,) in rows]

    def heartbeat(self, node_epoch: int, link: str) -> None:
        params = {"node": self.node, "epoch": node_epoch, "link": link}
        self._link.run(lambda conn: conn.execute(Q["heartbeat"], params))

    def nodes(self) -> list[NodeRow]:
        rows = self._link.run(lambda conn: conn.execute(Q["cluster_nodes"], {"ttl": self.ttl}).fetchall())
        return [NodeRow(name, int(epoch), started, seen, link, bool(running))
                for name, epoch, started, seen, link, running in rows]

    def close(self) -> None:
        self._link.close()
