"""Priority queues (``x-max-priority``): one ordinary queue store per priority level, highest level first.

Rules of this module:

* A ``PriorityQueue`` holds no messages itself. Each priority level in use is a ``Lane``: a plain
  :class:`~mailslot.core.queue.Queue` used only as a ready-store, under its own storage key
  (kind ``lane`` in core/storekeys.py, sub-key the level), so FIFO order, requeue position, paging and recovery are the
  ordinary queue's, per level. The outer queue keeps what is per queue: limits, consumers, dispatch.
* Taking a message takes from the highest non-empty lane. A message's level is its AMQP ``priority``
  (absent: 0) capped at ``x-max-priority``, as in RabbitMQ (https://www.rabbitmq.com/docs/priority).
* The level is encoded in the low byte of ``seq`` (``seq = n << 8 | level``, ``n`` counting arrivals
  over the whole queue), so acks and requeues find a message's lane without decoding its properties
  again. Within a lane seqs still grow with arrival, which is all the lane's ordering needs.
* The memory window is shared: a message that would enter a lane's window while the lanes together
  already hold ``WINDOW_MESSAGES`` / ``WINDOW_BYTES`` goes to that lane's overflow and is paged out
  like any overflow. On top of the window, each level being read holds at most one page-in batch.
* The properties are decoded (for ``priority`` only) in queues with ``x-max-priority`` >= 1; every other
  queue is a plain ``Queue`` and pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import queue as queue_module
from .arguments import QueuePolicy
from .message import Entry, Message
from .outcome import Outcome
from .queue import Queue
from .storekeys import lane_key

LEVEL_BITS = 8  # x-max-priority is at most 255 (arguments.MAX_PRIORITY)
LEVEL_MASK = (1 << LEVEL_BITS) - 1
# Arguments that act on the queue as a whole, so the outer queue applies them and its lanes must not.
QUEUE_WIDE_ARGUMENTS = frozenset(
    {"x-max-length", "x-max-length-bytes", "x-overflow", "x-max-priority", "x-single-active-consumer", "x-expires"}
)

def lane_arguments(effective: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in effective.items() if k not in QUEUE_WIDE_ARGUMENTS}


class Lane(Queue):
    """The ready messages of one priority level: an ordinary queue store under its own key."""

    def __init__(self, owner: PriorityQueue, level: int) -> None:
        super().__init__(
            owner.name,
            owner.vhost,
            durable=owner.durable,
            exclusive_owner=None,
            auto_delete=False,
            arguments=lane_arguments(owner.effective_arguments),
            log=owner.log,
            codecs=owner.codecs,
        )
        self.key = lane_key(owner.vhost, owner.name, level)
        self.owner = owner
        self.level = level
        self.expiry = owner.expiry  # one TTL state per queue, shared by its lanes (core/ttl.py)
        self.expiring = owner.expiring

    def restore(self, count: int, max_seq: int) -> None:
        super().restore(count, max_seq)
        self.owner.lane_restored(max_seq)

    def resident(self) -> tuple[int, int]:
        """Messages and body bytes in the memory window."""
        return len(self._ready), self._window_bytes

    def demote_newest(self) -> None:
        """The message just put into the window goes to the overflow instead (the shared window is full).
        Order holds: a message enters the window only when this lane has no paged or overflow messages."""
        entry = self._ready.pop()
        self._window_bytes -= len(entry.message.body)
        self._overflow.append(entry)


class PriorityQueue(Queue):
    def __init__(self, name: str, vhost: str, **options: Any) -> None:
        super().__init__(name, vhost, **options)
        self.max_priority: int = self.policy.max_priority
        self._lanes: list[Lane | None] = [None] * (self.max_priority + 1)
        self._levels: list[Lane] = []  # lanes in use, highest level first
        self._resident = 0  # messages in the lanes' windows together
        self._resident_bytes = 0

    def lane(self, level: int) -> Lane:
        lane = self._lanes[level]
        if lane is None:
            lane = self._lanes[level] = Lane(self, level)
            self._levels.append(lane)
            self._levels.sort(key=lambda each: -each.level)
        return lane

    # ---- counts -------------------------------------------------------------------------------

    @property
    def message_count(self) -> int:
        return sum(lane.message_count for lane in self._levels)

    @property
    def ready_bytes(self) -> int:
        return sum(lane.ready_bytes for lane in self._levels)

    @ready_bytes.setter
    def ready_bytes(self, value: int) -> None:
        pass  # Queue.__init__ starts it at 0; the lanes count their own

    @property
    def paged(self) -> int:
        return sum(lane.paged for lane in self._levels)

    @paged.setter
    def paged(self, value: int) -> None:
        pass  # the lanes page their own

    @property
    def expiring(self) -> bool:
        """Some lane may hold an entry with a deadline (core/ttl.py looks at the heads then)."""
        return self._expiring or any(lane.expiring for lane in self._levels)

    @expiring.setter
    def expiring(self, value: bool) -> None:
        self._expiring = value

    def has_ready(self) -> bool:
        return any(lane.has_ready() for lane in self._levels)

    # ---- enqueue --------------------------------------------------------------------------------

    def enqueue(self, message: Message, admitted: bool = False) -> Outcome:
        if self._admit and not admitted:
            return self._enqueue_through_features(message)
        policy = self.policy
        if policy.bounded and policy.overflow != "drop-head" and self._beyond_limits(1):
            return Outcome.REJECTED
        level = message.priority
        level = min(level, self.max_priority)  # RabbitMQ treats a priority above the maximum as the maximum
        lane = self._lanes[level] or self.lane(level)
        seq = self.next_seq
        self.next_seq = seq + 1
        lane.next_seq = (seq << LEVEL_BITS) | level
        in_window = lane.resident()[0]
        lane.enqueue(message)
        self.stats_published += 1
        if lane.resident()[0] > in_window:
            self._resident += 1
            self._resident_bytes += len(message.body)
            if (
                self._resident > queue_module.WINDOW_MESSAGES
                or self._resident_bytes > queue_module.WINDOW_BYTES
            ):
                lane.demote_newest()
                self._resident -= 1
                self._resident_bytes -= len(message.body)
        if policy.bounded and policy.overflow == "drop-head":
            self._drop_head()
        return Outcome.ACCEPTED

    def spill(self) -> None:
        for lane in self._levels:
            lane.spill()

    # ---- take and give back ---------------------------------------------------------------------

    def pop_ready(self, skip_expired: bool = True) -> Entry | None:
        for lane in self._levels:
            if lane.has_ready():
                before = lane.resident()
                entry = lane.pop_ready(skip_expired)
                self._count_resident(lane, before)
                if entry is not None:
                    return entry
        return None

    def peek_ready(self) -> Entry | None:
        """The head of the highest non-empty lane: as in RabbitMQ, messages expire only from the head,
        so an expired low-priority message waits behind live higher-priority ones."""
        for lane in self._levels:
            if lane.has_ready():
                before = lane.resident()
                entry = lane.peek_ready()
                self._count_resident(lane, before)
                if entry is not None:
                    return entry
        return None

    def peek(self, limit: int, now_ms: int = 0) -> list[Entry]:
        """The lanes' ready entries, highest level first (the order ``pop_ready`` hands them out)."""
        out: list[Entry] = []
        for lane in self._levels:
            if len(out) >= limit:
                break
            out += lane.peek(limit - len(out), now_ms)
        return out

    @property
    def stats_redelivered(self) -> int:
        """Requeued entries are popped by the lanes, which count them."""
        return self._stats_redelivered + sum(lane.stats_redelivered for lane in self._levels)

    @stats_redelivered.setter
    def stats_redelivered(self, value: int) -> None:
        self._stats_redelivered = value

    def pop_many(self, limit: int) -> list[Entry]:
        out: list[Entry] = []
        for lane in self._levels:
            if len(out) >= limit:
                break
            if lane.has_ready():
                before = lane.resident()
                out += lane.pop_many(limit - len(out))
                self._count_resident(lane, before)
        return out

    def _count_resident(self, lane: Lane, before: tuple[int, int]) -> None:
        count, size = lane.resident()
        self._resident += count - before[0]
        self._resident_bytes += size - before[1]

    def requeue(self, entries: list[Entry], now: float = 0.0) -> list[Entry]:
        exhausted: list[Entry] = []  # past x-delivery-limit (core/redelivery.py)
        for lane, group in self._by_lane(entries).items():
            exhausted += lane.requeue(group, now)
        return exhausted

    @property
    def holding(self) -> bool:
        return any(lane.holding for lane in self._levels)

    def release_held(self, now_ms: int) -> bool:
        released = False
        for lane in self._levels:
            released = lane.release_held(now_ms) or released
        return released

    def remove(self, seqs: set[int]) -> list[Entry]:
        """As Queue.remove, lane by lane (a seq's low byte names its lane)."""
        out: list[Entry] = []
        for level in sorted({seq & LEVEL_MASK for seq in seqs}, reverse=True):
            lane = self._lanes[level] if level < len(self._lanes) else None
            if lane is not None:
                before = lane.resident()
                out += lane.remove({seq for seq in seqs if seq & LEVEL_MASK == level})
                self._count_resident(lane, before)
        self.stats_dirty = True
        return out

    def reinsert(self, entries: list[Entry]) -> None:
        for lane, group in self._by_lane(entries).items():
            lane.reinsert(group)

    def settle(self, entries: list[Entry]) -> None:
        for lane, group in self._by_lane(entries).items():
            lane.settle(group)
        if self.hooks.settle:
            self.settled(entries)

    def mark_delivered(self, entries: list[Entry]) -> None:
        for lane, group in self._by_lane(entries).items():  # each lane is FIFO: one watermark per lane
            lane.mark_delivered(group)

    def _by_lane(self, entries: list[Entry]) -> Mapping[Lane, list[Entry]]:
        groups: dict[Lane, list[Entry]] = {}
        for entry in entries:
            lane = self.lane(entry.seq & LEVEL_MASK)
            groups.setdefault(lane, []).append(entry)
        return groups

    def purge(self) -> int:
        count = self.message_count
        self.stats_dirty = True
        for lane in self._levels:
            lane.purge()
        self._resident = self._resident_bytes = 0
        if self.hooks.purge:
            self.purged()
        return count

    def reconfigure(self, effective: dict[str, Any]) -> None:
        """The lanes run with the per-message arguments (delivery limit, retry delays) of the new set."""
        arguments = lane_arguments(effective)
        for lane in self._levels:  # only their policy: the TTL state is the queue's, shared
            lane.effective_arguments = arguments
            lane.policy = QueuePolicy.from_arguments(arguments)
        super().reconfigure(effective)

    # ---- recovery -------------------------------------------------------------------------------

    def restore(self, count: int, max_seq: int) -> None:
        """Rows under the queue's own key: none are ever written there (its lanes hold them)."""
        self.log.stage_purge(self.key)

    def lane_restored(self, max_seq: int) -> None:
        self.next_seq = max(self.next_seq, (max_seq >> LEVEL_BITS) + 1)


def queue_factory(arguments: Mapping[str, Any]) -> Callable[..., Queue]:
    """The queue class for these (validated) arguments: a priority queue for x-max-priority >= 1."""
    if arguments.get("x-max-priority", 0) >= 1:
        return PriorityQueue
    return Queue


def restore_lane(queue: Queue, level: int, count: int, max_seq: int) -> bool:
    """At start-up: the rows of one priority level of ``queue`` (store-key kind ``lane``)."""
    if isinstance(queue, PriorityQueue) and level <= queue.max_priority:
        queue.lane(level).restore(count, max_seq)
        return True
    return False
