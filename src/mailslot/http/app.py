"""The management API application: RabbitMQ's error bodies, the request body limit, and every route
under ``/api`` behind authentication."""

from __future__ import annotations

from aiohttp import web

from . import extras
from .context import CONTEXT, ManagementContext
from .dashboard import mount_dashboard
from .errors import error_middleware
from .resources import ROUTES
from .routing import install


def management_app(ctx: ManagementContext) -> web.Application:
    # client_max_size: a larger body is refused before it is buffered (400, as RabbitMQ's limit answers).
    app = web.Application(middlewares=[error_middleware], client_max_size=ctx.settings.max_body_bytes)
    app[CONTEXT] = ctx
    install(app, ROUTES)
    install(app, extras.setup(app, ctx))  # mailslot's own: browse, dead-letter queues, redrive, tracing
    mount_dashboard(app)  # the web dashboard at / (http/dashboard/)
    return app
