"""Dead-lettering: the ``x-death`` bookkeeping RabbitMQ writes on a message that leaves a queue
other than by delivery (https://www.rabbitmq.com/docs/dlx).

The semantics live here; the encoded properties are read and rewritten by the message's own codec
(core/message.py), so the core never parses a wire format.
"""

from __future__ import annotations

import datetime
from typing import Any


def death_headers(
    headers: dict[str, Any] | None,
    *,
    queue: str,
    reason: str,
    exchange: str,
    routing_keys: list[str],
    now: float,
    original_expiration: str | None,
) -> dict[str, Any]:
    """The headers after one more death: the entry for (queue, reason) counts up and moves to the
    front of ``x-death``; ``x-first-death-*`` are set once (RabbitMQ 3.10)."""
    headers = dict(headers or {})
    deaths = [dict(d) for d in headers.get("x-death") or [] if isinstance(d, dict)]
    found = None
    for i, death in enumerate(deaths):
        if _text(death.get("queue")) == queue and _text(death.get("reason")) == reason:
            found = deaths.pop(i)
            break
    if found is None:
        found = {
            "count": 0,
            "reason": reason,
            "queue": queue,
            "time": datetime.datetime.fromtimestamp(int(now), tz=datetime.UTC),
            "exchange": exchange,
            "routing-keys": routing_keys,
        }
        if original_expiration is not None:
            found["original-expiration"] = original_expiration
    found["count"] = int(found.get("count", 0)) + 1
    deaths.insert(0, found)
    headers["x-death"] = deaths
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-exchange", exchange)
    return headers


def died_in(headers: dict[str, Any] | None, queue: str) -> set[str]:
    """The reasons with which a message already died in ``queue`` (cycle detection)."""
    return {
        _text(d.get("reason"))
        for d in (headers or {}).get("x-death") or []
        if isinstance(d, dict) and _text(d.get("queue")) == queue
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
