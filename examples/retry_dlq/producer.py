"""Publishes a few orders, persistent and confirmed: ``python producer.py [AMQP_URL] [COUNT]``."""

from __future__ import annotations

import json
import sys
from typing import Any

import pika
import topology


def publish_orders(url: str, count: int, **declare_options: Any) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()  # each publish returns once the broker has it on disk
        topology.declare(channel, **declare_options)
        for number in range(1, count + 1):
            channel.basic_publish(
                "",
                topology.WORK_QUEUE,
                json.dumps({"order": number}).encode(),
                pika.BasicProperties(delivery_mode=2, content_type="application/json"),
            )
    finally:
        connection.close()


if __name__ == "__main__":
    publish_orders(topology.broker_url(), int(sys.argv[2]) if len(sys.argv) > 2 else 10)
    print("published")
