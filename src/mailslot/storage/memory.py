"""In-memory stores: the reference implementation of ``storage.api``.

Rules of this module:

* It is the *specification by example* of the contract: staged operations are kept in the order they
  were staged and applied one after the other at :meth:`MemoryMessageLog.commit`; :meth:`read` only ever
  sees committed state. Other backends may reorder or cancel work internally (the SQLite store does),
  but must be observably equal to this one; ``tests/storage`` checks it with hypothesis.
* Nothing is durable: a new instance is empty. ``close()`` commits what is staged and keeps the data, so
  a test can "reopen" by going on with the same object.
* Values handed in are copied, and values handed out are copies, so neither side can change the other's
  state by mutating a ``StoredMessage`` or an ``arguments`` dict.
"""

from __future__ import annotations

import copy
import json
from bisect import bisect_left, bisect_right
from typing import Any

from mailslot.storage.api import (
    BindingDefinition,
    Definitions,
    ExchangeDefinition,
    QueueDefinition,
    QueueRecovery,
    StoredMessage,
)

_APPEND, _REMOVE, _REDELIVER, _PURGE, _DELIVERED = range(5)


def _copy_message(m: StoredMessage, delivered_upto: int = 0) -> StoredMessage:
    # A message with requeues > 0, or at or below the queue's delivery watermark, is redelivered
    # (storage/api.py), whatever flag it was handed with.
    return StoredMessage(
        m.queue, m.seq, m.exchange, m.routing_key, m.properties, m.body, m.persistent,
        m.redelivered or m.requeues > 0 or m.seq <= delivered_upto, m.deadline, m.requeues,
    )


class _QueueMessages:
    """One queue's committed messages: a seq -> message map plus a sorted seq list for range reads.

    Removal only deletes from the map; the sorted list keeps a tombstone that reads skip, and is
    compacted once tombstones outnumber live entries (amortised O(1) per removal).
    """

    __slots__ = ("by_seq", "seqs")

    def __init__(self) -> None:
        self.by_seq: dict[int, StoredMessage] = {}
        self.seqs: list[int] = []

    def add(self, m: StoredMessage) -> None:
        seqs = self.seqs
        if m.seq not in self.by_seq:
            if not seqs or m.seq > seqs[-1]:
                seqs.append(m.seq)  # the common case: the core assigns seqs in increasing order
            else:
                i = bisect_left(seqs, m.seq)
                if i == len(seqs) or seqs[i] != m.seq:  # else a tombstone of this seq is still listed
                    seqs.insert(i, m.seq)
        # A repeated (queue, seq) violates the contract; keep the newest, as an upsert would.
        self.by_seq[m.seq] = m

    def remove(self, seq: int) -> None:
        if self.by_seq.pop(seq, None) is not None and len(self.seqs) > 2 * len(self.by_seq) + 16:
            self.seqs = [s for s in self.seqs if s in self.by_seq]

    def read(self, after_seq: int, limit: int, delivered_upto: int) -> list[StoredMessage]:
        out: list[StoredMessage] = []
        if limit <= 0:
            return out
        by_seq, seqs = self.by_seq, self.seqs
        i = bisect_right(seqs, after_seq)
        n = len(seqs)
        while i < n and len(out) < limit:
            m = by_seq.get(seqs[i])
            if m is not None:
                out.append(_copy_message(m, delivered_upto))
            i += 1
        return out


