"""Message TTL and queue expiry, as RabbitMQ 3.10's classic queues (https://www.rabbitmq.com/docs/ttl).

Rules of this module:

* An entry's expiry is an absolute deadline in ms since the epoch (``Entry.deadline``, stored as
  ``StoredMessage.deadline``; 0 = never), fixed when it enters a queue: now + the lower of the queue's
  ``x-message-ttl`` and the message's ``expiration``. Requeues keep it; the store keeps it, so a
  restart does too.
* Expired entries leave from the head only, as in RabbitMQ: a pop skips them, and every tick the
  broker drops the expired heads of each queue that may hold some (``Queue.expiring``). Consumers
  and basic.get never see an expired message. Each one is dead-lettered with reason ``expired``
  when the queue has a dead-letter exchange, else dropped.
* TTL 0 ("deliver only if a consumer can take it now"): an entry that arrived since the queue's last
  dispatch is spared while the queue has consumers, so it gets that one dispatch; whatever is left
  expires right after it (``after_dispatch``).
* Queues pay nothing for this until they can hold an expiring entry: ``Queue.expiring`` is False
  unless the queue has an ``x-message-ttl`` or has taken (or read back) a message with a deadline.
* ``x-expires``: a queue with no consumers, no basic.get and no redeclaration for that long is
  deleted (its messages are not dead-lettered, as in RabbitMQ). The lease starts again at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from .arguments import MAX_TTL
from .errors import PreconditionFailed
from .message import Entry, Message

if TYPE_CHECKING:
    from .broker import Broker
    from .queue import Queue

ExpiredHandler = Callable[["Queue", list[Entry]], None]

# Erlang's ~p breaks a term that would reach this column; RabbitMQ's 406 texts carry the break.
_PRETTY_WIDTH = 79
_INTEGER_PREFIX = re.compile(r"[+-]?[0-9]+")


class QueueExpiry:
    """A queue's TTL and lease state; the vhost gives every queue one."""

    __slots__ = ("clock", "expires", "fresh_since", "had_consumers", "last_used", "on_expired", "ttl")

    def __init__(self, clock: Callable[[], float], on_expired: ExpiredHandler, ttl: int | None, expires: int | None):
        self.clock = clock
        self.on_expired = on_expired
        self.ttl = ttl
        self.expires = expires
        self.fresh_since = 0  # seq of the first entry with a deadline since the last dispatch (0: none)
        self.last_used = clock()
        self.had_consumers = False

    def used(self) -> None:
        """basic.get or a redeclaration renews the x-expires lease."""
        if self.expires is not None:
            self.last_used = self.clock()


def parse_expiration(raw: str) -> int:
    """The ``expiration`` property in ms, or 406 with RabbitMQ's text (rabbit_basic:parse_expiration,
    which reads it with Erlang's string:to_integer)."""
    found = _INTEGER_PREFIX.match(raw)
    problem: str | tuple[str, str]
    if found is None:
        problem = "no_integer"
    elif found.end() < len(raw):
        problem = ("leftover_string", '"' + raw[found.end() :] + '"')
    else:
        value = int(found.group())
        if value < 0:
            problem = ("value_negative", str(value))
        elif value > MAX_TTL:
            problem = ("value_too_large", str(value))
        else:
            return value
    prefix = f"invalid expiration '{raw}': "
    raise PreconditionFailed(prefix + _pretty(problem, len(prefix)))


def _pretty(problem: str | tuple[str, str], column: int) -> str:
    """``{tag,Value}`` as Erlang's ~p prints it from ``column``: broken after the comma when too wide."""
    if isinstance(problem, str):
        return problem
    tag, value = problem
    flat = f"{{{tag},{value}}}"
    if column + len(flat) < _PRETTY_WIDTH:
        return flat
    return f"{{{tag},\n{' ' * (column + 1)}{value}}}"


# ---- the queue's side (called from core/queue.py only for queues that are ``expiring``) -----------


def deadline_for(queue: Queue, message: Message, seq: int) -> int:
    """The deadline of a message entering ``queue`` as arrival number ``seq`` (0: none); marks the queue
    expiring."""
    expiry = queue.expiry
    if expiry is None:
        return 0
    ttl = expiry.ttl
    if message.ttl is not None and (ttl is None or message.ttl < ttl):
        ttl = message.ttl
    if ttl is None:
        return 0
    queue.expiring = True
    if not expiry.fresh_since:  # as an entry seq: later arrivals, in any priority lane, have higher ones
        expiry.fresh_since = seq << queue.store.seq_shift
    return int(expiry.clock() * 1000) + ttl


def pop_live(queue: Queue) -> Entry | None:
    """The next ready entry that has not expired; the expired ones before it are expired."""
    expiry = queue.expiry
    if expiry is None:
        return queue.pop_ready(skip_expired=False)
    now = int(expiry.clock() * 1000)
    spared = expiry.fresh_since if queue.consumers else 0
    expired: list[Entry] = []
    while True:
        entry = queue.pop_ready(skip_expired=False)
        if entry is None or not _is_expired(entry, now, spared):
            break
        expired.append(entry)
    if expired:
        expiry.on_expired(queue, expired)
    return entry


def drop_expired(queue: Queue) -> int:
    """Expire the expired entries at the head (timer, declare-ok's message count); how many."""
    expiry = queue.expiry
    if expiry is None or not queue.expiring:
        return 0
    now = int(expiry.clock() * 1000)
    spared = expiry.fresh_since if queue.consumers else 0
    expired: list[Entry] = []
    while True:
        head = queue.peek_ready()
        if head is None or not _is_expired(head, now, spared):
            break
        queue.pop_ready(skip_expired=False)
        expired.append(head)
    if expired:
        expiry.on_expired(queue, expired)
    return len(expired)


def after_dispatch(queue: Queue) -> None:
    """The queue's consumers had their chance at what arrived: TTL-0 leftovers expire now."""
    expiry = queue.expiry
    if expiry is not None and expiry.fresh_since:
        expiry.fresh_since = 0
        drop_expired(queue)


def _is_expired(entry: Entry, now: int, spared: int) -> bool:
    deadline = entry.deadline
    return 0 < deadline <= now and not (spared and entry.seq >= spared)


# ---- the timer ----------------------------------------------------------------------------------


class ExpiryTicker:
    """On every broker tick: drop expired heads, delete queues whose x-expires lease ran out."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.started = False

    def __call__(self, now: float) -> None:
        broker = self.broker
        for vhost in broker.vhosts.values():
            for queue in list(vhost.queues.values()):
                expiry = queue.expiry
                if expiry is None or queue.remote is not None:  # another node owns it: it expires there
                    continue
                if not self.started and queue.paged:
                    queue.peek_ready()  # recovered messages: reading the head back finds any deadline
                if queue.expiring:
                    drop_expired(queue)
                if expiry.expires is not None and _lease_over(queue, expiry, now):
                    broker.delete_queue(vhost, queue)
        self.started = True


def _lease_over(queue: Queue, expiry: QueueExpiry, now: float) -> bool:
    """Unused for ``x-expires`` ms. While consumers are attached the lease is renewed on every tick;
    it starts again at the first tick without them, so a queue never expires early."""
    if queue.consumers or expiry.had_consumers:
        expiry.had_consumers = bool(queue.consumers)
        expiry.last_used = now
        return False
    assert expiry.expires is not None
    return (now - expiry.last_used) * 1000 >= expiry.expires
