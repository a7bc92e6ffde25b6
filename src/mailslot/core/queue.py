"""A queue: ready messages in order, their consumers, and the window of bodies kept in memory.

Rules of this module:

* Order is ``seq``. New messages get the next seq; a requeued message keeps its seq, so it goes
  back to its original place (RabbitMQ's classic queues do the same since 2.7).
* Ready messages live in three places, all in seq order and each older than the next:
  ``_requeued`` (a heap: requeues arrive in any order) and ``_ready`` (a deque: appends arrive in
  order) in memory, then ``paged`` messages that only the message log holds. Memory is bounded by
  the window: once it is full, new messages go to the log only (transient ones too, flagged so
  that recovery drops them) and are read back in batches as the window drains.
* Dispatch is round-robin over consumers that have prefetch room. It runs once per batch of work
  (``Broker.flush``), not once per publish.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from ..storage.api import MessageLog, StoredMessage
from .message import Entry, HeadersReader, Message

if TYPE_CHECKING:
    from .session import Consumer

# Bodies kept in memory per queue before new messages are paged to the log. 10,000 x 256 B keeps
# a deep backlog to a few MB; the byte bound keeps large messages from defeating the count bound.
WINDOW_MESSAGES = 10_000
WINDOW_BYTES = 32 * 1024 * 1024
PAGE_IN_BATCH = 2_000


class QueueOwner(Protocol):
    """Whatever owns an exclusive queue (a connection): compared by identity only."""


class Queue:
    def __init__(
        self,
        name: str,
        vhost: str,
        *,
        durable: bool,
        exclusive_owner: object | None,
        auto_delete: bool,
        arguments: dict[str, Any],
        log: MessageLog,
        read_headers: HeadersReader,
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.key = f"{vhost}\x00{name}"  # storage key: names are per vhost
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments = arguments
        self.log = log
        self._read_headers = read_headers
        self._ready: deque[Entry] = deque()
        self._requeued: list[Entry] = []
        self._window_bytes = 0
        self.paged = 0  # messages in the log beyond the memory window
        self._loaded_upto = 0  # highest seq read back from (or kept out of) the log
        self.next_seq = 1
        self.consumers: list[Consumer] = []
        self._rr = 0
        self.had_consumer = False  # auto-delete applies only once a consumer has come and gone
        self.deleted = False
        self.unacked = 0
        self.stats_published = 0
        self.stats_delivered = 0

    # ---- counts -------------------------------------------------------------------------------

    @property
    def message_count(self) -> int:
        return len(self._ready) + len(self._requeued) + self.paged

    def has_ready(self) -> bool:
        return bool(self._ready or self._requeued or self.paged)

    # ---- enqueue --------------------------------------------------------------------------------

    def enqueue(self, message: Message) -> bool:
        """Append one message; returns True when it staged a durable write (confirm waits for commit)."""
        seq = self.next_seq
        self.next_seq = seq + 1
        self.stats_published += 1
        durable_write = message.persistent and self.durable
        if self.paged or len(self._ready) >= WINDOW_MESSAGES or self._window_bytes >= WINDOW_BYTES:
            if not self.paged:
                self._loaded_upto = seq - 1  # everything older is in memory already
            self._stage(seq, message, durable_write)
            self.paged += 1
            return durable_write
        if durable_write:
            self._stage(seq, message, True)
        self._ready.append(Entry(seq, message, False, durable_write))
        self._window_bytes += len(message.body)
        return durable_write

    def _stage(self, seq: int, message: Message, persistent: bool) -> None:
        self.log.stage_append(
            [
                StoredMessage(
                    self.key,
                    seq,
                    message.exchange,
                    message.routing_key,
                    message.properties,
                    message.body,
                    persistent,
                )
            ]
        )

    # ---- take and give back ---------------------------------------------------------------------

    def pop_ready(self) -> Entry | None:
        requeued = self._requeued
        ready = self._ready
        if requeued and (not ready or requeued[0].seq < ready[0].seq):
            return heapq.heappop(requeued)
        if not ready and self.paged:
            self._page_in()
        if ready:
            entry = ready.popleft()
            self._window_bytes -= len(entry.message.body)
            return entry
        return None

    def requeue(self, entries: list[Entry]) -> None:
        """Put delivered-but-unacked entries back at their original place, marked redelivered."""
        stored = []
        for entry in entries:
            entry.redelivered = True
            heapq.heappush(self._requeued, entry)
            if entry.stored:
                stored.append(entry.seq)
        if stored:
            self.log.stage_mark_redelivered(self.key, stored)

    def settle(self, entries: list[Entry]) -> None:
        """Acked (or dropped): forget the stored rows."""
        stored = [entry.seq for entry in entries if entry.stored]
        if stored:
            self.log.stage_remove(self.key, stored)

    def purge(self) -> int:
        count = self.message_count
        self._ready.clear()
        self._requeued.clear()
        self._window_bytes = 0
        self.paged = 0
        self._loaded_upto = self.next_seq - 1
        self.log.stage_purge(self.key)
        return count

    def _page_in(self) -> None:
        if self.log.has_staged():
            self.log.commit()  # read() sees committed rows only; rare: the window has drained
        rows = self.log.read(self.key, self._loaded_upto, PAGE_IN_BATCH)
        for row in rows:
            message = Message(
                row.exchange, row.routing_key, row.properties, row.body, row.persistent, self._read_headers
            )
            # Transient rows were paged only for memory; they are dropped from the log once in memory.
            self._ready.append(Entry(row.seq, message, row.redelivered, row.persistent))
            self._window_bytes += len(row.body)
        if rows:
            self._loaded_upto = rows[-1].seq
            transient = [row.seq for row in rows if not row.persistent]
            if transient:
                self.log.stage_remove(self.key, transient)
        self.paged -= len(rows)
        if not rows:
            self.paged = 0  # the log holds less than we counted (purged elsewhere): trust the log

    def restore(self, count: int, max_seq: int) -> None:
        """After a restart: the log holds ``count`` messages up to ``max_seq``."""
        self.paged = count
        self._loaded_upto = 0
        self.next_seq = max_seq + 1

    # ---- consumers ------------------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        self.had_consumer = True

    def remove_consumer(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            pass

    def dispatch(self) -> None:
        """Give ready messages to consumers with room, round-robin, until either runs out."""
        consumers = self.consumers
        count = len(consumers)
        if not count:
            return
        i = self._rr
        idle = 0
        while idle < count and self.has_ready():
            if i >= count:
                i = 0
            consumer = consumers[i]
            i += 1
            if not consumer.can_take():
                idle += 1
                continue
            entry = self.pop_ready()
            if entry is None:
                i -= 1  # nobody was served: the same consumer is next
                break
            idle = 0
            self.stats_delivered += 1
            consumer.deliver(self, entry)
            if self.deleted or len(consumers) != count:
                break  # a delivery side effect changed the consumer list; next flush continues
        self._rr = i
