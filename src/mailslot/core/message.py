"""The protocol-neutral message and its per-queue entry.

``properties`` is kept as the encoded AMQP 0-9-1 property block: it is the canonical internal
form (RabbitMQ's classic queues did the same), so the AMQP hot path never decodes or re-encodes
it. Everything the core needs from it (persistence, headers for the headers exchange) is handed in
by the front end when the message is built, so the core never parses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

HeadersReader = Callable[[bytes], "dict[str, Any] | None"]


def _no_headers(_: bytes) -> None:
    return None


class Message:
    __slots__ = ("_headers", "_read_headers", "body", "exchange", "persistent", "properties", "routing_key", "ttl")

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        properties: bytes,
        body: bytes,
        persistent: bool,
        read_headers: HeadersReader = _no_headers,
        ttl: int | None = None,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
        self.persistent = persistent
        self._read_headers = read_headers
        self._headers: Any = _no_headers  # sentinel: not decoded yet
        self.ttl = ttl  # per-message TTL in ms (AMQP ``expiration``), None when it has none (core/ttl.py)

    @property
    def headers(self) -> dict[str, Any]:
        """Decoded on first use only (headers exchanges are rare on the hot path)."""
        if self._headers is _no_headers:
            self._headers = self._read_headers(self.properties) or {}
        headers: dict[str, Any] = self._headers
        return headers

    @property
    def size(self) -> int:
        return len(self.body)


class Entry:
    """A message's place in one queue: ``seq`` orders the queue and survives requeues and restarts."""

    __slots__ = ("deadline", "message", "redelivered", "requeues", "seq", "stored")

    def __init__(
        self, seq: int, message: Message, redelivered: bool, stored: bool, deadline: int = 0, requeues: int = 0
    ) -> None:
        self.seq = seq
        self.message = message
        self.redelivered = redelivered
        self.stored = stored  # a row exists in the message log (remove it on ack)
        self.deadline = deadline  # expiry in ms since the epoch, 0: never (core/ttl.py); kept across requeues
        # Failed deliveries so far (nack/reject with requeue, requeued on close): x-delivery-limit and the
        # x-delivery-count header. Kept by the log as StoredMessage.requeues, so it survives a restart.
        self.requeues = requeues

    def __lt__(self, other: Entry) -> bool:  # requeued entries sit in a heap ordered by seq
        return self.seq < other.seq
