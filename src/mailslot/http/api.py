"""JSON documents of the management API, built from the core and its stats sampler (no I/O here).

Field names follow RabbitMQ's management API (``/api/queues``: ``messages``, ``messages_ready``,
``messages_unacknowledged``, ``consumers``, ...) where it has them; rates and forecasts are flat
fields of our own (``publish_rate``, ``deliver_rate``, ``drain_seconds``, ``full_seconds``).
"""

from __future__ import annotations

import base64
import datetime
import decimal
from collections.abc import Iterator, Mapping
from typing import Any

from ..core.broker import Broker
from ..core.queue import Queue
from ..core.stats import QueueStats, StatsSampler

PRODUCT_NAME = "mailslot"


def all_queues(core: Broker) -> Iterator[Queue]:
    for vhost in core.vhosts.values():
        yield from vhost.queues.values()


def jsonable(value: Any) -> Any:
    """An AMQP field-table value as JSON: tables and arrays recursively, text for what JSON lacks."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return str(value)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def queue_document(stats: QueueStats) -> dict[str, Any]:
    return {
        "vhost": stats.vhost,
        "name": stats.name,
        "messages": stats.messages,
        "messages_ready": stats.messages_ready,
        "messages_unacknowledged": stats.messages_unacknowledged,
        "consumers": stats.consumers,
        "durable": stats.durable,
        "auto_delete": stats.auto_delete,
        "exclusive": stats.exclusive,
        "arguments": jsonable(stats.arguments),
        "publish_rate": _round(stats.publish_rate),
        "deliver_rate": _round(stats.deliver_rate),
        "drain_seconds": _round(stats.drain_seconds),
        "full_seconds": _round(stats.full_seconds),
        "single_active_consumer_tag": stats.single_active_consumer_tag,
    }


def consumer_details(queue: Queue) -> list[dict[str, Any]]:
    """The queue's consumers in registration order, with RabbitMQ's ``active`` / ``activity_status``
    (``single_active`` and ``waiting`` with x-single-active-consumer, ``up`` otherwise)."""
    single = queue.policy.single_active_consumer
    details = []
    for i, consumer in enumerate(queue.consumers):
        active = not single or i == 0
        details.append(
            {
                "consumer_tag": consumer.tag,
                "active": active,
                "activity_status": ("single_active" if active else "waiting") if single else "up",
                "exclusive": consumer.exclusive,
                "ack_required": not consumer.no_ack,
                "prefetch_count": consumer.prefetch,
                "queue": {"name": queue.name, "vhost": queue.vhost},
            }
        )
    return details


def queues_document(core: Broker, sampler: StatsSampler) -> list[dict[str, Any]]:
    """Every queue, ordered by vhost then name (as RabbitMQ lists them)."""
    queues = sorted(all_queues(core), key=lambda q: (q.vhost, q.name))
    return [queue_document(sampler.queue_stats(queue)) for queue in queues]


def overview_document(core: Broker, sampler: StatsSampler, version: str) -> dict[str, Any]:
    totals = sampler.totals(all_queues(core))
    return {
        "product_name": PRODUCT_NAME,
        "product_version": version,
        "queue_totals": {
            "messages": totals.messages,
            "messages_ready": totals.messages_ready,
            "messages_unacknowledged": totals.messages_unacknowledged,
        },
        "object_totals": {"queues": totals.queues, "vhosts": len(core.vhosts)},
        "publish_rate": _round(totals.publish_rate),
        "deliver_rate": _round(totals.deliver_rate),
        "rss_bytes": totals.rss_bytes,
    }
