"""A queue: ready messages in order, their consumers, and the window of bodies kept in memory.

Rules of this module:

* Order is ``seq``. New messages get the next seq; a requeued message keeps its seq, so it goes
  back to its original place (RabbitMQ's classic queues do the same since 2.7).
* The ``Queue`` keeps what is per queue (limits, TTLs, retry delays, features, consumers, dispatch);
  its ready messages sit in a ready store (``ReadyStore``): a ``FifoStore``, or for ``x-max-priority``
  core/priority.py's store of FIFO lanes, the way RabbitMQ's priority queue wraps a backing queue.
* In a ``FifoStore`` ready messages live in four places, in seq order, each older than the next:
  ``_requeued`` (a heap: requeues arrive in any order) and ``_ready`` (the window, a deque) in memory;
  ``paged`` messages that only the message log holds; ``_overflow``, messages that arrived this turn
  while the window was full. ``spill`` (once per flush, just before the store commit) writes the
  overflow's transient messages to the log (flagged so recovery drops them; persistent ones were
  written on arrival) and drops their bodies: memory stays bounded by the window, and everything
  paged is always committed, so reading it back never forces a commit.
* Dispatch is round-robin over consumers that have prefetch room. It runs once per batch of work
  (``Broker.flush``), not once per publish.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..storage.api import MessageLog, StoredMessage
from . import consumer_priority
from .arguments import QueuePolicy
from .errors import PreconditionFailed
from .features import NO_HOOKS, Hooks, QueueFeature
from .message import Codecs, Entry, Message
from .outcome import Outcome
from .redelivery import retry_delay_ms
from .storekeys import queue_key
from .ttl import QueueExpiry, deadline_for, pop_live
from .ttl_live import Cap, apply_caps, cap_entries, ttl_changed

if TYPE_CHECKING:
    import asyncio

    from .consumer_priority import Priorities
    from .session import Consumer

    Composer = Callable[["Queue", dict[str, Any]], tuple[QueueFeature, ...]]

# Bodies kept in memory per queue before new messages are paged to the log: about 25 MB for
# 50,000 messages of 256 B, enough to ride out a second of consumer lag at tens of thousands of
# messages a second without touching the disk; the byte bound keeps large messages from
# defeating the count bound.
WINDOW_MESSAGES = 50_000
WINDOW_BYTES = 32 * 1024 * 1024
PAGE_IN_BATCH = 2_000

# What enqueue did with a message (core/outcome.py).
ACCEPTED, REJECTED, DUPLICATE = Outcome.ACCEPTED, Outcome.REJECTED, Outcome.DUPLICATE
# A backlog this deep in front of a consumer that wants more means the broker, not the consumer, is
# the bottleneck: its publishers are slowed (credit flow) before the backlog has to be paged to disk.
# RabbitMQ's credit flow engages after a few hundred messages; a few turns' worth of deliveries here.
CONGESTION_BACKLOG = 10_000
# Deliveries handed to a single consumer per call; the output gate is checked between batches.
DELIVERY_BATCH = 256


class RemoteOwner(Protocol):
    """Where a queue's messages go while another node owns it (mailslot.cluster). Consumers here are
    served through this node: the owner's deliveries come in by ``take_in``."""

    def enqueue(self, queue: Queue, message: Message) -> bool:
        """Hand ``message`` on to the owner; False refuses it (the publisher is nacked)."""

    def consumers_changed(self, queue: Queue) -> None:
        """A consumer came or went here: subscribe at the owner, or give back what is buffered."""

    def settled(self, queue: Queue, entries: list[Entry]) -> None:
        """Entries taken in from the owner were acknowledged (or dropped) here: tell the owner."""

    def returned(self, queue: Queue, entries: list[Entry], requeue: bool) -> None:
        """Entries taken in from the owner were nacked or rejected here: the owner requeues them
        (``requeue``) or dead-letters them, by its own rules (x-delivery-limit, its dead-letter exchange)."""

    def get(self, queue: Queue, count: int, settle: str) -> asyncio.Future[list[tuple[Entry, int]]]:
        """basic.get on the owner: up to ``count`` entries, each with the messages left after it. ``settle``:
        "keep" (unacked; settled here, relayed), "take" (no-ack), "requeue"/"reject" (given back at once).
        A PreconditionFailed (raised, or in the awaitable) when the owner cannot be asked."""

    def purge(self, queue: Queue) -> asyncio.Future[int]:
        """queue.purge on the owner: how many messages it purged."""

    def count(self, queue: Queue) -> asyncio.Future[int]:
        """The owner's message count."""


