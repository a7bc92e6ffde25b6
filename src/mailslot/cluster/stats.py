"""Queue figures shared through PostgreSQL, so every node shows the owner's numbers of a queue.

Rules of this module:

* Only a queue's owner knows its depths, so the owner writes them to ``queue_stats`` at each lease
  poll (node.py, on the poller thread, never on the event loop's per-message path): one statement for
  the rows that changed since its last write, one for the rows of queues it no longer owns.
* Every node reads the table at the same poll (one SELECT) and the management API shows these figures
  for queues another node owns. A read takes only the rows written since the previous one, less a
  margin (a write whose transaction started before that read but committed after it is still seen),
  and every FULL_READ_EVERY reads the whole table (rows of deleted queues go then): 100,000 rows take
  about 0.26 s of this thread to decode, a few changed ones next to nothing. They are as old as the owner's last poll plus this node's:
  up to two poll intervals (``ttl / 3`` each).
* A row is believed only while its writer holds the queue's lease (:meth:`ClusterNode.figures`): a row
  left by a node that died is ignored from the takeover on, until the new owner writes its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mailslot.storage.postgres import PostgresSettings
from mailslot.storage.postgres._connect import Link

from .leases import Q


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """A queue's figures as its owner wrote them; ``consumers`` are the owner's own (not other nodes')."""

    node: str  # the owner that wrote them
    ready: int
    unacked: int
    consumers: int

    @property
    def messages(self) -> int:
        return self.ready + self.unacked


# Reads between two reads of the whole table.
FULL_READ_EVERY = 20

# What the owner writes of each queue: (ready, unacked, consumers).
Counts = tuple[int, int, int]


class QueueStats:
    """This node's hand on ``queue_stats`` (its own connection, used by the poller thread only)."""

    def __init__(self, settings: PostgresSettings, margin: float) -> None:
        self.node = settings.node_name
        self.margin = timedelta(seconds=margin)  # how long a write may take to commit, at most (usually)
        self.figures: dict[str, QueueFigures] = {}  # the table as last read: queue key -> figures
        self._since: datetime | None = None  # the database's time of the last read, less the margin
        self._reads = 0
        self._written: dict[str, Counts] = {}  # what this node last wrote, by queue key
        self._link = Link(settings, "stats")

    def write(self, owned: dict[str, Counts]) -> int:
        """Write the figures of the queues this node owns that changed, drop those of queues it no longer
        owns; returns the rows written or dropped."""
        changed = {key: counts for key, counts in owned.items() if self._written.get(key) != counts}
        gone = [key for key in self._written if key not in owned]
        if changed:
            keys = list(changed)
            params = {"node": self.node, "queues": [k.encode() for k in keys],
                      "ready": [changed[k][0] for k in keys], "unacked": [changed[k][1] for k in keys],
                      "consumers": [changed[k][2] for k in keys]}
            self._link.run(lambda conn: conn.execute(Q["write_queue_stats"], params))
            self._written.update(changed)
        if gone:
            params = {"node": self.node, "queues": [k.encode() for k in gone]}
            self._link.run(lambda conn: conn.execute(Q["drop_queue_stats"], params))
            for key in gone:
                del self._written[key]
        return len(changed) + len(gone)

    def read(self) -> dict[str, QueueFigures]:
        """The table as it is now: what changed since the last read, or all of it every FULL_READ_EVERY reads."""
        full = self._since is None or self._reads % FULL_READ_EVERY == 0
        since = "-infinity" if full else self._since

        def run(conn: Any) -> tuple[datetime, list[Any]]:
            now = conn.execute(Q["database_now"]).fetchone()[0]  # before the read: conservative
            return now, conn.execute(Q["queue_stats"], {"since": since}).fetchall()

        now, rows = self._link.run(run)
        read = {bytes(q).decode(): QueueFigures(node, int(ready), int(unacked), int(consumers))
                for q, node, ready, unacked, consumers in rows}
        self.figures = read if full else {**self.figures, **read}
        self._since = now - self.margin
        self._reads += 1
        return self.figures

    def close(self) -> None:
        self._link.close()