class MemoryMessageLog:
    """Reference :class:`~mailslot.storage.api.MessageLog`; nothing survives the process."""

    def __init__(self) -> None:
        self._queues: dict[str, _QueueMessages] = {}
        self._delivered: dict[str, int] = {}  # queue -> delivery watermark (stage_delivered)
        self._staged: list[tuple[int, Any, Any]] = []

    # -- staging -------------------------------------------------------------------------------------
    def stage_append(self, messages: list[StoredMessage]) -> None:
        if messages:
            self._staged.append((_APPEND, [_copy_message(m) for m in messages], None))

    def stage_remove(self, queue: str, seqs: list[int]) -> None:
        if seqs:
            self._staged.append((_REMOVE, queue, list(seqs)))

    def stage_mark_redelivered(self, queue: str, seqs: list[int]) -> None:
        if seqs:
            self._staged.append((_REDELIVER, queue, list(seqs)))

    def stage_delivered(self, queue: str, seq: int) -> None:
        self._staged.append((_DELIVERED, queue, seq))

    def stage_purge(self, queue: str) -> None:
        self._staged.append((_PURGE, queue, None))

    def has_staged(self) -> bool:
        return bool(self._staged)

    def commit(self) -> None:
        staged, self._staged = self._staged, []
        queues = self._queues
        for op, a, b in staged:
            if op == _APPEND:
                for m in a:
                    q = queues.get(m.queue)
                    if q is None:
                        q = queues[m.queue] = _QueueMessages()
                    q.add(m)
            elif op == _PURGE:
                queues.pop(a, None)
                self._delivered.pop(a, None)
            elif op == _DELIVERED:
                if b > self._delivered.get(a, 0):
                    self._delivered[a] = b
            else:
                q = queues.get(a)
                if q is None:
                    continue
                if op == _REMOVE:
                    for seq in b:
                        q.remove(seq)
                else:  # _REDELIVER
                    for seq in b:
                        m = q.by_seq.get(seq)
                        if m is not None:
                            m.redelivered = True
                            m.requeues += 1
                if not q.by_seq:
                    del queues[a]

    # -- reading -------------------------------------------------------------------------------------
    def read(self, queue: str, after_seq: int, limit: int) -> list[StoredMessage]:
        q = self._queues.get(queue)
        return [] if q is None else q.read(after_seq, limit, self._delivered.get(queue, 0))

    def recover(self) -> list[QueueRecovery]:
        out: list[QueueRecovery] = []
        for name in sorted(self._queues):
            q = self._queues[name]
            for seq in [s for s, m in q.by_seq.items() if not m.persistent]:
                q.remove(seq)
            if q.by_seq:
                out.append(QueueRecovery(name, len(q.by_seq), max(q.by_seq)))
            else:
                del self._queues[name]
        # The core numbers new messages from a queue's highest seq: no watermark may reach above it.
        highest = {r.queue: r.max_seq for r in out}
        for name, upto in list(self._delivered.items()):
            if name in highest:
                self._delivered[name] = min(upto, highest[name])
            else:
                del self._delivered[name]
        return out

    def close(self) -> None:
        self.commit()

    def drop_staged(self) -> None:
        """Forget what is staged, as a crash would (not part of the MessageLog interface: the core
        never calls it; ``mailslot.testing.CoreHarness.crash`` does)."""
        self._staged.clear()


class MemoryMetadataStore:
    """Reference :class:`~mailslot.storage.api.MetadataStore`; nothing survives the process.

    ``load()`` lists each kind in first-save order (a re-save keeps its place), as the SQLite store does.
    Deleting an exchange or a queue does not delete its bindings: the core decides what goes with what.
    """

    def __init__(self) -> None:
        self._exchanges: dict[tuple[str, str], ExchangeDefinition] = {}
        self._queues: dict[tuple[str, str], QueueDefinition] = {}
        self._bindings: dict[BindingDefinition, dict[str, Any]] = {}
        self._records: dict[str, dict[str, str]] = {}  # kind -> key -> JSON (stored as the SQLite store does)

    def save_exchange(self, exchange: ExchangeDefinition) -> None:
        self._exchanges[(exchange.vhost, exchange.name)] = copy.deepcopy(exchange)

    def delete_exchange(self, vhost: str, name: str) -> None:
        self._exchanges.pop((vhost, name), None)

    def save_queue(self, queue: QueueDefinition) -> None:
        self._queues[(queue.vhost, queue.name)] = copy.deepcopy(queue)

    def delete_queue(self, vhost: str, name: str) -> None:
        self._queues.pop((vhost, name), None)

    def save_binding(self, binding: BindingDefinition, arguments: dict[str, Any]) -> None:
        self._bindings[binding] = copy.deepcopy(arguments)

    def delete_binding(self, binding: BindingDefinition) -> None:
        self._bindings.pop(binding, None)

    def save_record(self, kind: str, key: str, value: Any) -> None:
        self._records.setdefault(kind, {})[key] = json.dumps(value)

    def delete_record(self, kind: str, key: str) -> None:
        self._records.get(kind, {}).pop(key, None)

    def load_records(self, kind: str) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in self._records.get(kind, {}).items()}

    def load(self) -> Definitions:
        return Definitions(
            exchanges=copy.deepcopy(list(self._exchanges.values())),
            queues=copy.deepcopy(list(self._queues.values())),
            bindings=list(self._bindings),
            binding_arguments=copy.deepcopy(self._bindings),
        )

    def close(self) -> None:
        pass


def open_memory_store() -> tuple[MemoryMessageLog, MemoryMetadataStore]:
    """The pair ``bootstrap`` uses for ``store = "memory"``."""
    return MemoryMessageLog(), MemoryMetadataStore()
