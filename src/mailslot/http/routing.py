"""Routes of the management API: each resource module declares its handlers with the rule that guards
them, and :func:`install` puts them under ``/api`` with authentication in front of every one.

Paths take RabbitMQ's names for their variables (``{vhost}``, ``{name}``, ``{source}``...); aiohttp
matches them on the raw path and decodes each part, so a vhost ``/`` is written ``%2F`` and never splits
a path. ``amq.default`` in an exchange position names the default exchange, as in RabbitMQ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ..core.access import User
from .auth import Rule, authenticate, check_rule
from .context import context, set_current_user

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ANONYMOUS = User("", frozenset())


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    rule: Rule


class Routes:
    """A resource module's routes: ``@routes.get("/queues/{vhost}", Rule.VHOST)``."""

    def __init__(self) -> None:
        self.items: list[Route] = []

    def add(self, method: str, path: str, rule: Rule) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.items.append(Route(method, path, handler, rule))
            return handler

        return register

    def get(self, path: str, rule: Rule = Rule.ANY) -> Callable[[Handler], Handler]:
        return self.add("GET", path, rule)

    def put(self, path: str, rule: Rule = Rule.ANY) -> Callable[[Handler], Handler]:
        return self.add("PUT", path, rule)

    def post(self, path: str, rule: Rule = Rule.ANY) -> Callable[[Handler], Handler]:
        return self.add("POST", path, rule)

    def delete(self, path: str, rule: Rule = Rule.ANY) -> Callable[[Handler], Handler]:
        return self.add("DELETE", path, rule)


def guarded(route: Route) -> Handler:
    """The route's handler behind authentication and its rule."""

    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = context(request)
        if route.rule is Rule.HEALTH and ctx.settings.open_health_checks and "Authorization" not in request.headers:
            set_current_user(request, ANONYMOUS)
            return await route.handler(request)
        user = authenticate(ctx.access, request)
        vhost = request.match_info.get("vhost")
        check_rule(route.rule, user, ctx.access, vhost, vhost is not None and vhost in ctx.core.vhosts)
        set_current_user(request, user)
        return await route.handler(request)

    handle.__name__ = route.handler.__name__
    return handle


def install(app: web.Application, routes: list[Route], prefix: str = "/api") -> None:
    for route in routes:
        handler = guarded(route)
        if route.method == "GET":
            app.router.add_get(prefix + route.path, handler, allow_head=True)
        else:
            app.router.add_route(route.method, prefix + route.path, handler)
