"""Pieces every resource module uses: the vhosts a caller may list, path variables, message-stats blocks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from ...core.vhost import VirtualHost
from ..auth import visible_vhosts
from ..context import context, current_user
from ..direct import vhost_or_404

# Rates are shown to the thousandth: finer is float noise, coarser hides a slow trickle.
RATE_DIGITS = 3


def rate(value: float) -> float:
    return round(value, RATE_DIGITS) + 0.0  # + 0.0: never "-0.0"


def details(name: str, count: int, per_second: float, into: dict[str, Any]) -> None:
    """``name`` and ``name_details: {"rate": ...}``, RabbitMQ's pair for every counted field."""
    into[name] = count
    into[name + "_details"] = {"rate": rate(per_second)}


# RabbitMQ shows a group of message counters only once something was counted in it (its statistics
# come from separate tables: what publishers did, what consumers did), and no message_stats at all for an
# object nothing happened to. mailslot follows, so that documents have the same fields at the same moments.
PUBLISHER_COUNTERS = frozenset({"publish", "confirm", "return_unroutable", "drop_unroutable", "publish_in", "publish_out"})


def message_stats(names: Sequence[str], counts: Sequence[int], rates: Sequence[float]) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    published = any(c for n, c in zip(names, counts, strict=False) if n in PUBLISHER_COUNTERS)
    consumed = any(c for n, c in zip(names, counts, strict=False) if n not in PUBLISHER_COUNTERS)
    for name, count, per_second in zip(names, counts, rates, strict=False):
        if (published if name in PUBLISHER_COUNTERS else consumed):
            details(name, count, per_second, stats)
    return stats


def exchange_name(request: web.Request, key: str = "exchange") -> str:
    """An exchange named in the path; ``amq.default`` is the default exchange (RabbitMQ's rule)."""
    name = request.match_info[key]
    return "" if name == "amq.default" else name


def listed_vhosts(request: web.Request) -> list[VirtualHost]:
    """The path's vhost (404 when missing), or every vhost the caller may see, by name."""
    ctx = context(request)
    name = request.match_info.get("vhost")
    if name is not None:
        return [vhost_or_404(ctx, name)]
    names = visible_vhosts(ctx.access, current_user(request), sorted(ctx.core.vhosts))
    return [ctx.core.vhosts[n] for n in names]
