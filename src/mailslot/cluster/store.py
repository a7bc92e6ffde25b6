"""The PostgreSQL store of a node in a cluster: writes fenced by queue leases instead of log claims.

Rules of this module:

* A log (a queue, its priority lanes, its deduplication window) belongs to the lease of its queue
  (:func:`lease_group`); logs of exchanges' features belong to none (node-local, not shared yet).
* Every batch transaction starts with ``fence_leased()``: this process's node row at its epoch,
  then every lease the batch writes for, at the epoch this process holds it, under ``FOR SHARE``.
  A lease it does not hold (lost, or never taken) has epoch 0 here, so a batch that writes for it
  is refused (MSF03): nothing of it lands. Unlike a superseded node name (MSF01), a lost lease
  stops only that batch; the node goes on with the queues it still holds.
* ``recover()`` (start-up) takes the leases of every shared queue that is free, then
  :meth:`ClusterMessageLog.adopt` reads back only the logs of the leases taken. Nothing is ever
  dropped or claimed outside them: other nodes' logs are theirs.
* Work staged for a queue whose lease was lost is dropped when the batch is cut (it would make the
  whole batch fail); a queue that another node owns never stages anything (core: ``Queue.remote``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg

from mailslot.core import storekeys
from mailslot.core.dedup import EXCHANGE_TYPE, exchange_store_key
from mailslot.storage.api import BindingDefinition, ExchangeDefinition, QueueDefinition, QueueRecovery
from mailslot.storage.postgres import FencedError, PostgresMessageLog, PostgresMetadataStore, PostgresSettings
from mailslot.storage.postgres._connect import Link
from mailslot.storage.postgres.log import _Batch

from .leases import LeaseTable, Q
from .shared_exchanges import LEASED_KINDS, is_exchange_key, is_own_schedule, partition_of

if TYPE_CHECKING:
    from mailslot.core.broker import Hold
    from mailslot.storage.api import Definitions

    from .forward import Forwarder

log = logging.getLogger("mailslot.cluster")

_QUEUE_KINDS = frozenset({storekeys.QUEUE, storekeys.LANE, storekeys.DEDUP_QUEUE})


def lease_group(key: str) -> str | None:
    """The lease covering the log ``key``: its queue's store key, or the key itself for an exchange's
    schedule or window (shared_exchanges.py); None for node-local logs."""
    parsed = storekeys.decode(key)
    if parsed.kind in _QUEUE_KINDS:
        return storekeys.queue_key(parsed.vhost, parsed.name)
    if parsed.kind in LEASED_KINDS:
        return key
    return None


class ClusterMessageLog(PostgresMessageLog):
    """:class:`PostgresMessageLog` whose writes are fenced by :class:`LeaseTable` leases."""

    def __init__(self, settings: PostgresSettings, leases: LeaseTable, commit_timeout: float) -> None:
        super().__init__(settings, commit_timeout)
        self.leases = leases
        self.lost: set[str] = set()  # leases lost since the last cut: their staged work is dropped
        self._groups: dict[str, str | None] = {}
        self._adopter = Link(settings, "adopt")
        self.forwarder: Forwarder | None = None  # set when the node has a cluster link
        self.owners: Callable[[], Mapping[str, object]] = dict  # the lease table as last polled (ClusterNode)
        self.on_lease_refused: Callable[[], None] = lambda: None  # a batch was refused for a lost lease

    @property
    def partition(self) -> str:
        """This process's delayed-message schedules' sub-key (core/delayed.py, shared_exchanges.py)."""
        return partition_of(self.node, self.epoch)

    def may_release(self, key: str) -> bool:
        """May this process release the rows of ``key`` now (core/delayed.py)? Only while it holds the
        lease and renewed it recently (LeaseTable.fresh)."""
        group = self.group(key)
        return group is None or self.leases.fresh(group)

    def hold_confirms(self) -> Hold | None:
        """At the broker's cut (core/broker.py): forwarded publishes go out, and hold the batch's confirms."""
        return self.forwarder.hold_confirms() if self.forwarder is not None else None

    def group(self, key: str) -> str | None:
        groups = self._groups
        try:
            return groups[key]
        except KeyError:
            found = groups[key] = lease_group(key)
            return found

    # -- the batch transaction -------------------------------------------------------------------------
    def prepare_commit(self) -> Any:
        """Detach the batch, without what is staged for a lease this node does not hold while the lease
        table says another node does (lost leases, and queues served here for their owner): fence_leased()
        would refuse the whole batch for it."""
        foreign = self.lost
        self.lost = set()
        held = self.leases.held
        written = self._staged.keys()  # the batch's log keys (a set, not a dict view)
        for key in written:
            group = self.group(key)
            if group is not None and group not in held and group in self.owners():
                foreign.add(group)
        if foreign:
            _drop_groups(self._staged, foreign, self.group)
        return super().prepare_commit()

    def _fence(
        self, keys: set[str], owned: list[tuple[int, int]], batch_no: int
    ) -> tuple[LiteralString, dict[str, Any]]:
        groups = sorted({g for g in map(self.group, keys) if g is not None})  # one lock order for all
        partition = self.partition
        mine = [g for g in groups if g not in self.leases.held and is_own_schedule(g, partition)]
        if mine:  # this process's first write to its own schedule: its lease first, so others can take it over
            self.leases.take(mine)
        held = self.leases.held
        return Q["fence_leased"], {
            "node": self.node, "node_epoch": self.epoch, "batch": batch_no,
            "groups": [g.encode() for g in groups], "epochs": [held.get(g, 0) for g in groups],
        }

    def _fenced_by(self, exc: psycopg.Error) -> FencedError:
        if exc.sqlstate != "MSF03":
            return super()._fenced_by(exc)
        message = exc.diag.message_primary or str(exc)
        log.warning("a batch was refused, this node lost a lease: %s", message)
        self.on_lease_refused()
        return FencedError(message)

    def _claim(self, conn: psycopg.Connection[Any], keys: Iterable[str]) -> dict[str, tuple[int, int]]:
        ids = self._ids
        new = [k for k in keys if k not in ids]
        if new:
            groups = [self.group(k) for k in new]
            rows = conn.execute(Q["ensure_logs"], {
                "keys": [k.encode() for k in new], "groups": [g.encode() if g else None for g in groups],
            }).fetchall()
            for log_id, key in rows:
                ids[bytes(key).decode()] = (int(log_id), 0)
        return ids

    # -- taking queues over ----------------------------------------------------------------------------
    def recover(self) -> list[QueueRecovery]:
        """At start-up: take every shared queue's lease that is free, read back the logs of those."""
        self.commit()
        rows = self._adopter.run(lambda conn: conn.execute(Q["shared_queues"]).fetchall())
        queues = [storekeys.queue_key(bytes(v).decode(), bytes(n).decode()) for v, n in rows]
        # Exchanges' schedules and windows whose lease is free (their node stopped): released here now.
        queues += [lease.queue for lease in self.leases.table() if is_exchange_key(lease.queue)]
        self.leases.take(queues)
        # Every lease held now was taken during this start: by the line above, or by the core's
        # recovery, which declares each queue again (ClusterMetadataStore.save_queue takes it).
        return self.adopt(dict(self.leases.held))

    def adopt(self, taken: dict[str, int]) -> list[QueueRecovery]:
        """The logs of the leases just taken (queue key -> epoch): transient rows of the former owner
        dropped, delivery watermarks clamped, then what each log holds. One transaction, fenced by
        those leases like a batch (a lease lost meanwhile raises FencedError, and nothing changes)."""
        if not taken:
            return []
        groups = sorted(taken)
        params = {"node": self.node, "groups": [g.encode() for g in groups], "epochs": [taken[g] for g in groups]}

        def read(conn: psycopg.Connection[Any]) -> tuple[list[Any], list[Any]]:
            with conn.transaction():
                conn.execute(Q["check_leases"], params)
                logs = conn.execute(Q["group_logs"], params).fetchall()
                ids = {"log_ids": [int(i) for i, _ in logs]}
                conn.execute(Q["drop_transient_of"], ids)
                conn.execute(Q["clamp_delivered_of"], ids)
                return logs, conn.execute(Q["count_of"], ids).fetchall()

        try:
            logs, counts = self._adopter.run(read)
        except psycopg.Error as exc:
            if exc.sqlstate == "MSF03":
                raise FencedError(exc.diag.message_primary or str(exc)) from None
            raise
        keys = {int(i): bytes(k).decode() for i, k in logs}
        for log_id, key in keys.items():
            self._ids[key] = (log_id, 0)
        self.lost.difference_update(taken)
        return [QueueRecovery(keys[int(i)], int(n), int(top)) for i, n, top in counts]

    def close(self) -> None:
        """Commit what is staged, then give the leases up so other nodes take the queues over at once."""
        try:
            super().close()
            self.leases.release()
        except Exception as exc:  # noqa: BLE001 - the leases then expire on their own within the TTL
            log.warning("could not release this node's leases (they expire within the TTL): %s", exc)
        finally:
            self._adopter.close()
            self.leases.close()


