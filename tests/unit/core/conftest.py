from __future__ import annotations

from typing import Any

import pytest

from mailslot.core.broker import Broker
from mailslot.core.message import Message
from mailslot.core.session import Gate, Session
from mailslot.storage.memory import MemoryMessageLog, MemoryMetadataStore
from mailslot.testing.codec import JSON_CODEC


class RecordingSink:
    """A DeliverySink that records what the core hands to its front end."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, int, bool, bytes]] = []
        self.cancelled: list[str] = []

    def deliver(self, consumer_tag: str, delivery_tag: int, redelivered: bool, message: Message) -> None:
        self.deliveries.append((consumer_tag, delivery_tag, redelivered, message.body))

    def deliver_many(self, consumer_tag: str, first_tag: int, entries: list) -> None:
        for i, entry in enumerate(entries):
            self.deliver(consumer_tag, first_tag + i, entry.redelivered, entry.message)

    def consumer_cancelled(self, consumer_tag: str) -> None:
        self.cancelled.append(consumer_tag)

    def bodies(self) -> list[bytes]:
        return [d[3] for d in self.deliveries]


class Harness:
    def __init__(self) -> None:
        self.log = MemoryMessageLog()
        self.meta = MemoryMetadataStore()
        self.broker = Broker(self.log, self.meta, [JSON_CODEC])
        self.vhost = self.broker.vhosts["/"]

    def session(self, owner: object | None = None) -> tuple[Session, RecordingSink]:
        sink = RecordingSink()
        return self.broker.open_session(self.vhost, owner or object(), sink, Gate()), sink

    def declare(self, session: Session, name: str, **kwargs: Any) -> str:
        options = {"passive": False, "durable": True, "exclusive": False, "auto_delete": False, "arguments": {}}
        options.update(kwargs)
        return self.vhost.declare_queue(name, owner=session.owner, **options).name

    def publish(self, session: Session, routing_key: str, body: bytes, exchange: str = "", persistent: bool = True) -> bool:
        return session.publish(exchange, routing_key, Message(exchange, routing_key, b"", body, persistent, JSON_CODEC), False)


@pytest.fixture
def harness() -> Harness:
    return Harness()
