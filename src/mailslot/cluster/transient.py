"""Non-durable and exclusive queues in a cluster: one name, one queue, cluster-wide (as in RabbitMQ).

Rules of this module:

* Such a queue lives in the memory of the node that declared it (its owner) and dies with it. Its
  name is registered as a shared queue's is: a ``queues`` row (``durable``/``exclusive`` say what it
  is) and a lease held by the owner, renewed with its other leases. The lease is the claim on the
  name: :meth:`TransientQueues.claim` takes it before the queue is made (one statement, on the
  event loop, as a durable declare takes its lease), so two nodes declaring one name at once get one
  queue; the loser's is a view of the owner's, served by forwarding as a shared queue's.
* An exclusive queue's name taken by another node: a declare here is refused with 405
  RESOURCE_LOCKED, as RabbitMQ refuses another connection's. A view of an exclusive queue (made by
  the metadata sync) has :data:`ELSEWHERE` as its exclusive owner, so the core refuses every
  connection here the same way.
* Never taken over: a node whose lease of such a queue expired (it died, or was paused past its
  lease), or whose former process held it, has lost the queue. The first node to see that
  (:meth:`TransientQueues.sweep`, every lease poll) deletes the lease and the row; every node's
  metadata sync then deletes its view, as RabbitMQ deletes the non-durable queues of a lost node.
* Bindings to such a queue are stored as a shared queue's (the core stores them in a cluster), so a
  publish on any node routes to its view there. Deleting the queue deletes its row and every binding
  to it in one statement (:meth:`ClusterMetadataStore.delete_transient_queue`), also when the node
  that swept a lost queue never knew its bindings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mailslot.core import storekeys
from mailslot.core.broker import Broker
from mailslot.core.errors import ResourceLocked
from mailslot.core.queue import Queue
from mailslot.storage.api import QueueDefinition
from mailslot.storage.postgres import PostgresMetadataStore

from .leases import Lease, LeaseTable

log = logging.getLogger("mailslot.cluster")


class _Elsewhere:
    """The exclusive owner of a view of another node's exclusive queue: no connection here is it."""

    def __repr__(self) -> str:
        return "<a connection on another node>"


ELSEWHERE: Any = _Elsewhere()


def is_transient(queue: Queue) -> bool:
    return not queue.durable or queue.exclusive_owner is not None


class TransientQueues:
    """The core's :class:`~mailslot.core.vhost.QueueNames` in a cluster (see the rules)."""

    def __init__(self, core: Broker, metadata: Any, leases: LeaseTable, make_remote: Callable[[Queue], None]) -> None:
        self.core = core
        self.metadata = metadata  # ClusterMetadataStore (its writes counter, its muted flag)
        self.leases = leases
        self.make_remote = make_remote

    def claim(self, queue: QueueDefinition) -> bool:
        if self.metadata.muted:  # the metadata sync makes a view of another node's queue
            return False
        key = storekeys.queue_key(queue.vhost, queue.name)
        if key in self.leases.held or self.leases.take([key]):
            PostgresMetadataStore.save_queue(self.metadata, queue)
            self.metadata.writes += 1
            return True
        row = self.metadata.queue_row(queue.vhost, queue.name)
        if queue.exclusive or (row is not None and row[1]):
            raise ResourceLocked(
                f"cannot obtain exclusive access to locked queue '{queue.name}' in vhost '{queue.vhost}'. It "
                "could be originally declared on another connection or the exclusive property value does not "
                "match that of the original declaration.")
        return False

    def made(self, queue: Queue, owned: bool) -> None:
        if not owned:
            self.make_remote(queue)

    def released(self, queue: Queue) -> None:
        """Deleted here by a client (or its exclusive connection closed): deleted everywhere, its row first
        and its bindings (each node's sync deletes its view; a view deleted here deletes the owner's queue too). Deleted
        by the metadata sync (muted): the row is gone already; the lease goes if this node owned it."""
        if not self.metadata.muted:
            self.metadata.delete_transient_queue(queue.vhost, queue.name)
        if queue.key in self.leases.held:
            self.leases.drop(queue.key)

    def sweep(self, table: dict[str, Lease], on_loop: Callable[[Callable[[], list[str]]], list[str]],
              loop: asyncio.AbstractEventLoop) -> None:
        """Poller thread, after reading the lease ``table``: other nodes' transient queues seen here whose
        owner lost them (lease expired, missing, or a former process's of this node) have their lease
        deleted here, then their row on the event loop (every node's sync then deletes its view)."""
        views = on_loop(self._views)
        lost = [key for key in views if key not in self.leases.held and (
            key not in table or table[key].expired or table[key].owner == self.leases.node)]
        if not lost:
            return
        deleted = self.leases.drop_lost(lost)
        for key in deleted:
            log.warning("queue %s deleted: its node is gone (a non-durable or exclusive queue is not taken over)",
                        _show(key))
        if deleted:
            loop.call_soon_threadsafe(self.forget, deleted)

    def _views(self) -> list[str]:
        return [q.key for vhost in self.core.vhosts.values() for q in vhost.queues.values()
                if is_transient(q) and q.remote is not None and not q.deleted]

    def lose(self, lost: set[str]) -> set[str]:
        """Event loop: this node's transient queues among the ``lost`` leases are deleted here, not served
        elsewhere (whoever saw the lease lost deleted their rows); returns the other keys."""
        rest = set()
        for key in lost:
            parsed = storekeys.decode(key)
            vhost = self.core.vhosts.get(parsed.vhost)
            queue = vhost.queues.get(parsed.name) if vhost is not None else None
            if vhost is None or queue is None or queue.key != key or queue.remote is not None \
                    or not is_transient(queue):
                rest.add(key)
                continue
            log.warning("lost the lease of queue %s: it is deleted (non-durable or exclusive)", _show(key))
            self.metadata.muted = True
            try:
                self.core.delete_queue(vhost, queue)
            finally:
                self.metadata.muted = False
        return rest

    def forget(self, keys: list[str]) -> None:
        """Event loop: the rows and bindings of the queues :meth:`sweep` found lost (every node's sync then
        deletes its view)."""
        for key in keys:
            parsed = storekeys.decode(key)
            self.metadata.delete_transient_queue(parsed.vhost, parsed.name)


def _show(key: str) -> str:
    parsed = storekeys.decode(key)
    return f"'{parsed.name}' in vhost '{parsed.vhost}'"
