"""What the management API's handlers work with: the core, the access control, the live connections of the
front ends, this node's facts, and the settings. Built once by the composition root (bootstrap) and kept
in the aiohttp application (``request.app[CONTEXT]``), never in a module-level singleton.

Connections belong to the front ends (AMQP today, more protocols later), so the API sees them through the
small :class:`ConnectionSource` protocol: a front end's adapter (``transport/amqp_connections.py``) presents its
connections and channels as :class:`ConnectionView` / :class:`ChannelView` and closes one on request.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from ..core.access import AccessControl, User
from ..core.access.admin import AccessAdmin
from ..core.alarms import ResourceMonitor
from ..core.broker import Broker
from ..core.connections import ConnectionSource, NoConnections
from ..core.policies import PolicyEngine, use_policies
from ..core.queue import Queue
from ..core.session import Session
from ..core.stats import SESSION_COUNTERS, StatsSampler, add_counts, session_totals
from .runtime_parameters import RuntimeParameters

# RabbitMQ's management.http.max_body_size default (20,000,000 bytes since 3.11; 3.10 had no bound): a
# definitions file for tens of thousands of queues fits, a runaway upload does not.
DEFAULT_MAX_BODY_BYTES = 20_000_000


def product_version() -> str:
    try:
        return version("mailslot")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def file_descriptors() -> tuple[int, int]:
    """(open, limit) of this process's file descriptors; (0, 0) where they cannot be read."""
    try:
        import resource

        import psutil

        return int(psutil.Process().num_fds()), int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    except Exception:  # noqa: BLE001 -- not on this platform, or a failed reading: never fail a request for it
        return 0, 0


def default_node_name() -> str:
    """``mailslot@<host>``, as RabbitMQ names nodes ``rabbit@<host>``."""
    return f"mailslot@{socket.gethostname().split('.')[0]}"


@dataclass(frozen=True)
class Listener:
    """A port this node serves (``/api/overview``'s listeners, the port-listener health check)."""

    protocol: str  # "amqp", "amqp/ssl", "http", "https", "http/prometheus"
    ip_address: str
    port: int
    certfile: Path | None = None  # TLS listeners: the certificate (the certificate-expiration check)
    cacertfile: Path | None = None


class QueueFigures(Protocol):
    """A queue's figures as the node that owns it last shared them (mailslot.cluster.stats)."""

    @property
    def ready(self) -> int: ...
    @property
    def unacked(self) -> int: ...
    @property
    def consumers(self) -> int: ...  # the owner's own consumers


class ClusterView(Protocol):
    """This node's cluster (mailslot.cluster), as the management API shows it."""

    def node_extras(self) -> dict[str, Any]:
        """mailslot's extra fields of this node's ``/api/nodes`` document (its leases, its link)."""

    def peers(self) -> list[dict[str, Any]]:
        """The other nodes, as ``/api/nodes`` documents (the fields a node knows of another)."""

    def owner_of(self, queue_key: str) -> str | None:
        """The node that owns the queue of this store key (None: not shared, this node's)."""

    def figures(self, queue_key: str) -> QueueFigures | None:
        """The figures of a queue another node owns, as it last shared them (None: none to show)."""

    async def ask(self, owner: str, method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """The answer of node ``owner``'s management API to this request (``status``, ``headers``,
        ``body``); ConnectionError saying why when it cannot be had."""


@dataclass
class NodeInfo:
    """This node's facts for ``/api/nodes`` and ``/api/overview``."""

    name: str = field(default_factory=default_node_name)
    started_at: float = field(default_factory=time.time)  # wall clock
    listeners: list[Listener] = field(default_factory=list)
    data_dir: Path | None = None
    storage: str = ""
    monitor: ResourceMonitor | None = None  # alarms, limits and the last readings (None: not monitored)
    product_version: str = field(default_factory=product_version)
    cluster: ClusterView | None = None  # set when this node is part of a cluster (docs/cluster.md)

    def owner_of(self, queue_key: str) -> str:
        """The node that serves a queue: its lease owner in a cluster, else this node."""
        owner = self.cluster.owner_of(queue_key) if self.cluster is not None else None
        return owner or self.name

    def depths(self, queue: Queue) -> tuple[int, int, int]:
        """(ready, unacked, consumers) of a queue as every node shows them: for a queue another node owns,
        the owner's figures (up to about two lease polls old) plus this node's consumers; else its own."""
        figures = self.cluster.figures(queue.key) if self.cluster is not None and queue.remote is not None else None
        if figures is None:
            return queue.message_count, queue.unacked, len(queue.consumers)
        return figures.ready, figures.unacked, figures.consumers + len(queue.consumers)

    @property
    def cluster_name(self) -> str:
        return self.name

    def alarms(self) -> frozenset[str]:
        return self.monitor.active if self.monitor is not None else frozenset()


@dataclass
class ManagementSettings:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    open_health_checks: bool = False  # health checks answer anonymous callers (load balancers, probes)


@dataclass
class ManagementContext:
    core: Broker
    access: AccessControl
    connections: ConnectionSource = field(default_factory=NoConnections)
    node: NodeInfo = field(default_factory=NodeInfo)
    settings: ManagementSettings = field(default_factory=ManagementSettings)
    sampler: StatsSampler = field(default_factory=StatsSampler)
    rss: Callable[[], int | None] = lambda: None
    admin: AccessAdmin | None = None  # runtime users, vhosts, permissions, limits (None: read-only access)
    parameters: RuntimeParameters = field(init=False)
    # Policies and operator policies (bootstrap passes the broker's; None: one is made for this core).
    policies: PolicyEngine = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.parameters = RuntimeParameters(self.core.metadata)
        if self.policies is None:
            self.policies = PolicyEngine(self.core.metadata)
            use_policies(self.core, self.policies)

    def live_sessions(self) -> list[Session]:
        return [ch.session for c in self.connections.connections() for ch in c.channels]

    def session_totals(self, vhost: str | None = None, live: list[Session] | None = None) -> list[int]:
        """Every session's counters ever (closed ones too), of one vhost or all (SESSION_COUNTERS order)."""
        live = self.live_sessions() if live is None else live
        vhosts = list(self.core.vhosts.values()) if vhost is None else [self.core.vhosts[vhost]]
        totals = [0] * len(SESSION_COUNTERS)
        for each in vhosts:
            add_counts(totals, session_totals(each.stats, (s for s in live if s.vhost is each)))
        return totals

    def churn(self) -> tuple[int, ...]:
        """The broker's CHURN_COUNTERS: connections (from the front ends), channels and queues (the vhosts')."""
        opened, closed = self.connections.churn()
        stats = [vhost.stats for vhost in self.core.vhosts.values()]
        return (
            opened,
            closed,
            sum(s.channels_opened for s in stats),
            sum(s.channels_closed for s in stats),
            sum(s.queues_declared for s in stats),
            sum(s.queues_created for s in stats),
            sum(s.queues_deleted for s in stats),
        )


CONTEXT = web.AppKey("mailslot.management", ManagementContext)
# aiohttp 3.12+ types a request's storage with RequestKey (and warns about plain strings); older ones take strings.
_USER: Any = web.RequestKey("mailslot.user", User) if hasattr(web, "RequestKey") else "mailslot.user"


def context(request: web.Request) -> ManagementContext:
    return request.app[CONTEXT]


def current_user(request: web.Request) -> User:
    user: User = request[_USER]
    return user


def set_current_user(request: web.Request, user: User) -> None:
    request[_USER] = user
