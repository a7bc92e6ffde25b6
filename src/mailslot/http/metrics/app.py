"""The Prometheus endpoint (``--prometheus-port``, 15692 by default): ``/metrics``, ``/metrics/per-object`` and
``/metrics/detailed``, in the Prometheus text format, without authentication (as rabbitmq_prometheus).

``/metrics/detailed`` takes ``family=`` (repeatable: RabbitMQ's group names, ``queue_coarse_metrics``...)
and ``vhost=`` (repeatable: limits the queue groups); unknown families and vhosts are ignored, as RabbitMQ
ignores them. The answer is gzip-compressed for a scraper that accepts it.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ...core.stats import CommitStats
from ..context import ManagementContext
from .collector import View, scrape
from .families import GROUPS

CONTEXT = web.AppKey("mailslot.metrics", ManagementContext)
COMMITS = web.AppKey("mailslot.commit_stats", CommitStats)


def _respond(request: web.Request, view: View) -> web.Response:
    ctx = request.app[CONTEXT]
    body = scrape(ctx, view, request.app.get(COMMITS))
    response = web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression()
    return response


async def aggregated(request: web.Request) -> web.Response:
    return _respond(request, View("aggregated"))


async def per_object(request: web.Request) -> web.Response:
    return _respond(request, View("per-object"))


async def detailed(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    groups = frozenset(g for g in request.query.getall("family", []) if g in GROUPS)
    vhosts = frozenset(v for v in request.query.getall("vhost", []) if v in ctx.core.vhosts)
    return _respond(request, View("detailed", groups, vhosts if "vhost" in request.query else None))


def metrics_app(ctx: ManagementContext, commit_stats: CommitStats | None = None) -> web.Application:
    app = web.Application()
    app[CONTEXT] = ctx
    if commit_stats is not None:
        app[COMMITS] = commit_stats
    app.router.add_get("/metrics", aggregated)
    app.router.add_get("/metrics/per-object", per_object)
    app.router.add_get("/metrics/detailed", detailed)
    return app

