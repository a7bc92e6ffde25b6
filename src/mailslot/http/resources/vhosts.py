"""``/api/vhosts``: list and show, with each vhost's message totals and rates; its description, tags and
default queue type come from the access model's vhost record. Creating and deleting vhosts: users.py.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...core.stats import CONNECTION_COUNTERS, VHOST_SAMPLE
from ...core.vhost import VirtualHost
from ..auth import Rule, visible_vhosts
from ..context import ManagementContext, context, current_user
from ..direct import vhost_or_404
from ..listing import Listing, reply_list, reply_object
from ..routing import Routes
from .common import details, message_stats
from .overview import broker_totals

routes = Routes()

DEFAULT_DESCRIPTION = "Default virtual host"
_SESSION_FIELDS = VHOST_SAMPLE[:12]


def vhost_document(ctx: ManagementContext, vhost: VirtualHost) -> dict[str, Any]:
    record = ctx.admin.access.vhosts.get(vhost.name) if ctx.admin is not None else None
    description = record.description if record is not None else (DEFAULT_DESCRIPTION if vhost.name == "/" else "")
    tags = list(record.tags) if record is not None else []
    queue_type = (record.default_queue_type if record is not None else None) or "undefined"
    counts, rates = broker_totals(ctx, vhost.name)
    ready = sum(q.message_count for q in vhost.queues.values())
    unacked = sum(q.unacked for q in vhost.queues.values())
    recv = send = 0
    for conn in ctx.connections.connections():
        if conn.vhost == vhost.name:
            recv, send = recv + conn.recv_oct, send + conn.send_oct
    doc: dict[str, Any] = {
        "name": vhost.name,
        "description": description,
        "tags": tags,
        "default_queue_type": queue_type,
        "metadata": {"description": description, "tags": tags},
        "tracing": vhost.tracer is not None,
        "cluster_state": {ctx.node.name: "running"},
    }
    depth_rates = ctx.sampler.depth_rates(vhost.name)
    for name, value, per_second in zip(
        ("messages", "messages_ready", "messages_unacknowledged"), (ready + unacked, ready, unacked), depth_rates,
        strict=True,
    ):
        details(name, value, per_second, doc)
    base = len(_SESSION_FIELDS)
    for i, (name, value) in enumerate(zip(CONNECTION_COUNTERS, (recv, send), strict=True)):
        details(name, value, rates[base + i], doc)
    if any(counts):
        doc["message_stats"] = message_stats(_SESSION_FIELDS, counts, rates)
    return doc


@routes.get("/vhosts")
async def list_vhosts(request: web.Request) -> web.Response:
    ctx = context(request)
    names = visible_vhosts(ctx.access, current_user(request), sorted(ctx.core.vhosts))
    listing = Listing(document=lambda v: vhost_document(ctx, v), basic={"name": lambda v: v.name}, default_sort=("name",))
    return reply_list(request, [ctx.core.vhosts[n] for n in names], listing)


@routes.get("/vhosts/{vhost}", Rule.ADMIN)  # as RabbitMQ 3.10 (rabbit_mgmt_wm_vhost)
async def show_vhost(request: web.Request) -> web.Response:
    ctx = context(request)
    return reply_object(request, vhost_document(ctx, vhost_or_404(ctx, request.match_info["vhost"])))