class ReadyStore(Protocol):
    """What a queue keeps its ready messages in: :class:`FifoStore`, or core/priority.py's store of FIFO
    lanes. Entries come out in the order consumers get them; limits, TTLs and retry delays are the
    queue's. ``seq_shift``: an entry's seq is its arrival number shifted left by this much (plus bits
    of the store's own), so arrival order and seq order agree across the whole store."""

    seq_shift: int

    def seq_of(self, number: int, message: Message) -> int:
        """The seq an entry of ``message`` arriving as ``number`` gets in this store."""

    @property
    def ready_bytes(self) -> int: ...

    @property
    def redelivered(self) -> int: ...

    @property
    def paged(self) -> int: ...

    def count(self) -> int: ...

    def has_ready(self) -> bool: ...

    def append(self, seq: int, message: Message, deadline: int, durable_write: bool) -> None: ...

    def push_back(self, entries: list[Entry]) -> None: ...

    def mark_redelivered(self, entries: list[Entry]) -> None: ...

    def cap_deadlines(self, caps: list[Cap]) -> None:
        """A message-ttl set or lowered (core/ttl_live.py): entries in memory take the caps now, paged
        ones as they are read back."""
        ...

    def spill(self) -> None: ...

    def pop(self) -> Entry | None: ...

    def pop_many(self, limit: int, now: int) -> list[Entry]:
        """Up to ``limit`` in order; stops early at a head whose deadline is at or before ``now`` (ms, 0: no
        check), leaving it for the queue to expire."""
        ...

    def peek_head(self) -> Entry | None: ...

    def peek(self, limit: int, now_ms: int = 0) -> list[Entry]: ...

    def mark_delivered(self, entries: list[Entry]) -> None: ...

    def settle(self, entries: list[Entry]) -> None: ...

    def purge(self) -> None: ...

    def remove(self, seqs: set[int]) -> list[Entry]: ...

    def reinsert(self, entries: list[Entry]) -> None: ...

    def restore(self, count: int, max_seq: int) -> int:
        """At start-up, the rows under the queue's own key; returns the arrival number to go on from."""
        ...

    def restore_lane(self, level: int, count: int, max_seq: int) -> int:
        """At start-up, the rows of a priority level (store-key kind ``lane``); the same, or 0: not mine."""
        ...


