"""The two storage interfaces the core depends on, and nothing else.

Rules of this module:

* The core knows only these interfaces; concrete stores are imported by ``bootstrap`` and the
  contract tests alone (design.md, "Import direction").
* Writes are *staged* and become durable only at :meth:`MessageLog.commit`, which the broker calls
  once per event-loop iteration that did work (group commit: one fsync per batch, never per
  message). A crash loses staged-but-uncommitted writes and nothing else.
* Semantics (ordering, requeue position, TTL, dead-lettering) live in the core. A store only keeps
  what it is given and gives it back in ``seq`` order.
* ``seq`` is the queue-local position the core assigns (monotonic per queue). Requeued messages keep
  their ``seq``, which is how they keep their place across a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class StoredMessage:
    """One message as it sits in one queue.

    ``queue`` is an opaque queue key chosen by the core (it encodes the vhost); stores never parse it.

    ``properties`` is the raw AMQP 0-9-1 content-header property block (flags + property list),
    kept encoded so that a delivery never re-encodes it; other front ends translate at their edge.
    """

    queue: str
    seq: int
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes
    persistent: bool
    redelivered: bool = False
    # A time the core attaches, in ms since the epoch (0: none): in a queue, when the message expires
    # (x-message-ttl / expiration); in a delay store, when it is due. Stores keep it and give it back.
    deadline: int = 0
    # How many times ``stage_mark_redelivered`` named it since it was appended (failed deliveries, for
    # x-delivery-limit and the x-delivery-count header). A store reports redelivered=True when > 0.
    requeues: int = 0


@dataclass(slots=True)
class QueueDefinition:
    name: str
    vhost: str = "/"
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ExchangeDefinition:
    name: str
    type: str
    vhost: str = "/"
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class BindingDefinition:
    """``destination_kind`` is "queue" or "exchange" (exchange-to-exchange bindings)."""

    source: str
    destination: str
    destination_kind: str
    routing_key: str
    vhost: str = "/"
    arguments_key: str = ""  # canonical JSON of the binding arguments; part of the identity


@dataclass(slots=True)
class Definitions:
    exchanges: list[ExchangeDefinition]
    queues: list[QueueDefinition]
    bindings: list[BindingDefinition]
    binding_arguments: dict[BindingDefinition, dict[str, Any]]


@dataclass(slots=True)
class QueueRecovery:
    """What the log holds for one queue at start-up."""

    queue: str
    count: int
    max_seq: int  # 0 when empty


class MessageLog(Protocol):
    """Messages of durable queues (and of paged-out transient ones), per queue, in ``seq`` order."""

    def stage_append(self, messages: list[StoredMessage]) -> None:
        """Stage new messages (each ``(queue, seq)`` is new)."""

    def stage_remove(self, queue: str, seqs: list[int]) -> None:
        """Stage the removal of acknowledged / dropped messages. Unknown seqs are ignored."""

    def stage_mark_redelivered(self, queue: str, seqs: list[int]) -> None:
        """Stage one more requeue of these messages: the redelivered flag and ``requeues`` + 1 (so a
        restart reports redelivered=true and keeps the delivery count)."""

    def stage_delivered(self, queue: str, seq: int) -> None:
        """Stage a delivery watermark: every message of ``queue`` with a seq up to ``seq`` has been handed
        to a consumer (the core calls it once per delivered batch, not per message). Once committed, :meth:`read`
        reports those messages redelivered=True (``requeues`` unchanged), also after a crash, as RabbitMQ's
        classic queues flag what was delivered before one. A lower ``seq`` than the
        queue's watermark changes nothing; a purge forgets the watermark; :meth:`recover` lowers it to
        the highest seq the queue still holds (forgets it when none), since the core numbers the
        queue's new messages from there."""

    def stage_purge(self, queue: str) -> None:
        """Stage the removal of every message of ``queue`` (purge, delete) and of its delivery watermark."""

    def commit(self) -> None:
        """Make every staged write durable (fsync) atomically. One call per batch of work."""

    def has_staged(self) -> bool:
        """True when something waits for :meth:`commit`."""

    def read(self, queue: str, after_seq: int, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` committed messages of ``queue`` with ``seq > after_seq``, in seq order."""

    def recover(self) -> list[QueueRecovery]:
        """At start-up: drop transient messages, then report what each queue holds."""

    def close(self) -> None:
        """Commit what is staged and release files."""


class MetadataStore(Protocol):
    """Durable exchanges, queues and bindings. Each call is durable when it returns (rare writes)."""

    def save_exchange(self, exchange: ExchangeDefinition) -> None: ...

    def delete_exchange(self, vhost: str, name: str) -> None: ...

    def save_queue(self, queue: QueueDefinition) -> None: ...

    def delete_queue(self, vhost: str, name: str) -> None: ...

    def save_binding(self, binding: BindingDefinition, arguments: dict[str, Any]) -> None: ...

    def delete_binding(self, binding: BindingDefinition) -> None: ...

    def load(self) -> Definitions: ...

    # Runtime configuration that is not topology: users, vhosts, permissions, policies, limits,
    # parameters. One generic record per (kind, key) instead of a method pair per kind, so a new kind
    # costs the store nothing. ``value`` is anything ``json.dumps`` takes; ``kind`` names its owner
    # ("user", "policy", ...).

    def save_record(self, kind: str, key: str, value: Any) -> None:
        """Insert or replace one record; durable when it returns."""

    def delete_record(self, kind: str, key: str) -> None:
        """Delete one record; an unknown one is ignored."""

    def load_records(self, kind: str) -> dict[str, Any]:
        """Every record of ``kind``, key -> value, in first-save order (a re-save keeps its place)."""

    def close(self) -> None: ...
