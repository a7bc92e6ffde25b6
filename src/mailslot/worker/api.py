"""The worker's public types: the delivery guarantee, the :class:`Job` a handler gets, the outputs it
publishes, and the :class:`Inbox` an exactly-once worker keeps in the user's database.

See docs/exactly-once.md for what each guarantee covers and what it does not.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mailslot.client import Message

#: The header carrying a message's deduplication key (RabbitMQ's message-deduplication plugin and
#: mailslot's broker-side deduplication read the same header).
DEDUP_HEADER = "x-deduplication-header"
#: Set by the broker on a redelivery of a message from a queue with a delivery limit (RabbitMQ
#: quorum queues, mailslot's x-delivery-limit): how many times it was delivered before.
DELIVERY_COUNT_HEADER = "x-delivery-count"


class Guarantee(enum.StrEnum):
    """What the worker promises about running the handler's effect once per message."""

    AT_MOST_ONCE = "at-most-once"  # acked (and the ack committed) before the handler runs
    AT_LEAST_ONCE = "at-least-once"  # the handler runs, then the message is acked
    EXACTLY_ONCE = "exactly-once"  # the handler's DB writes and the inbox key commit together


@dataclass(frozen=True, slots=True)
class Output:
    """A message a handler publishes. ``key`` is its deduplication key, derived from the input's."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any] | None
    key: str | None

    def headers_with_key(self) -> dict[str, Any] | None:
        if self.key is None:
            return self.headers
        return {**(self.headers or {}), DEDUP_HEADER: self.key}

    def encode_headers(self) -> str | None:
        """The user headers (without the key) as JSON, for the outbox."""
        return None if self.headers is None else json.dumps(self.headers, default=str)


def message_key(message: Message) -> str | None:
    """The message's deduplication key: the ``x-deduplication-header`` header, else ``message_id``."""
    headers = message.headers
    if headers:
        value = headers.get(DEDUP_HEADER)
        if value is not None:
            return value.decode() if isinstance(value, bytes) else str(value)
    mid = message.message_id
    return mid if mid else None


def derive_key(scope: str, input_key: str, index: int) -> str:
    """The key of a handler's ``index``-th output (0-based) for the input ``input_key``.

    Deterministic, so a rerun of the same input publishes its outputs under the same keys and a
    deduplicating queue drops the copies. ``scope`` (the worker's name, by default its queue) keeps
    two workers that consume the same input from publishing under each other's keys.
    """
    return f"{scope}:{input_key}:{index}"


def delivery_count(message: Message) -> int | None:
    """Which delivery of the message this is (1 = first), when the broker says (x-delivery-count);
    None when it does not (then only ``redelivered`` tells a first delivery from a later one)."""
    headers = message.headers
    if headers:
        count = headers.get(DELIVERY_COUNT_HEADER)
        if isinstance(count, int):
            return count + 1
    return None if message.redelivered else 1


@dataclass
class Job:
    """What a handler gets: the message, its key and, for an exactly-once worker, ``db``: the open
    connection of the database transaction in which the handler writes its effects (do not commit or
    roll it back: the worker does, together with the inbox key)."""

    message: Message
    key: str | None
    scope: str
    db: Any = None
    outputs: list[Output] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return self.message.body

    @property
    def headers(self) -> dict[str, Any]:
        return self.message.headers or {}

    @property
    def redelivered(self) -> bool:
        return self.message.redelivered

    @property
    def delivery_count(self) -> int | None:
        return delivery_count(self.message)

    def publish(self, routing_key: str, body: bytes, *, exchange: str = "",
                headers: dict[str, Any] | None = None) -> None:
        """Publish a message once the handler succeeded (persistent, confirmed, before the input is acked).

        It carries the deduplication key ``derive_key(scope, input key, n)`` for the handler's n-th
        output (no key when the input has none). An exactly-once worker records it in the outbox in the
        handler's transaction, so a crash before it is confirmed republishes it (same key) on redelivery.
        """
        index = len(self.outputs)
        key = None if self.key is None else derive_key(self.scope, self.key, index)
        self.outputs.append(Output(exchange, routing_key, bytes(body), headers, key))


#: A handler: ``handler(job)``. At-most-once / at-least-once handlers may be ``async def``;
#: exactly-once handlers are plain functions, run in a thread with ``job.db`` (a blocking connection).
Handler = Callable[[Job], Any]


class InboxSession(Protocol):
    """One database connection of an exactly-once worker; used by one message at a time."""

    @property
    def db(self) -> Any:
        """The DB-API connection the handler writes its effects with."""

    def transaction(self) -> AbstractContextManager[None]:
        """BEGIN ... COMMIT (ROLLBACK when the block raises)."""

    def claim(self, key: str) -> bool:
        """Insert ``key`` into the inbox in the open transaction: True if it was not there (process the
        message), False if it was (already processed: a redelivery or a duplicate). Blocks while another
        open transaction holds the same key."""

    def record_outputs(self, key: str, outputs: list[Output]) -> None:
        """Write the outputs to the outbox in the open transaction."""

    def pending_outputs(self, key: str) -> list[Output]:
        """The outbox rows of ``key`` not yet confirmed by the broker (in index order)."""

    def outputs_confirmed(self, key: str) -> None:
        """Delete the outbox rows of ``key`` (its own transaction)."""

    def close(self) -> None: ...


class Inbox(Protocol):
    """The processed-keys table (and the outbox) in the user's database."""

    def session(self) -> InboxSession:
        """A new connection (each in-flight message uses its own)."""

    def prune(self, older_than: float) -> int:
        """Forget keys processed more than ``older_than`` seconds ago; returns how many. A message
        redelivered after its key was pruned runs again."""


def decode_outputs(rows: Iterator[tuple[Any, ...]] | list[tuple[Any, ...]]) -> list[Output]:
    """Outbox rows ``(exchange, routing_key, body, headers_json, out_key)`` to outputs."""
    return [Output(str(ex), str(rk), bytes(body), None if hd is None else json.loads(hd), key)
            for ex, rk, body, hd, key in rows]
