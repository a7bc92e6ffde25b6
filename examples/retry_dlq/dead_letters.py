"""Lists what was dead-lettered, and why: ``python dead_letters.py [AMQP_URL]``. Leaves the messages
there (they are requeued when the program ends), so an operator can look, fix and replay."""

from __future__ import annotations

import json
from typing import Any

import pika
import topology


def dead_letters(url: str, **declare_options: Any) -> list[dict[str, Any]]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        topology.declare(channel, **declare_options)
        found = []
        while True:
            method, properties, body = channel.basic_get(topology.DEAD_QUEUE)  # unacked: back on close
            if method is None:
                return found
            death = properties.headers["x-death"][0]
            found.append({"order": json.loads(body)["order"], "reason": death["reason"], "queue": death["queue"]})
    finally:
        connection.close()


if __name__ == "__main__":
    for dead in dead_letters(topology.broker_url()):
        print(f"order {dead['order']}: dead-lettered from {dead['queue']} ({dead['reason']})")
