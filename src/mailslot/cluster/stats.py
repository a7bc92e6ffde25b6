"""Queue figures shared through PostgreSQL, so every node shows the owner's numbers of a queue.

Rules of this module:

* Only a queue's owner knows its depths, so the owner writes them to ``queue_stats`` at each lease
  poll (node.py, on the poller thread, never on the event loop's per-message path): one statement for
  the rows that changed since its last write, one for the rows of queues it no longer owns.
* Every node reads the whole table at the same poll (one SELECT) and the management API shows these
  figures for queues another node owns. They are as old as the owner's last poll plus this node's:
  up to two poll intervals (``ttl / 3`` each).
* A row is believed only while its writer holds the queue's lease (:meth:`ClusterNode.figures`): a row
  left by a node that died is ignored from the takeover on, until the new owner writes its own.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# What the owner writes of each queue: (ready, unacked, consumers).
Counts = tuple[int, int, int]


class QueueStats:
    """This node's hand on ``queue_stats`` (its own connection, used by the poller thread only)."""

    def __init__(self, settings: PostgresSettings) -> None:
        self.node = settings.node_name
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
        rows = self._link.run(lambda conn: conn.execute(Q["queue_stats"]).fetchall())
        return {bytes(q).decode(): QueueFigures(node, int(ready), int(unacked), int(consumers))
                for q, node, ready, unacked, consumers in rows}

    def close(self) -> None:
        self._link.close()