def dedup_exchange_key(exchange: ExchangeDefinition) -> str | None:
    """The lease key of a shared deduplicating exchange's window; None for any other exchange."""
    if exchange.type != EXCHANGE_TYPE or not exchange.durable:
        return None
    return exchange_store_key(exchange.vhost, exchange.name)


def _drop_groups(batch: _Batch, lost: set[str], group: Any) -> None:
    """Remove from a staged batch everything written for the ``lost`` leases."""
    batch.appends = {k: v for k, v in batch.appends.items() if group(k) not in lost}
    batch.removes = {k: v for k, v in batch.removes.items() if group(k) not in lost}
    batch.redelivers = {k: v for k, v in batch.redelivers.items() if group(k) not in lost}
    batch.delivered = {k: v for k, v in batch.delivered.items() if group(k) not in lost}
    batch.purges = {k for k in batch.purges if group(k) not in lost}


class ClusterMetadataStore(PostgresMetadataStore):
    """The metadata store of a cluster node: declaring a shared queue takes its lease when it is free
    (the declaring node owns a new queue), deleting one drops it. ``on_declared(vhost, name, owned)``
    tells the node whether it owns the queue just saved. While :attr:`muted`, writes are skipped: the
    metadata sync applies what another node already wrote. Every call runs on the event loop."""

    def __init__(self, settings: PostgresSettings, leases: LeaseTable) -> None:
        super().__init__(settings)
        self.leases = leases
        self.muted = False
        self.writes = 0  # writes that reached PostgreSQL, for the metadata sync (sync.py)
        self.on_declared: Any = None  # Callable[[str, str, bool], None], set by the cluster node
        self.on_exchange_declared: Any = None  # the same for deduplicating exchanges

    def save_exchange(self, exchange: ExchangeDefinition) -> None:
        # A deduplicating exchange's window has one owner (shared_exchanges.py): the declaring node takes
        # its lease first when it is free, as for a queue; ``on_exchange_declared`` tells the node.
        key = dedup_exchange_key(exchange)
        owned = key is not None and (key in self.leases.held or (not self.muted and bool(self.leases.take([key]))))
        if not self.muted:
            super().save_exchange(exchange)
            self.writes += 1
        if key is not None and self.on_exchange_declared is not None:
            self.on_exchange_declared(exchange.vhost, exchange.name, owned)

    def delete_exchange(self, vhost: str, name: str) -> None:
        if not self.muted:
            super().delete_exchange(vhost, name)
            self.writes += 1
            self.leases.drop(exchange_store_key(vhost, name))  # if it had one (a deduplicating exchange)

    def save_binding(self, binding: BindingDefinition, arguments: dict[str, Any]) -> None:
        if not self.muted:
            super().save_binding(binding, arguments)
            self.writes += 1

    def delete_binding(self, binding: BindingDefinition) -> None:
        if not self.muted:
            super().delete_binding(binding)
            self.writes += 1

    def save_record(self, kind: str, key: str, value: Any) -> None:
        if not self.muted:
            super().save_record(kind, key, value)
            self.writes += 1

    def delete_record(self, kind: str, key: str) -> None:
        if not self.muted:
            super().delete_record(kind, key)
            self.writes += 1

    def save_queue(self, queue: QueueDefinition) -> None:
        key = storekeys.queue_key(queue.vhost, queue.name)
        # Saved by this node: it takes the lease first if the queue is free, so that no other node sees
        # the queue without its lease and takes it (its poller takes leases of queues that have none).
        # Applied by the metadata sync (muted): another node declared it and holds it.
        owned = key in self.leases.held or (not self.muted and not queue.exclusive and bool(self.leases.take([key])))
        if not self.muted:
            super().save_queue(queue)
            self.writes += 1
        if queue.exclusive:
            return
        if self.on_declared is not None:
            self.on_declared(queue.vhost, queue.name, owned)

    def load(self) -> Definitions:
        """What the core recovers at start: the shared queues; other nodes' non-durable and exclusive
        queues (transient.py) are not this node's to recover (the metadata sync makes views of them). When no
        other node runs, the cluster stopped: its non-durable exchanges are deleted first (they lived while it ran)."""
        self.drop_transient_exchanges()
        definitions = super().load()
        definitions.queues = [q for q in definitions.queues if q.durable and not q.exclusive]
        # Their bindings too: the sync binds them once it made the views.
        kept = {(q.vhost, q.name) for q in definitions.queues}
        definitions.bindings = [b for b in definitions.bindings
                                if b.destination_kind != "queue" or (b.vhost, b.destination) in kept]
        definitions.binding_arguments = {b: definitions.binding_arguments[b] for b in definitions.bindings}
        return definitions

    def drop_transient_exchanges(self) -> int:
        """Delete the non-durable exchanges (and their bindings) when no other node runs; how many went."""
        params = {"node": self.leases.node, "ttl": self.leases.ttl}
        row = self._run(lambda conn: conn.execute(Q["drop_transient_exchanges"], params).fetchone())
        dropped = int(row[0]) if row else 0
        if dropped:
            self.writes += 1
            log.info("%d non-durable exchange(s) deleted: no other node of the cluster is running", dropped)
        return dropped

    def queue_row(self, vhost: str, name: str) -> tuple[bool, bool] | None:
        """(durable, exclusive) of a queue's row, None when it has none."""
        row = self._run(lambda conn: conn.execute(Q["queue_row"], {"vhost": vhost.encode(), "name": name.encode()})
                        .fetchone())
        return (bool(row[0]), bool(row[1])) if row else None

    def delete_transient_queue(self, vhost: str, name: str) -> None:
        """A non-durable or exclusive queue's row and every binding to it (transient.py; the lease is the
        caller's to drop)."""
        self._run(lambda conn: conn.execute(Q["delete_transient_queue"],
                                            {"vhost": vhost.encode(), "name": name.encode()}))
        self.writes += 1

    def delete_queue(self, vhost: str, name: str) -> None:
        if self.muted:
            return
        super().delete_queue(vhost, name)
        self.writes += 1
        self.leases.drop(storekeys.queue_key(vhost, name))
