"""``/api/overview``, ``/api/whoami``, ``/api/nodes``, ``/api/cluster-name``, ``/api/extensions``.

mailslot answers as a single RabbitMQ 3.10 node would: ``rabbitmq_version`` and ``management_version``
say which RabbitMQ API it speaks (3.10.8, the reference it is tested against), ``product_name`` and
``product_version`` say what it is. Erlang-only facts (``erlang_version``, process counts, garbage
collection) are null or left out; ``python_version`` is there instead.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from aiohttp import web

from ...core.exchanges import EXCHANGE_TYPES
from ...core.stats import CHURN_COUNTERS, VHOST_SAMPLE
from ..auth import Rule, visible_vhosts
from ..bodies import field, read_body
from ..context import ManagementContext, context, current_user, file_descriptors
from ..errors import empty_response, json_response, not_found
from ..listing import Listing, reply_list, reply_object
from ..routing import Routes
from .common import details, message_stats
from .parameters import parameters_of

routes = Routes()

RABBITMQ_API_VERSION = "3.10.8"  # the RabbitMQ release whose management API mailslot's follows
PRODUCT_NAME = "mailslot"
# RabbitMQ's sample_retention_policies in its "basic" rates mode. mailslot keeps only the current rate
# (a 5 s window); the setting is shown so that clients that read it find what they expect.
SAMPLE_RETENTION = {"global": [600, 3600, 28800, 86400], "basic": [600, 3600], "detailed": [600]}
EXCHANGE_TYPE_DESCRIPTIONS = {
    "direct": "AMQP direct exchange, as per the AMQP specification",
    "fanout": "AMQP fanout exchange, as per the AMQP specification",
    "headers": "AMQP headers exchange, as per the AMQP specification",
    "topic": "AMQP topic exchange, as per the AMQP specification",
    "x-delayed-message": "Delayed message exchange (the rabbitmq-delayed-message-exchange plugin's)",
    "x-message-deduplication": "Message deduplication exchange (the message-deduplication plugin's)",
}
CHURN = CHURN_COUNTERS
_SESSION_FIELDS = VHOST_SAMPLE[:12]


def exchange_types() -> list[dict[str, Any]]:
    names = sorted({*EXCHANGE_TYPES, *EXCHANGE_TYPE_DESCRIPTIONS})
    return [{"name": n, "description": EXCHANGE_TYPE_DESCRIPTIONS.get(n, ""), "enabled": True} for n in names]


def listeners(ctx: ManagementContext) -> list[dict[str, Any]]:
    return [
        {"node": ctx.node.name, "protocol": lst.protocol, "ip_address": lst.ip_address, "port": lst.port,
         "socket_opts": {}}
        for lst in ctx.node.listeners
    ]


def broker_totals(ctx: ManagementContext, vhost: str = "") -> tuple[list[int], tuple[float, ...]]:
    """The session totals of one vhost, or of the whole broker for "" (counts now, rates sampled)."""
    return ctx.session_totals(vhost or None), ctx.sampler.vhosts.rates(vhost)


@routes.get("/overview")
async def overview(request: web.Request) -> web.Response:
    ctx = context(request)
    user = current_user(request)
    names = visible_vhosts(ctx.access, user, sorted(ctx.core.vhosts))
    vhosts = [ctx.core.vhosts[n] for n in names]
    whole = len(names) == len(ctx.core.vhosts)
    counts, rates = broker_totals(ctx) if whole else ([0] * len(_SESSION_FIELDS), (0.0,) * len(VHOST_SAMPLE))
    if not whole:  # a management user: the totals of its vhosts only, as RabbitMQ filters them
        for vhost in vhosts:
            more, _ = broker_totals(ctx, vhost.name)
            counts = [a + b for a, b in zip(counts, more, strict=True)]
    ready = sum(q.message_count for v in vhosts for q in v.queues.values())
    unacked = sum(q.unacked for v in vhosts for q in v.queues.values())
    queue_totals: dict[str, Any] = {}
    depth_rates = ctx.sampler.depth_rates("") if whole else tuple(
        sum(ctx.sampler.depth_rates(v.name)[i] for v in vhosts) for i in range(3)
    )
    for name, value, per_second in zip(
        ("messages", "messages_ready", "messages_unacknowledged"), (ready + unacked, ready, unacked), depth_rates,
        strict=True,
    ):
        details(name, value, per_second, queue_totals)
    connections = [c for c in ctx.connections.connections() if c.vhost in set(names)]
    churn = ctx.churn()
    churn_rates: dict[str, Any] = {}
    for name, value, per_second in zip(CHURN, churn, ctx.sampler.churn.rates(""), strict=True):
        details(name, value, per_second, churn_rates)
    document = {
        "management_version": RABBITMQ_API_VERSION,
        "rates_mode": "basic",
        "sample_retention_policies": SAMPLE_RETENTION,
        "exchange_types": exchange_types(),
        "product_version": ctx.node.product_version,
        "product_name": PRODUCT_NAME,
        "rabbitmq_version": RABBITMQ_API_VERSION,
        "cluster_name": cluster_name(ctx),
        "erlang_version": None,
        "erlang_full_version": None,
        "python_version": platform.python_version(),
        "release_series_support_status": "supported",
        "disable_stats": False,
        "enable_queue_totals": False,
        "message_stats": message_stats(_SESSION_FIELDS, counts, rates),
        "churn_rates": churn_rates,
        "queue_totals": queue_totals,
        "object_totals": {
            "channels": sum(len(c.channels) for c in connections),
            "connections": len(connections),
            "consumers": sum(len(q.consumers) for v in vhosts for q in v.queues.values()),
            "exchanges": sum(len(v.exchanges) for v in vhosts),
            "queues": sum(len(v.queues) for v in vhosts),
        },
        "statistics_db_event_queue": 0,
        "node": ctx.node.name,
        "listeners": listeners(ctx),
        "contexts": [
            {"node": ctx.node.name, "description": "mailslot management", "path": "/",
             "port": str(lst.port)}
            for lst in ctx.node.listeners if lst.protocol.startswith("http")
        ],
        "rss_bytes": ctx.sampler.rss_bytes,  # mailslot: the broker's memory at the last sample
    }
    return reply_object(request, document)


@routes.get("/whoami")
async def whoami(request: web.Request) -> web.Response:
    user = current_user(request)
    return json_response({"name": user.name, "tags": sorted(user.tags)})


@routes.get("/extensions")
async def extensions(request: web.Request) -> web.Response:
    return json_response([])  # no UI plugins: mailslot's dashboard is served on its own


# ---- cluster name ---------------------------------------------------------------------------------------

CLUSTER_NAME = "cluster_name"  # RabbitMQ keeps it as this global parameter too


def cluster_name(ctx: ManagementContext) -> str:
    value = parameters_of(ctx).global_value(CLUSTER_NAME)
    return value if isinstance(value, str) else ctx.node.cluster_name


@routes.get("/cluster-name")
async def get_cluster_name(request: web.Request) -> web.Response:
    return json_response({"name": cluster_name(context(request))})


@routes.put("/cluster-name", Rule.ADMIN)
async def set_cluster_name(request: web.Request) -> web.Response:
    ctx = context(request)
    name = field(await read_body(request), "name", "str", required=True)
    existed = parameters_of(ctx).global_value(CLUSTER_NAME) is not None
    parameters_of(ctx).set_global(CLUSTER_NAME, name)
    return empty_response(204 if existed else 201)


# ---- nodes ----------------------------------------------------------------------------------------------


def node_document(ctx: ManagementContext) -> dict[str, Any]:
    node = ctx.node
    monitor = node.monitor
    alarms = node.alarms()
    fd_used, fd_total = file_descriptors()
    sockets_used = len(ctx.connections.connections())
    uptime_ms = int((time.time() - node.started_at) * 1000)
    doc: dict[str, Any] = {
        "name": node.name,
        "type": "disc",
        "running": True,
        "os_pid": str(os.getpid()),
        "fd_used": fd_used,
        "fd_total": fd_total,
        "sockets_used": sockets_used,
        "sockets_total": fd_total,
        "mem_used": ctx.sampler.rss_bytes or 0,
        "mem_limit": monitor.limits.memory_bytes if monitor is not None else 0,
        "mem_alarm": "memory" in alarms,
        "mem_calculation_strategy": "rss",
        "disk_free": monitor.last.disk_free_bytes if monitor is not None and monitor.last is not None else 0,
        "disk_free_limit": monitor.limits.disk_free_bytes if monitor is not None else 0,
        "disk_free_alarm": "disk" in alarms,
        "proc_used": 0,
        "proc_total": 0,
        "run_queue": 0,
        "processors": os.cpu_count() or 1,
        "uptime": uptime_ms,
        "rates_mode": "basic",
        "net_ticktime": 0,
        "db_dir": str(node.data_dir) if node.data_dir is not None else "",
        "log_files": [],
        "config_files": [],
        "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
        "exchange_types": exchange_types(),
        "auth_mechanisms": [
            {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": True},
            {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": True},
        ],
        "applications": [{"name": "mailslot", "description": "mailslot message broker",
                          "version": node.product_version}],
        "contexts": [],
        "partitions": [],
        "cluster_links": [],
        "storage": node.storage,  # mailslot: where messages are kept
    }
    if node.cluster is not None:
        doc["cluster"] = node.cluster.node_extras()  # mailslot: its leases, its link
    if monitor is not None and monitor.last is not None:
        doc["mem_used"] = monitor.last.memory_bytes
    for name, value, per_second in zip(CHURN, ctx.churn(), ctx.sampler.churn.rates(""), strict=True):
        details(name, value, per_second, doc)
    return doc


@routes.get("/nodes", Rule.MONITOR)
async def list_nodes(request: web.Request) -> web.Response:
    ctx = context(request)
    documents = [node_document(ctx), *_peers(ctx)]  # in a cluster, every node sharing the schema
    listing = Listing(document=lambda doc: doc, basic={"name": lambda doc: doc["name"]})
    return reply_list(request, documents, listing)


@routes.get("/nodes/{node}", Rule.MONITOR)
async def show_node(request: web.Request) -> web.Response:
    ctx = context(request)
    name = request.match_info["node"]
    if name == ctx.node.name:
        return reply_object(request, node_document(ctx))
    for peer in _peers(ctx):
        if peer["name"] == name:
            return reply_object(request, peer)
    raise not_found()


def _peers(ctx: ManagementContext) -> list[dict[str, Any]]:
    return ctx.node.cluster.peers() if ctx.node.cluster is not None else []
