"""The management API's resources, one module each; ``ROUTES`` is every route, in matching order (static
path segments before variables where two paths could match the same request)."""

from __future__ import annotations

from ..routing import Route
from . import (
    bindings,
    consumers,
    definitions,
    exchanges,
    health,
    overview,
    parameters,
    policies,
    queues,
    users,
    vhosts,
)

ROUTES: list[Route] = [
    route
    for module in (overview, users, vhosts, consumers, exchanges, queues, bindings, parameters, policies, definitions, health)
    for route in module.routes.items
]
