"""The queues of the example: ``orders`` (retry with backoff, at most a few failed deliveries) and
``orders.dead`` (where the hopeless ones go). Declared the same way by every program here, so any of
them can start first."""

from __future__ import annotations

import os
import sys

from pika.adapters.blocking_connection import BlockingChannel

WORK_QUEUE = "orders"
DEAD_QUEUE = "orders.dead"
# A failed order waits 1 s, then 5 s, then 30 s (and 30 s again) before it is tried again...
RETRY_DELAYS_MS = [1_000, 5_000, 30_000]
# ...and it is redelivered at most 4 times: when its 5th delivery fails too, it goes to DEAD_QUEUE.
DELIVERY_LIMIT = 4


def broker_url() -> str:
    """The broker: the first command-line argument, else $AMQP_URL, else a broker on this machine."""
    if len(sys.argv) > 1:
        return sys.argv[1]
    return os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")


def declare(channel: BlockingChannel, retry_delays_ms: list[int] | None = None,
            delivery_limit: int = DELIVERY_LIMIT) -> None:
    channel.queue_declare(DEAD_QUEUE, durable=True)
    channel.queue_declare(
        WORK_QUEUE,
        durable=True,
        arguments={
            "x-retry-delays": retry_delays_ms or RETRY_DELAYS_MS,  # mailslot only (see docs)
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": "",  # the default exchange...
            "x-dead-letter-routing-key": DEAD_QUEUE,  # ...routes to the dead-letter queue by name
        },
    )
