"""Metadata shared by the nodes of a cluster: every node sees another node's changes within a second.

Rules of this module:

* Exchanges, queues, bindings and the runtime records (users, vhosts, permissions, topic
  permissions, limits, policies, operator policies) live in PostgreSQL; each node keeps them in
  memory as a single broker does, and writes through on every change (ClusterMetadataStore).
* A thread of its own polls ``metadata_revision`` (one row that a trigger bumps in every
  transaction that changes a metadata table) every :data:`SYNC_INTERVAL`. When it moved, the thread
  reads everything (the definitions, then every record) and hands the snapshot to the event loop,
  which applies the difference with the store muted (what it applies is already in PostgreSQL).
  No LISTEN/NOTIFY (docs/decisions/0003).
* A snapshot read while this node wrote metadata itself may predate that write: the loop drops it
  (``ClusterMetadataStore.writes`` moved since the read began) and the next poll reads again, so a
  node never undoes its own fresh change.
* Access records are rebuilt from the snapshot (Users, Vhosts, Permissions, ... read it as they
  read a store at start) and every open connection's cached permission answers are dropped, so a
  permission removed on another node is refused on this node's open channels at their next check,
  as on the node that removed it. A user deleted, or whose password changed, on another node has
  its connections here closed with the reason that node gave them (AccessAdmin.close_user).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from mailslot.core.access.admin import AccessAdmin
from mailslot.core.access.control import InternalAccessControl
from mailslot.core.access.limits import Limits
from mailslot.core.access.permissions import Permissions, TopicPermissions
from mailslot.core.access.users import Users
from mailslot.core.access.vhosts import Vhosts
from mailslot.core.broker import Broker
from mailslot.core.errors import BrokerError
from mailslot.core.policies import PolicyEngine
from mailslot.core.queue import Queue
from mailslot.core.vhost import VirtualHost
from mailslot.storage.api import Definitions
from mailslot.storage.postgres import PostgresMetadataStore, PostgresSettings, StoreUnavailable
from mailslot.storage.postgres._connect import Link

from .leases import Q
from .store import ClusterMetadataStore
from .transient import ELSEWHERE

log = logging.getLogger("mailslot.cluster")

# How often each node polls the metadata revision (seconds): a change made on one node is applied on
# the others within about this. One indexed single-row read per poll and node.
SYNC_INTERVAL = 0.5

BindingKey = tuple[str, tuple[str, str], str, str]  # source, (kind, destination), routing key, arguments key


class Snapshot:
    """The metadata as one poll read it; a read-only store for the access model's constructors
    (their later writes go to ``store``)."""

    def __init__(self, store: ClusterMetadataStore, definitions: Definitions,
                 records: dict[str, dict[str, Any]]) -> None:
        self.store, self.definitions, self.records = store, definitions, records

    def load_records(self, kind: str) -> dict[str, Any]:
        return dict(self.records.get(kind, {}))

    def __getattr__(self, name: str) -> Any:  # save_record, delete_record, ...: the real store
        return getattr(self.store, name)


class MetadataSync:
    """Polls the metadata revision and applies other nodes' changes to this node (see the rules)."""

    def __init__(
        self,
        settings: PostgresSettings,
        core: Broker,
        metadata: ClusterMetadataStore,
        access: InternalAccessControl,
        admin: AccessAdmin,
        policies: PolicyEngine,
        call_soon_threadsafe: Callable[..., Any],
        interval: float = SYNC_INTERVAL,
    ) -> None:
        self.core, self.metadata, self.access, self.admin, self.policies = core, metadata, access, admin, policies
        self._call = call_soon_threadsafe
        self.interval = interval
        self.revision: int | None = None  # applied; None: read everything at the next poll
        self.applied_at = 0.0  # time.monotonic() of the last change applied
        self._reader = PostgresMetadataStore(settings)
        self._link = Link(settings, "sync")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, revision: int | None = None) -> None:
        self.revision = revision
        self._thread = threading.Thread(target=self._run, name="mailslot-cluster-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._reader.close()
        self._link.close()

    def current_revision(self) -> int:
        row = self._link.run(lambda conn: conn.execute(Q["metadata_revision"]).fetchone())
        return int(row[0]) if row else 0

    # -- the poller (its own thread) -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except StoreUnavailable as exc:
                log.warning("metadata sync failed (%s); trying again", " ".join(str(exc).split()))
            except Exception:
                log.exception("metadata sync failed")

    def poll(self) -> None:
        revision = self.current_revision()
        if revision == self.revision:
            return
        writes = self.metadata.writes
        definitions = self._reader.load()
        rows = self._link.run(lambda conn: conn.execute(Q["all_records"]).fetchall())
        records: dict[str, dict[str, Any]] = {}
        for kind, key, value in rows:
            records.setdefault(kind, {})[bytes(key).decode()] = json.loads(value)
        snapshot = Snapshot(self.metadata, definitions, records)
        self._call(self._apply, revision, writes, snapshot)

    # -- applying (event loop) -------------------------------------------------------------------------
    def _apply(self, revision: int, writes: int, snapshot: Snapshot) -> None:
        if self.metadata.writes != writes:  # this node wrote meanwhile: the snapshot may predate it
            self.revision = None
            return
        self.metadata.muted = True
        try:
            self._apply_access(snapshot)
            for vhost in list(self.core.vhosts.values()):
                self._apply_definitions(vhost, snapshot.definitions)
            self.policies.reload(snapshot)  # type: ignore[arg-type]  # a MetadataStore by duck typing
        finally:
            self.metadata.muted = False
        self.revision = revision
        self.applied_at = time.monotonic()

    def _apply_access(self, snapshot: Snapshot) -> None:
        access, store = self.access, snapshot
        before = {record.name for record in access.vhosts}
        passwords = {user.name: user.password_hash for user in access.users}
        access.users = Users(store)  # type: ignore[arg-type]
        access.vhosts = Vhosts(store)  # type: ignore[arg-type]
        access.permissions = Permissions(store)  # type: ignore[arg-type]
        access.topic_permissions = TopicPermissions(store)  # type: ignore[arg-type]
        access.limits = Limits(store)  # type: ignore[arg-type]
        access.permissions_changed()
        for name, password_hash in sorted(passwords.items()):
            user = access.users.get(name)
            if user is None:
                self.admin.close_user(name, f"user '{name}' is deleted")
            elif user.password_hash != password_hash:
                self.admin.close_user(name, f"user '{name}' password changed")
        after = {record.name for record in access.vhosts}
        host = self.admin.host
        for name in sorted(after):
            if name not in before:
                host.add_vhost(name)
            host.set_queue_limit(name, access.limits.vhost_limit(name, "max-queues"))
        for name in sorted(before - after):
            closed = access.connections.close_vhost(name, f"vhost '{name}' is deleted")
            host.delete_vhost(name)
            log.info("vhost '%s' deleted on another node (%d connection(s) closed here)", name, closed)

    def _apply_definitions(self, vhost: VirtualHost, definitions: Definitions) -> None:
        name = vhost.name
        exchanges = {e.name: e for e in definitions.exchanges if e.vhost == name}
        queues = {q.name: q for q in definitions.queues if q.vhost == name}
        for e in exchanges.values():
            if e.name not in vhost.exchanges:
                _try(f"exchange '{e.name}'", lambda e=e: vhost.declare_exchange(  # type: ignore[misc]
                    e.name, e.type, passive=False, durable=e.durable, auto_delete=e.auto_delete, internal=e.internal,
                    arguments=e.arguments))
        for q in queues.values():
            if q.name not in vhost.queues:  # another node's non-durable or exclusive one: a view (transient.py)
                _try(f"queue '{q.name}'", lambda q=q: vhost.declare_queue(  # type: ignore[misc]
                    q.name, passive=False, durable=q.durable, exclusive=q.exclusive, auto_delete=q.auto_delete,
                    arguments=q.arguments, owner=ELSEWHERE if q.exclusive else None, server_named=True))
        wanted: dict[BindingKey, dict[str, Any]] = {
            (b.source, (b.destination_kind, b.destination), b.routing_key, b.arguments_key):
                definitions.binding_arguments.get(b, {})
            for b in definitions.bindings if b.vhost == name
        }
        for exchange in vhost.exchanges.values():  # each has a row, whatever its durability (core: VirtualHost._stored)
            for destination, routing_key, args_key in list(exchange.bindings):
                key = (exchange.name, destination, routing_key, args_key)
                if key not in wanted and self._stored(vhost, destination):
                    exchange.unbind(destination, routing_key, args_key)
        for (source, destination, routing_key, args_key), arguments in wanted.items():
            bound = vhost.exchanges.get(source)
            if bound is not None and _exists(vhost, destination):
                bound.bind(destination, routing_key, arguments, args_key)  # False when it is there already
        for queue in list(vhost.queues.values()):
            if self._registered(queue) and queue.name not in queues and not queue.deleted:
                log.info("queue '%s' in vhost '%s' deleted on another node", queue.name, name)
                self.core.delete_queue(vhost, queue)
        for exchange in list(vhost.exchanges.values()):
            if exchange.name and not exchange.name.startswith("amq.") \
                    and exchange.name not in exchanges and exchange.name in vhost.exchanges:
                _try(f"exchange '{exchange.name}'", lambda n=exchange.name: vhost.delete_exchange(  # type: ignore[misc]
                    n, if_unused=False))

    def _registered(self, queue: Queue) -> bool:
        """Has the queue a row? A shared one has; a non-durable or exclusive one when it is a view, or this
        node's and leased (transient.py)."""
        shared = queue.durable and queue.exclusive_owner is None
        return shared or queue.remote is not None or queue.key in self.metadata.leases.held

    def _stored(self, vhost: VirtualHost, destination: tuple[str, str]) -> bool:
        """Are bindings to ``destination`` in PostgreSQL (so one missing from the snapshot was removed)?"""
        kind, name = destination
        if kind == "queue":
            queue = vhost.queues.get(name)
            return queue is not None and self._registered(queue)
        return name in vhost.exchanges  # durable or not: in a cluster every exchange has a row


def _exists(vhost: VirtualHost, destination: tuple[str, str]) -> bool:
    kind, name = destination
    return name in (vhost.queues if kind == "queue" else vhost.exchanges)


def _try(what: str, apply: Callable[[], object]) -> None:
    try:
        apply()
    except BrokerError as error:  # e.g. the vhost's queue limit here: logged, the rest goes on
        log.warning("could not apply %s from another node: %s", what, error)