class FifoStore:
    """A queue's ready messages in seq order (the ready store of every queue without ``x-max-priority``,
    and of each level of one with it, core/priority.py): the memory window, requeued entries, the
    overflow and what is paged out to the message log under ``key``. It keeps no limits, TTLs or
    consumers (the queue does); its byte count covers what it holds, paged messages included."""

    seq_shift = 0  # an entry's seq is its arrival number

    def seq_of(self, number: int, message: Message) -> int:
        return number

    def __init__(
        self, key: str, log: MessageLog, codecs: Codecs, durable: bool, saw_deadline: Callable[[], None]
    ) -> None:
        self.key = key
        self.log = log
        self.codecs = codecs
        self.durable = durable
        self._default_codec = codecs.default
        self._saw_deadline = saw_deadline  # a row read back carries a deadline: the queue is expiring
        self._ready: deque[Entry] = deque()
        self._requeued: list[Entry] = []
        self._window_bytes = 0
        self._overflow: deque[Entry] = deque()
        self.ready_bytes = 0  # body bytes of the entries held here (restored ones counted as read back)
        self.redelivered = 0  # requeued entries handed out again (the queue's stats_redelivered)
        self.paged = 0  # messages in the log beyond the memory window
        self._restored_upto = 0
        self._loaded_upto = 0  # highest seq read back from (or kept out of) the log
        self._delivered_upto = 0  # the delivery watermark staged last (mark_delivered)
        # Paged seqs that ``remove`` took out before the commit that drops their rows: page-in skips them.
        self._taken: set[int] = set()
        self._removed_from: dict[int, str] = {}  # where the last remove() found each entry (for reinsert)
        self.caps: list[Cap] = []  # deadline caps of a live message-ttl change (core/ttl_live.py)

    def count(self) -> int:
        return len(self._ready) + len(self._requeued) + self.paged + len(self._overflow)

    def has_ready(self) -> bool:
        return bool(self._ready or self._requeued or self.paged or self._overflow)

    def resident(self) -> tuple[int, int]:
        """Messages and body bytes in the memory window."""
        return len(self._ready), self._window_bytes

    # ---- in -------------------------------------------------------------------------------------

    def append(self, seq: int, message: Message, deadline: int, durable_write: bool) -> None:
        """A new message as entry ``seq``; ``durable_write``: its row is staged now (persistent message,
        durable queue). The row is built here, not by a helper: one call per message on the hot path."""
        if durable_write:
            row = StoredMessage(
                self.key, seq, message.exchange, message.routing_key, message.properties, message.body, True
            )
            if deadline:  # set apart: a keyword argument would cost every message (~90 ns)
                row.deadline = deadline
            if message.codec is not self._default_codec:  # the same: the common case pays one identity test
                row.codec = message.codec.name
            self.log.stage_append([row])
        entry = Entry(seq, message, False, durable_write, deadline)
        size = len(message.body)
        if self.paged or self._overflow or len(self._ready) >= WINDOW_MESSAGES or self._window_bytes >= WINDOW_BYTES:
            self._overflow.append(entry)
        else:
            self._ready.append(entry)
            self._window_bytes += size
        self.ready_bytes += size

    def demote_newest(self) -> None:
        """The message just put into the window goes to the overflow instead (a window shared by several
        stores is full). Order holds: a message enters the window only when this store has no paged or
        overflow messages."""
        entry = self._ready.pop()
        self._window_bytes -= len(entry.message.body)
        self._overflow.append(entry)

    def push_back(self, entries: list[Entry]) -> None:
        """Requeued entries, ready again at their original place."""
        requeued = self._requeued
        for entry in entries:
            self.ready_bytes += len(entry.message.body)
            heapq.heappush(requeued, entry)

    def mark_redelivered(self, entries: list[Entry]) -> None:
        self.log.stage_mark_redelivered(self.key, [entry.seq for entry in entries])

    def cap_deadlines(self, caps: list[Cap]) -> None:
        self.caps = caps
        for part in (self._ready, self._requeued, self._overflow):
            apply_caps(part, caps)  # the requeue heap is ordered by seq: deadlines may change

    def spill(self) -> None:
        """Page this turn's overflow out to the log (the broker commits right after)."""
        overflow = self._overflow
        if not overflow:
            return
        if not self.paged:
            self._loaded_upto = overflow[0].seq - 1  # everything older is in memory
        transient = [self._row(e.seq, e.message, False, e.deadline) for e in overflow if not e.stored]
        if transient:
            self.log.stage_append(transient)  # persistent ones were staged on arrival
        self.paged += len(overflow)
        overflow.clear()

    def _row(self, seq: int, message: Message, persistent: bool, deadline: int) -> StoredMessage:
        row = StoredMessage(
            self.key, seq, message.exchange, message.routing_key, message.properties, message.body, persistent
        )
        if deadline:
            row.deadline = deadline
        if message.codec is not self._default_codec:
            row.codec = message.codec.name
        return row

    # ---- out ------------------------------------------------------------------------------------

    def pop(self) -> Entry | None:
        """The next entry in seq order, expired or not (the queue applies TTLs)."""
        requeued = self._requeued
        ready = self._ready
        if requeued and (not ready or requeued[0].seq < ready[0].seq):
            entry = heapq.heappop(requeued)
            self.ready_bytes -= len(entry.message.body)
            self.redelivered += 1
            return entry
        if not ready:
            if self.paged:
                self._page_in()
            elif self._overflow:
                self._refill_from_overflow()
        if ready:
            entry = ready.popleft()
            size = len(entry.message.body)
            self._window_bytes -= size
            self.ready_bytes -= size
            return entry
        return None

    def pop_many(self, limit: int, now: int) -> list[Entry]:
        """Up to ``limit`` entries in order, stopping early at an entry whose deadline is at or before
        ``now`` (ms; 0: no TTL check), which is left at the head for the queue to expire."""
        out: list[Entry] = []
        ready = self._ready
        while len(out) < limit:
            if self._requeued or not ready:
                head = self.peek_head()  # requeues, page-in and overflow keep their rules
                if head is None or (now and 0 < head.deadline <= now):
                    break
                self.pop()
                out.append(head)
                continue
            take = min(limit - len(out), len(ready))
            popleft = ready.popleft
            size = 0
            if now:
                expired = False
                for _ in range(take):
                    deadline = ready[0].deadline
                    if 0 < deadline <= now:
                        expired = True
                        break
                    entry = popleft()
                    size += len(entry.message.body)
                    out.append(entry)
                self._window_bytes -= size
                self.ready_bytes -= size
                if expired:
                    break
                continue
            for _ in range(take):
                entry = popleft()
                size += len(entry.message.body)
                out.append(entry)
            self._window_bytes -= size
            self.ready_bytes -= size
        return out

    def peek_head(self) -> Entry | None:
        """The entry ``pop`` would hand out next, left in place (TTL looks at the head)."""
        requeued, ready = self._requeued, self._ready
        if requeued and (not ready or requeued[0].seq < ready[0].seq):
            return requeued[0]
        if not ready:
            if self.paged:
                self._page_in()
            elif self._overflow:
                self._refill_from_overflow()
        return ready[0] if ready else None

    def peek(self, limit: int, now_ms: int = 0) -> list[Entry]:
        """Up to ``limit`` entries in the order ``pop`` hands them out, left where they are (Queue.peek)."""
        if limit <= 0:
            return []
        heads = heapq.merge(heapq.nsmallest(limit, self._requeued), itertools.islice(self._ready, limit))
        out = [entry for entry in heads if not (now_ms and 0 < entry.deadline <= now_ms)][:limit]
        rows: list[StoredMessage] = []
        if len(out) < limit and self.paged:
            taken = self._taken  # rows remove() took, still in the log until the commit: read past them
            rows = self.log.read(self.key, self._loaded_upto, min(limit - len(out), self.paged) + len(taken))
            if taken:
                rows = [row for row in rows if row.seq not in taken]
            for row in rows:
                entry = self._entry(row, row.persistent)
                if self.caps:
                    apply_caps((entry,), self.caps)
                if now_ms and 0 < entry.deadline <= now_ms:
                    continue
                out.append(entry)
        if len(out) < limit and len(rows) >= self.paged:  # this turn's overflow comes after the paged ones
            out += [e for e in itertools.islice(self._overflow, limit) if not (now_ms and 0 < e.deadline <= now_ms)]
        return out[:limit]

    def _entry(self, row: StoredMessage, stored: bool) -> Entry:
        message = Message(
            row.exchange, row.routing_key, row.properties, row.body, row.persistent, self.codecs[row.codec]
        )
        return Entry(row.seq, message, row.redelivered, stored, row.deadline, row.requeues)

    def _refill_from_overflow(self) -> None:
        overflow, ready = self._overflow, self._ready
        while overflow and len(ready) < WINDOW_MESSAGES and self._window_bytes < WINDOW_BYTES:
            entry = overflow.popleft()
            ready.append(entry)
            self._window_bytes += len(entry.message.body)

    # ---- the log's side of delivery and settling ------------------------------------------------

    def mark_delivered(self, entries: list[Entry]) -> None:
        """One delivery watermark per batch (entries in seq order): see Queue.mark_delivered."""
        seq = entries[-1].seq
        if self.durable and seq > self._delivered_upto:
            self._delivered_upto = seq
            self.log.stage_delivered(self.key, seq)

    def settle(self, entries: list[Entry]) -> None:
        """Acked (or dropped): forget the stored rows."""
        stored = [entry.seq for entry in entries if entry.stored]
        if stored:
            self.log.stage_remove(self.key, stored)

    def purge(self) -> None:
        self._ready.clear()
        self._requeued.clear()
        self._window_bytes = 0
        self.ready_bytes = 0
        self._overflow.clear()
        self.paged = 0
        self._taken.clear()
        self.log.stage_purge(self.key)

    # ---- taking chosen entries out (redrive) ----------------------------------------------------

    def remove(self, seqs: set[int]) -> list[Entry]:
        """Take the entries with these seqs out wherever they sit (Queue.remove). Paged entries are read
        from the log (and count as stored, transient ones too: their row goes when they are settled)."""
        self._removed_from = {}
        out: list[Entry] = []
        origin = self._removed_from
        for part, where in ((self._ready, "memory"), (self._overflow, "overflow")):
            if any(entry.seq in seqs for entry in part):
                taken = [entry for entry in part if entry.seq in seqs]
                kept = [entry for entry in part if entry.seq not in seqs]
                part.clear()
                part.extend(kept)
                out += taken
                origin.update((entry.seq, where) for entry in taken)
                if part is self._ready:
                    self._window_bytes -= sum(len(e.message.body) for e in taken)
        if any(entry.seq in seqs for entry in self._requeued):
            out += [entry for entry in self._requeued if entry.seq in seqs]
            self._requeued = [entry for entry in self._requeued if entry.seq not in seqs]
            heapq.heapify(self._requeued)
        self.ready_bytes -= sum(len(entry.message.body) for entry in out)
        found = {entry.seq for entry in out}
        if self.paged and len(found) < len(seqs):
            out += self._remove_paged({seq for seq in seqs if seq not in found and seq > self._loaded_upto})
        return out

    def reinsert(self, entries: list[Entry]) -> None:
        """Give back entries the last ``remove`` took, each at its place and as it was (Queue.reinsert)."""
        origin = self._removed_from
        for entry in entries:
            where = origin.pop(entry.seq, "memory")
            size = len(entry.message.body)
            if where == "paged":  # its row is still in the log: it is paged out again
                self._taken.discard(entry.seq)
                self.paged += 1
                if entry.seq > self._restored_upto:
                    self.ready_bytes += size
                continue
            self.ready_bytes += size
            if where == "overflow":
                overflow = self._overflow
                i = len(overflow)
                while i and overflow[i - 1].seq > entry.seq:
                    i -= 1
                overflow.insert(i, entry)
            else:  # ready, requeued or held: the requeue heap keeps seq order against the window
                heapq.heappush(self._requeued, entry)

    def _remove_paged(self, seqs: set[int]) -> list[Entry]:
        out: list[Entry] = []
        after, last = self._loaded_upto, max(seqs, default=0)
        while seqs and after < last:
            rows = self.log.read(self.key, after, PAGE_IN_BATCH)
            if not rows:
                break
            after = rows[-1].seq
            for row in rows:
                if row.seq not in seqs or row.seq in self._taken:
                    continue
                # stored=True even for a transient row (paged only for memory): settling it removes the row.
                entry = self._entry(row, True)
                if self.caps:
                    apply_caps((entry,), self.caps)
                out.append(entry)
                self._taken.add(row.seq)
                self._removed_from[row.seq] = "paged"
                if row.seq > self._restored_upto:  # counted in ready_bytes on arrival, not yet on page-in
                    self.ready_bytes -= len(row.body)
        self.paged -= len(out)
        return out

    # ---- paging in and recovery -------------------------------------------------------------------

    def _without_taken(self, rows: list[StoredMessage]) -> list[StoredMessage]:
        """Page-in's rows without those remove() took (their removal may not be committed yet)."""
        taken = self._taken
        kept = [row for row in rows if row.seq not in taken]
        taken.difference_update([row.seq for row in rows])
        return kept

    def _page_in(self) -> None:
        # Paged rows were staged by spill() and committed in the same flush, so read() sees them all.
        rows = self.log.read(self.key, self._loaded_upto, min(PAGE_IN_BATCH, self.paged))
        if not rows and self.log.has_staged():
            self.log.commit()  # only after a failed commit left the spill staged
            rows = self.log.read(self.key, self._loaded_upto, min(PAGE_IN_BATCH, self.paged))
        last = rows[-1].seq if rows else 0
        if self._taken and rows:
            rows = self._without_taken(rows)
            if not rows:  # only rows remove() took: read on past them
                self._loaded_upto = last
                self._page_in()
                return
        deadlines = False
        for row in rows:
            # Transient rows were paged only for memory; they are dropped from the log once in memory.
            self._ready.append(self._entry(row, row.persistent))
            deadlines = deadlines or bool(row.deadline)
            self._window_bytes += len(row.body)
            if row.seq <= self._restored_upto:
                self.ready_bytes += len(row.body)
        if self.caps and rows:  # a message-ttl change since these were paged (core/ttl_live.py)
            apply_caps(itertools.islice(reversed(self._ready), len(rows)), self.caps)
            deadlines = True
        if deadlines:
            self._saw_deadline()  # read back after a restart: its deadline still holds
        if rows:
            self._loaded_upto = last  # the last row read, taken ones included
            transient = [row.seq for row in rows if not row.persistent]
            if transient:
                self.log.stage_remove(self.key, transient)
        self.paged -= len(rows)
        if not rows:
            self.paged = 0  # the log holds less than we counted (purged elsewhere): trust the log

    def restore(self, count: int, max_seq: int) -> int:
        """After a restart: the log holds ``count`` messages up to ``max_seq`` under this store's key.
        Returns the arrival number the queue goes on from."""
        self.paged = count
        self._loaded_upto = 0
        self._restored_upto = max_seq  # their body bytes are counted as they are read back
        return max_seq + 1

    def restore_lane(self, level: int, count: int, max_seq: int) -> int:
        """Rows of a priority level: a FIFO store has none (0: not mine)."""
        return 0


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
        codecs: Codecs,
        effective: dict[str, Any] | None = None,
    ) -> None:
        """``arguments``: as declared (equivalence checks, the definitions); ``effective``: what the queue
        runs with, declared arguments combined with policies (core/argument_source.py); default: declared."""
        self.name = name
        self.vhost = vhost
        self.key = queue_key(vhost, name)  # the message log's key (core/storekeys.py)
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments = arguments
        self.effective_arguments = arguments if effective is None else effective
        self.policy = QueuePolicy.from_arguments(self.effective_arguments)
        self.dropped: list[Entry] = []  # drop-head victims, for the vhost to dead-letter
        self.log = log
        self.codecs = codecs
        # The ready messages (FIFO; core/priority.py's store for x-max-priority, set by core/featureset.py
        # while the queue is still empty). Limits, TTLs, retry delays and consumers stay here.
        self.store: ReadyStore = FifoStore(self.key, log, codecs, durable, self.saw_deadline)
        # Requeued messages waiting out x-retry-delays: (due ms, seq, entry), a heap by due time.
        self._held: list[tuple[int, int, Entry]] = []
        self._held_bytes = 0
        self.next_seq = 1  # the next message's arrival number (its seq in a FIFO store)
        self.consumers: list[Consumer] = []
        self._rr = 0
        # Set while some consumer has an x-priority (core/consumer_priority.py); None: plain round-robin.
        self.prioritised: Priorities | None = None
        self.had_consumer = False  # auto-delete applies only once a consumer has come and gone
        # A deep backlog while a consumer could take more: the broker, not the consumers, is the
        # bottleneck, so its publishers are slowed (see CONGESTION_BACKLOG and Broker.dispatch).
        self.congested = False
        self.deleted = False
        self.unacked = 0
        # Counters for the management API and metrics (core/stats.py samples them; nothing else reads
        # them). Each is bumped once per batch where the work is batch-shaped (deliveries, acks), once
        # per message only where the path is per message anyway (enqueue, basic.get, a requeued pop).
        self.stats_published = 0
        self.stats_delivered = 0  # to consumers, both ack modes (RabbitMQ's deliver + deliver_no_ack)
        self.stats_delivered_no_ack = 0
        self.stats_get = 0  # basic.get with a message, both ack modes (get + get_no_ack)
        self.stats_get_no_ack = 0
        self.stats_get_empty = 0
        self.stats_acked = 0
        # Set when the broker touched the queue in a batch (its dispatch), a get or a purge: the stats sampler
        # reads only touched queues' counters each tick, not every queue's (core/stats.py).
        self.stats_dirty = False
        # TTL (core/ttl.py): ``expiring`` once an entry may carry a deadline; until then pops check nothing.
        self.expiry: QueueExpiry | None = None
        self.expiring = False
        self.ttl_caps: list[Cap] = []  # a live message-ttl change's caps (core/ttl_live.py), entry seqs
        # Queue features (core/features.py), composed from the effective arguments by ``composer`` (set by
        # core/featureset.py); ``_admit`` mirrors ``hooks.admit`` so enqueue tests one attribute.
        self.hooks: Hooks = NO_HOOKS
        self._admit: tuple[QueueFeature, ...] = ()
        self.composer: Composer | None = None
        # Set while another node owns the queue (mailslot.cluster): publishes go there, nothing is staged here.
        self.remote: RemoteOwner | None = None

    def saw_deadline(self) -> None:
        """A message read back from the log carries a deadline: TTLs apply from now on."""
        self.expiring = True

    # ---- features and live reconfiguration ----------------------------------------------------------

    def set_features(self, features: tuple[QueueFeature, ...]) -> None:
        """Compose this queue's hooks; features no longer present are closed."""
        for old in self.hooks.all:
            if old not in features:
                old.close(self)
        self.hooks = Hooks(features) if features else NO_HOOKS
        self._admit = self.hooks.admit

    def feature(self, name: str) -> QueueFeature | None:
        return self.hooks.find(name)

    def reconfigure(self, effective: dict[str, Any]) -> None:
        """Run with new effective arguments from now on (a policy changed), as RabbitMQ applies a policy
        to a live queue: limits and TTLs are re-read, features composed again, and a lowered max-length
        applies the overflow mode at once (drop-head victims go to ``dropped``, for the vhost to
        dead-letter); the reject-publish modes keep what is there and refuse new messages. A new
        message-ttl set or lowered applies to the messages already queued too (core/ttl_live.py; unlike
        RabbitMQ 3.10, whose messages keep the expiry given at enqueue). The ready store stays: its kind
        follows x-max-priority, which no policy can set."""
        self.effective_arguments = effective
        policy = self.policy = QueuePolicy.from_arguments(effective)
        expiry = self.expiry
        if expiry is not None:
            ttl_changed(self, expiry.ttl, policy.message_ttl)
            expiry.ttl = policy.message_ttl
            if expiry.expires is None and policy.expires is not None:
                expiry.last_used = expiry.clock()  # a new lease starts now
            expiry.expires = policy.expires
        if policy.message_ttl is not None:
            self.expiring = True
        if self.composer is not None:
            self.set_features(self.composer(self, effective))
        if policy.bounded and policy.overflow == "drop-head":
            self._drop_head()

    # ---- counts -------------------------------------------------------------------------------

    @property
    def message_count(self) -> int:
        return self.store.count() + len(self._held)

    @property
    def ready_bytes(self) -> int:
        """Body bytes of ready and held messages (x-max-length-bytes); paged ones after a restart count
        once they are read back."""
        return self.store.ready_bytes + self._held_bytes

    @property
    def paged(self) -> int:
        """Messages only the message log holds (beyond the memory window)."""
        return self.store.paged

    @property
    def stats_redelivered(self) -> int:
        """Entries handed out again after a requeue (RabbitMQ's redeliver); the store counts them."""
        return self.store.redelivered

    def has_ready(self) -> bool:
        return self.store.has_ready()

    # ---- enqueue --------------------------------------------------------------------------------

    def enqueue(self, message: Message, admitted: bool = False) -> Outcome:
        """Append one message (ACCEPTED), or refuse it (REJECTED) when full with a reject-publish
        overflow. With drop-head, the oldest messages over the limit go to ``dropped``. A feature may
        refuse it first (``admit`` hooks: DUPLICATE); ``admitted``: they were asked already."""
        if self._admit and not admitted:
            return self._enqueue_through_features(message)
        policy = self.policy
        if policy.bounded and policy.overflow != "drop-head" and self._beyond_limits(1):
            return REJECTED
        seq = self.next_seq
        self.next_seq = seq + 1
        self.stats_published += 1
        deadline = deadline_for(self, message, seq) if self.expiring or message.ttl is not None else 0
        self.store.append(seq, message, deadline, message.persistent and self.durable)
        if policy.bounded and policy.overflow == "drop-head":
            self._drop_head()
        return ACCEPTED

    def _enqueue_through_features(self, message: Message) -> Outcome:
        for feature in self._admit:
            refused = feature.admit(self, message)
            if refused:
                return Outcome(refused)
        outcome = self.enqueue(message, True)
        for feature in self.hooks.enqueued:
            feature.enqueued(self, message, outcome)
        return outcome

    def _beyond_limits(self, extra: int) -> bool:
        """Over x-max-length / x-max-length-bytes with ``extra`` more (1: would one more fit?)."""
        policy = self.policy
        return (policy.max_length is not None and self.message_count + extra > policy.max_length) or (
            policy.max_length_bytes is not None and self.ready_bytes + extra > policy.max_length_bytes
        )

    def _drop_head(self) -> None:
        while self._beyond_limits(0):
            entry = self.pop_ready()
            if entry is None:
                break
            self.dropped.append(entry)

    def update_congestion(self) -> None:
        self.congested = self.message_count > CONGESTION_BACKLOG and any(c.wants_more() for c in self.consumers)

    def spill(self) -> None:
        """Page this turn's overflow out to the log (the broker commits right after)."""
        self.store.spill()

    # ---- take and give back ---------------------------------------------------------------------

    def pop_ready(self, skip_expired: bool = True) -> Entry | None:
        if skip_expired and self.expiring:
            return pop_live(self)  # expired entries are expired on the way, never handed out
        return self.store.pop()

    def pop_many(self, limit: int) -> list[Entry]:
        """Up to ``limit`` ready entries in order (the dispatch fast path for a single consumer)."""
        if not self.expiring:
            return self.store.pop_many(limit, 0)
        expiry = self.expiry
        # TTL: one clock reading per batch; the store stops at an entry past it, which goes the slow way
        # (pop_live expires it and what follows it expired).
        now = int(expiry.clock() * 1000) if expiry is not None else 0
        out = self.store.pop_many(limit, now)
        while len(out) < limit:
            entry = self.pop_ready()
            if entry is None:
                break
            out.append(entry)
            out += self.store.pop_many(limit - len(out), now)
        return out

    def peek_ready(self) -> Entry | None:
        """The entry ``pop_ready`` would hand out next, left in place (TTL looks at the head)."""
        return self.store.peek_head()

    def peek(self, limit: int, now_ms: int = 0) -> list[Entry]:
        """Up to ``limit`` ready entries in the order consumers would get them, left where they are:
        nothing is popped, marked redelivered or paged into memory (the management API's peek). Paged
        messages are read from the log's committed rows; held (x-retry-delays) and expired entries
        (deadline at or before ``now_ms``, when given) are not shown, since neither is handed out next."""
        return self.store.peek(limit, now_ms)

    def requeue(self, entries: list[Entry], now: float = 0.0) -> list[Entry]:
        """Put delivered-but-unacked entries back at their original place, marked redelivered, each one
        failed delivery more (core/redelivery.py). Returns those past x-delivery-limit, not requeued:
        the caller dead-letters them. With x-retry-delays, entries are held until ``now`` + their delay."""
        policy = self.policy
        limit = policy.delivery_limit
        delays = policy.retry_delays
        exhausted: list[Entry] = []
        stored: list[Entry] = []
        ready: list[Entry] = []
        if self.ttl_caps:  # delivered before a message-ttl change, back in the queue after it
            apply_caps(entries, self.ttl_caps)
        for entry in entries:
            entry.redelivered = True
            count = entry.requeues = entry.requeues + 1
            if limit is not None and count > limit:
                exhausted.append(entry)
                continue
            if entry.stored:
                stored.append(entry)
            delay = retry_delay_ms(delays, count) if delays else 0
            if delay:
                heapq.heappush(self._held, (int(now * 1000) + delay, entry.seq, entry))
                self._held_bytes += len(entry.message.body)
            else:
                ready.append(entry)
        if ready:
            self.store.push_back(ready)
        if stored:
            self.store.mark_redelivered(stored)
        return exhausted

    def cap_held(self, deadline: int) -> None:
        """Entries held for a retry delay expire by ``deadline`` at the latest (core/ttl_live.py)."""
        cap_entries((item[2] for item in self._held), deadline)

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def release_held(self, now_ms: int) -> bool:
        """Held entries due by ``now_ms`` become ready, in their original place. True if any did."""
        held = self._held
        if not held or held[0][0] > now_ms:
            return False
        due: list[Entry] = []
        while held and held[0][0] <= now_ms:
            due.append(heapq.heappop(held)[2])
        self._held_bytes -= sum(len(entry.message.body) for entry in due)
        self.store.push_back(due)
        return True

    def mark_delivered(self, entries: list[Entry]) -> None:
        """Handed to a consumer that must ack them (in seq order, as every pop gives them): the log records
        how far the queue has delivered, one watermark per batch, so that after a crash these messages come
        back redelivered=true, as RabbitMQ's classic queues do (storage/api.py ``stage_delivered``)."""
        self.store.mark_delivered(entries)

    def settle(self, entries: list[Entry]) -> None:
        """Acked (or dropped): forget the stored rows."""
        if self.remote is not None:
            self.remote.settled(self, entries)
        self.store.settle(entries)
        if self.hooks.settle:
            self.settled(entries)

    def settled(self, entries: list[Entry]) -> None:
        """The ``settle`` hooks: ``entries`` left the queue for good."""
        for feature in self.hooks.settle:
            feature.settle(self, entries)

    def purged(self) -> None:
        for feature in self.hooks.purge:
            feature.purge(self)

    def purge(self) -> int:
        count = self.message_count
        self.stats_dirty = True
        self._held.clear()
        self._held_bytes = 0
        self.store.purge()
        if self.hooks.purge:
            self.purged()
        return count

    def remove(self, seqs: set[int]) -> list[Entry]:
        """Take the ready entries with these seqs out of the queue wherever they sit (a redrive moves
        chosen messages, core/redrive.py); unknown seqs are skipped. Returned in seq order. Nothing is
        marked redelivered; stored rows stay until the caller settles the entries, so the removal and
        what replaces it (a publish elsewhere) land in one commit. Paged entries are read from the log
        (and count as stored, transient ones too: their row goes when they are settled)."""
        if not seqs:
            self.store.remove(set())  # forgets the last removal's places
            return []
        out: list[Entry] = []
        if any(item[1] in seqs for item in self._held):
            out += [item[2] for item in self._held if item[1] in seqs]
            self._held = [item for item in self._held if item[1] not in seqs]
            heapq.heapify(self._held)
            self._held_bytes -= sum(len(entry.message.body) for entry in out)
        out += self.store.remove(seqs - {entry.seq for entry in out})
        out.sort()
        self.stats_dirty = True
        return out

    def reinsert(self, entries: list[Entry]) -> None:
        """Give back entries the last ``remove`` took (a move that could not be made), each at its place
        and as it was: not marked redelivered, its stored row untouched (one held for a retry delay is
        ready at once)."""
        self.store.reinsert(entries)
        self.stats_dirty = True

    def _dispatch_one(self, consumer: Consumer) -> None:
        """One consumer: hand it batches (one session call and one encode pass per batch)."""
        session = consumer.session
        count = len(self.consumers)  # more than one only with x-single-active-consumer: the others wait
        while consumer.can_take():
            redelivered = self.stats_redelivered
            entries = self.pop_many(min(session.room(consumer), DELIVERY_BATCH))
            if not entries:
                return
            self.stats_delivered += len(entries)
            session.stats_redelivered += self.stats_redelivered - redelivered
            session.deliver_many(consumer, self, entries)
            if self.deleted or len(self.consumers) != count:
                return

    def restore(self, count: int, max_seq: int) -> None:
        """After a restart: the log holds ``count`` messages up to ``max_seq`` under the queue's key."""
        self.next_seq = max(self.next_seq, self.store.restore(count, max_seq))

    def restore_lane(self, level: int, count: int, max_seq: int) -> bool:
        """After a restart: rows of priority level ``level`` (store-key kind ``lane``); False when the
        queue has no such level (its rows are purged)."""
        next_seq = self.store.restore_lane(level, count, max_seq)
        self.next_seq = max(self.next_seq, next_seq)
        return next_seq > 0

    # ---- consumers ------------------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        self.had_consumer = True
        if self.prioritised is not None or consumer.arguments:
            self.prioritised = consumer_priority.arrange(self.consumers)
        if self.remote is not None:
            self.remote.consumers_changed(self)

    def remove_consumer(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            pass
        if self.prioritised is not None:
            self.prioritised = consumer_priority.arrange(self.consumers)
        if self.remote is not None:
            self.remote.consumers_changed(self)

    # ---- a queue another node owns (mailslot.cluster) ---------------------------------------------

    def served_here(self, action: str) -> None:
        """Refuse ``action`` (basic.get, purge) on a queue another node owns: only its owner holds its
        messages, and an empty answer here would be wrong."""
        if self.remote is not None:
            raise PreconditionFailed(
                f"queue '{self.name}' in vhost '{self.vhost}' is owned by another node of the cluster: {action} "
                "is served by its owner only (connect to it; /api/queues shows its node)"
            )

    def take_in(self, deliveries: list[tuple[Message, bool, int]], ready: bool = True) -> list[Entry]:
        """Messages the owner on another node delivered for this node's consumers (with their redelivered flag
        and failed deliveries so far): ready here, in memory only (never stored here), in the order given
        (in a priority queue, per level). ``ready`` False: only the entries (a basic.get through the owner).
        Their number is bounded by the prefetch this node asked the owner for."""
        entries = []
        store = self.store
        for message, redelivered, requeues in deliveries:
            entries.append(Entry(store.seq_of(self.next_seq, message), message, redelivered, False, 0, requeues))
            self.next_seq += 1
        if ready:
            store.push_back(entries)  # ready in seq order (per level), as requeued entries are
        return entries

    def forget_ready(self) -> None:
        """Drop the ready messages from memory, writing nothing (what this node took in for the owner on
        another node, which still keeps them). Only for a queue marked remote: it has nothing paged."""
        while self.store.pop_many(DELIVERY_BATCH, 0):
            pass

    def dispatch(self) -> None:
        """Give ready messages to consumers with room, round-robin, until either runs out."""
        consumers = self.consumers
        count = len(consumers)
        if not count:
            return
        if count == 1 or self.policy.single_active_consumer:  # the first registered consumer is the active one
            self._dispatch_one(consumers[0])
            return
        if self.prioritised is not None:
            self.prioritised.dispatch(self)
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
            if entry.redelivered:
                consumer.session.stats_redelivered += 1
            consumer.session.deliver_many(consumer, self, [entry])
            if self.deleted or len(consumers) != count:
                break  # a delivery side effect changed the consumer list; next flush continues
        self._rr = i
