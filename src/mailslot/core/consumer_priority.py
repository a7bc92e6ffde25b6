"""Consumer priorities (https://www.rabbitmq.com/docs/consumer-priority): ``x-priority`` on basic.consume.

Rules of this module:

* A consumer's priority is its integer ``x-priority`` consume argument, 0 without one; any integer, negative
  ones too. Another type is refused as RabbitMQ 3.10 refuses it (406, "expected integer, got longstr").
* A queue dispatches to its highest-priority consumers while any of them can take a message (prefetch room,
  flow on, its connection writing); only when all of them are blocked do lower-priority ones get messages.
  Consumers of one priority share messages round-robin, as a queue's consumers always do.
* A queue none of whose consumers has a priority other than 0 has no :class:`Priorities` and dispatches as it
  always did (``Queue.prioritised`` is None: one test per dispatch, none per message).
* With single active consumer the queue ignores priorities (RabbitMQ 3.10 does; 3.12 made them choose the
  active consumer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .arguments import field_type
from .errors import PreconditionFailed

if TYPE_CHECKING:
    from .queue import Queue
    from .session import Consumer

ARGUMENT = "x-priority"


def check(arguments: Any, queue: str, vhost: str) -> None:
    """basic.consume's x-priority must be an integer (rabbit_amqqueue:check_consume_arguments)."""
    if not arguments or ARGUMENT not in arguments:
        return
    value = arguments[ARGUMENT]
    if isinstance(value, bool) or not isinstance(value, int):
        raise PreconditionFailed(
            f"invalid arg '{ARGUMENT}' for queue '{queue}' in vhost '{vhost}': "
            f'"expected integer, got {"void" if value is None else field_type(value)}"'
        )


def priority_of(consumer: Consumer) -> int:
    arguments = consumer.arguments
    if not arguments:
        return 0
    value = arguments.get(ARGUMENT, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Priorities:
    """A queue's consumers by priority, highest first, each level with its own round-robin position."""

    __slots__ = ("levels",)

    def __init__(self, consumers: list[Consumer]) -> None:
        by_priority: dict[int, list[Consumer]] = {}
        for consumer in consumers:  # in arrival order: round-robin within a level follows it
            by_priority.setdefault(priority_of(consumer), []).append(consumer)
        self.levels = [_Level(by_priority[p]) for p in sorted(by_priority, reverse=True)]

    def dispatch(self, queue: Queue) -> None:
        """Ready messages to the highest level that can take them, one message at a time (a message a
        higher level can take never goes lower), until the messages or the takers run out."""
        consumers = queue.consumers
        count = len(consumers)
        while queue.has_ready():
            for level in self.levels:
                consumer = level.next_taker()
                if consumer is not None:
                    break
            else:
                return  # every consumer is blocked
            entry = queue.pop_ready()
            if entry is None:
                return
            queue.stats_delivered += 1
            if entry.redelivered:
                consumer.session.stats_redelivered += 1
            level.advance()
            consumer.session.deliver_many(consumer, queue, [entry])
            if queue.deleted or len(consumers) != count:
                return  # a delivery side effect changed the consumer list; the next flush continues


class _Level:
    __slots__ = ("consumers", "position", "taker")

    def __init__(self, consumers: list[Consumer]) -> None:
        self.consumers = consumers
        self.position = 0  # who is next in this level's round-robin
        self.taker = 0

    def next_taker(self) -> Consumer | None:
        """The next consumer of this level that can take a message, from the round-robin position."""
        consumers = self.consumers
        count = len(consumers)
        for step in range(count):
            i = (self.position + step) % count
            if consumers[i].can_take():
                self.taker = i
                return consumers[i]
        return None

    def advance(self) -> None:
        self.position = (self.taker + 1) % len(self.consumers)


def arrange(consumers: list[Consumer]) -> Priorities | None:
    """A queue's priorities, or None when no consumer has one (the queue's plain round-robin applies)."""
    if not any(priority_of(consumer) for consumer in consumers):
        return None
    return Priorities(consumers)
