"""Several mailslot nodes sharing queues over one PostgreSQL (docs/cluster.md, issue 14).

PostgreSQL is the durable log and the source of truth for who owns what: each shared queue has one
owner at a time, by a lease row renewed on the database's clock (leases.py); every write of the
owner is fenced by the lease's epoch (store.py); the node polls the leases and takes over the queues
of a node that stopped renewing (node.py). ``open_cluster_store`` opens the store of such a node.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import psycopg

from mailslot.core.access.admin import AccessAdmin
from mailslot.core.access.control import InternalAccessControl
from mailslot.core.broker import Broker
from mailslot.core.policies import PolicyEngine
from mailslot.storage.postgres import DEFAULT_COMMIT_TIMEOUT, PostgresSettings, StoreUnavailable
from mailslot.storage.postgres import _safe as safe_dsn
from mailslot.storage.postgres._migrate import migrate

from . import link
from .forward import Forwarder, ForwardReceiver
from .leases import DEFAULT_LEASE_TTL, Lease, LeaseTable, NodeRow
from .node import ClusterNode
from .proxy import QueryClient, QueryServer
from .store import ClusterMessageLog, ClusterMetadataStore, lease_group
from .sync import SYNC_INTERVAL, MetadataSync
from .transient import TransientQueues

log = logging.getLogger("mailslot.cluster")

__all__ = [
    "DEFAULT_LEASE_TTL",
    "SYNC_INTERVAL",
    "ClusterMessageLog",
    "ClusterMetadataStore",
    "ClusterNode",
    "Lease",
    "LeaseTable",
    "MetadataSync",
    "NodeRow",
    "lease_group",
    "open_cluster_store",
    "start_cluster_node",
]


def open_cluster_store(
    settings: PostgresSettings, lease_ttl: float = DEFAULT_LEASE_TTL, commit_timeout: float = DEFAULT_COMMIT_TIMEOUT
) -> tuple[ClusterMessageLog, ClusterMetadataStore]:
    """Migrate the schema, then open the message log (registering the node) and the metadata, both
    sharing one lease table. Raises StoreUnavailable with one line when PostgreSQL cannot be used."""
    try:
        migrate(settings)
        leases = LeaseTable(settings, lease_ttl)
        message_log = ClusterMessageLog(settings, leases, commit_timeout)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"cannot use PostgreSQL at {safe_dsn(settings.dsn)}: {' '.join(str(exc).split())}") from exc
    return message_log, ClusterMetadataStore(settings, leases)


async def start_cluster_node(
    core: Broker,
    message_log: ClusterMessageLog,
    metadata: ClusterMetadataStore,
    loop: asyncio.AbstractEventLoop,
    access: InternalAccessControl,
    admin: AccessAdmin,
    policies: PolicyEngine,
    link_address: str = "",
    secret: str = "",
    tls: link.LinkTLS | None = None,
) -> ClusterNode:
    """After the core recovered: serve this node's share of the queues, follow the others' changes and,
    with ``link_address``, listen on the cluster link and forward publishes to their queue's owner."""
    node = ClusterNode(core, message_log, metadata, loop)
    node.transient = TransientQueues(core, metadata, message_log.leases, node._make_remote)
    core.queue_names = node.transient  # names of non-durable and exclusive queues: unique cluster-wide
    for vhost in core.vhosts.values():
        vhost.queue_names = node.transient
    if link_address:
        key = secret.encode()
        receiver = ForwardReceiver(core, message_log.leases, key)
        receiver.hosts_of = lambda name: link_hosts(node.links.get(name, ""))
        queries = QueryServer(lambda: node.management_url)
        receiver.queries = queries
        node.queries = QueryClient(message_log.node, key, lambda: node.links, tls)
        server, bound = await link.start_server(link.parse_address(link_address), receiver.handle, tls)
        node.link_address = advertised(bound)
        forwarder = Forwarder(message_log.node, key, lambda: node.owners, lambda: node.links, loop,
                              message_log.commit_timeout, tls)
        forwarder.core = core
        node.remote = message_log.forwarder = forwarder
        node.closers += [server.close, receiver.close, forwarder.close, queries.close]
        node.received = lambda: receiver.received
        log.info("cluster link listening on %s (advertised as %s%s)", bound, node.link_address,
                 ", mutual TLS" if tls is not None else "")
    node.sync = MetadataSync(message_log.settings, core, metadata, access, admin, policies, loop.call_soon_threadsafe)
    node.start()
    return node


def link_hosts(address: str) -> list[str]:
    """The host of a node's advertised link address (none for a Unix socket, or no address)."""
    try:
        parsed = link.parse_address(address)
    except ValueError:
        return []
    return [parsed.host] if parsed.transport == "tcp" else []


def advertised(bound: link.Address) -> str:
    """The address other nodes reach this one's link at: a wildcard host is replaced by this host's name."""
    if bound.transport == "tcp" and bound.host in ("", "0.0.0.0", "::"):
        return f"{socket.getfqdn()}:{bound.port}"
    return str(bound)
