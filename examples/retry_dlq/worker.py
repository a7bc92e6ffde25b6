"""A flaky worker: ``python worker.py [AMQP_URL]``.

It acknowledges an order it handled and nacks (requeue=True) one that failed. The broker does the rest:
the failed order waits its retry delay before it comes back (no tight retry loop, no hand-made retry
queues), every redelivery says how many times it failed (``x-delivery-count``), and an order that keeps
failing is dead-lettered to ``orders.dead`` once it is past the delivery limit.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pika
import topology


class TemporaryFailure(Exception):
    """The downstream service hiccuped: worth trying again later."""


def flaky_handler(order: dict[str, Any]) -> None:
    """Stands in for real work: order 7 can never be handled (a poison message); others fail 30% of
    the time."""
    if order["order"] == 7:
        raise TemporaryFailure("order 7 references a product that does not exist")
    if random.random() < 0.3:
        raise TemporaryFailure("payment service timed out")


def run_worker(url: str, handle: Callable[[dict[str, Any]], None] = flaky_handler,
               idle_seconds: float | None = None, log: Callable[[str], None] = print,
               **declare_options: Any) -> None:
    """Consumes until interrupted (or until nothing arrived for ``idle_seconds``)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        topology.declare(channel, **declare_options)
        channel.basic_qos(prefetch_count=10)
        for method, properties, body in channel.consume(topology.WORK_QUEUE, inactivity_timeout=idle_seconds):
            if method is None:  # idle for idle_seconds
                break
            order = json.loads(body)
            failures = (properties.headers or {}).get("x-delivery-count", 0)
            try:
                handle(order)
            except TemporaryFailure as error:
                log(f"order {order['order']}: attempt {failures + 1} failed ({error}); retried later")
                channel.basic_nack(method.delivery_tag, requeue=True)
            else:
                log(f"order {order['order']}: done on attempt {failures + 1}")
                channel.basic_ack(method.delivery_tag)
        channel.cancel()
    finally:
        connection.close()


if __name__ == "__main__":
    try:
        run_worker(topology.broker_url())
    except KeyboardInterrupt:
        pass
