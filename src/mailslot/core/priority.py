"""Priority queues (``x-max-priority``): a ready store of FIFO lanes, one per priority level in use,
highest level first, the way RabbitMQ's ``rabbit_priority_queue`` wraps one backing queue per priority.

Rules of this module:

* A priority queue is an ordinary :class:`~mailslot.core.queue.Queue` whose ready store is a
  :class:`PriorityStore`. Limits, TTLs, retry delays, features and dispatch stay the queue's; the store
  only decides the order. Each level in use is a :class:`~mailslot.core.queue.FifoStore` under its own
  store key (kind ``lane`` in core/storekeys.py, sub-key the level), so FIFO order, requeue position,
  paging and recovery are the FIFO store's, per level, and recovery hands a lane's rows to it by kind.
* Taking a message takes from the highest non-empty lane. A message's level is its AMQP ``priority``
  (absent: 0) capped at ``x-max-priority``, as in RabbitMQ (https://www.rabbitmq.com/docs/priority).
* The level is encoded in the low byte of ``seq`` (``seq = n << 8 | level``, ``n`` the queue's arrival
  number), so acks and requeues find a message's lane without decoding its properties again, and seq
  order is still arrival order across lanes (core/ttl.py relies on that). On disk this is the layout
  priority queues always had.
* The memory window is shared: a message that would enter a lane's window while the lanes together
  already hold ``WINDOW_MESSAGES`` / ``WINDOW_BYTES`` goes to that lane's overflow and is paged out
  like any overflow. On top of the window, each level being read holds at most one page-in batch.
* The properties are decoded (for ``priority`` only) in queues with ``x-max-priority`` >= 1; every other
  queue has a FIFO store and pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..storage.api import MessageLog
from . import queue as queue_module
from .message import Codecs, Entry, Message
from .queue import FifoStore, Queue
from .storekeys import lane_key, queue_key
from .ttl_live import Cap

LEVEL_BITS = 8  # x-max-priority is at most 255 (arguments.MAX_PRIORITY)
LEVEL_MASK = (1 << LEVEL_BITS) - 1


def max_priority(arguments: Mapping[str, Any]) -> int:
    """The highest level these (validated) arguments ask for; 0: not a priority queue."""
    value = arguments.get("x-max-priority", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def use_priorities(queue: Queue, levels: int) -> None:
    """Make the (new, empty) ``queue`` a priority queue with levels 0..``levels``."""
    queue.store = PriorityStore(
        queue.vhost, queue.name, queue.log, queue.codecs, queue.durable, levels, queue.saw_deadline
    )


class PriorityStore:
    """Ready entries in FIFO lanes, one per level; the highest non-empty lane goes first."""

    seq_shift = LEVEL_BITS

    def __init__(
        self,
        vhost: str,
        name: str,
        log: MessageLog,
        codecs: Codecs,
        durable: bool,
        levels: int,
        saw_deadline: Callable[[], None],
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.log = log
        self.codecs = codecs
        self.durable = durable
        self.max_priority = levels
        self._saw_deadline = saw_deadline
        self._lanes: list[FifoStore | None] = [None] * (levels + 1)
        self._levels: list[FifoStore] = []  # lanes in use, highest level first
        self._resident = 0  # messages in the lanes' windows together
        self._resident_bytes = 0
        self.caps: list[Cap] = []  # core/ttl_live.py; entry seqs, so one list serves every lane

    def lane(self, level: int) -> FifoStore:
        lane = self._lanes[level]
        if lane is None:
            key = lane_key(self.vhost, self.name, level)
            lane = self._lanes[level] = FifoStore(key, self.log, self.codecs, self.durable, self._saw_deadline)
            lane.caps = self.caps  # a lane restored after a message-ttl change reads its rows back capped
            self._levels = [each for each in reversed(self._lanes) if each is not None]
        return lane

    def lanes(self) -> list[FifoStore]:
        """The lanes in use, highest level first."""
        return list(self._levels)

    # ---- counts -------------------------------------------------------------------------------

    def count(self) -> int:
        return sum(lane.count() for lane in self._levels)

    @property
    def ready_bytes(self) -> int:
        return sum(lane.ready_bytes for lane in self._levels)

    @property
    def redelivered(self) -> int:
        return sum(lane.redelivered for lane in self._levels)

    @property
    def paged(self) -> int:
        return sum(lane.paged for lane in self._levels)

    def has_ready(self) -> bool:
        return any(lane.has_ready() for lane in self._levels)

    # ---- in -------------------------------------------------------------------------------------

    def seq_of(self, number: int, message: Message) -> int:
        return (number << LEVEL_BITS) | min(message.priority, self.max_priority)

    def append(self, seq: int, message: Message, deadline: int, durable_write: bool) -> None:
        # Inline rather than seq_of: this is the publish path. Above the maximum counts as the maximum (RabbitMQ).
        level = min(message.priority, self.max_priority)
        lane = self._lanes[level] or self.lane(level)
        in_window = lane.resident()[0]
        lane.append((seq << LEVEL_BITS) | level, message, deadline, durable_write)
        if lane.resident()[0] > in_window:
            size = len(message.body)
            self._resident += 1
            self._resident_bytes += size
            if self._resident > queue_module.WINDOW_MESSAGES or self._resident_bytes > queue_module.WINDOW_BYTES:
                lane.demote_newest()
                self._resident -= 1
                self._resident_bytes -= size

    def push_back(self, entries: list[Entry]) -> None:
        for lane, group in self._by_lane(entries).items():
            lane.push_back(group)

    def cap_deadlines(self, caps: list[Cap]) -> None:
        self.caps = caps
        for lane in self._levels:
            lane.cap_deadlines(caps)

    def mark_redelivered(self, entries: list[Entry]) -> None:
        for lane, group in self._by_lane(entries).items():
            lane.mark_redelivered(group)

    def spill(self) -> None:
        for lane in self._levels:
            lane.spill()

    # ---- out ------------------------------------------------------------------------------------

    def pop(self) -> Entry | None:
        for lane in self._levels:
            if lane.has_ready():
                before = lane.resident()
                entry = lane.pop()
                self._count_resident(lane, before)
                if entry is not None:
                    return entry
        return None

    def pop_many(self, limit: int, now: int) -> list[Entry]:
        """Lane by lane, highest first; a lane that stops with entries left stopped at an expired head,
        which must go (the queue expires it) before anything of a lower lane."""
        out: list[Entry] = []
        for lane in self._levels:
            if len(out) >= limit:
                break
            if lane.has_ready():
                before = lane.resident()
                out += lane.pop_many(limit - len(out), now)
                self._count_resident(lane, before)
                if len(out) < limit and lane.has_ready():
                    break
        return out

    def peek_head(self) -> Entry | None:
        """The head of the highest non-empty lane: as in RabbitMQ, messages expire only from the head,
        so an expired low-priority message waits behind live higher-priority ones."""
        for lane in self._levels:
            if lane.has_ready():
                before = lane.resident()
                entry = lane.peek_head()
                self._count_resident(lane, before)
                if entry is not None:
                    return entry
        return None

    def peek(self, limit: int, now_ms: int = 0) -> list[Entry]:
        """The lanes' ready entries, highest level first (the order ``pop`` hands them out)."""
        out: list[Entry] = []
        for lane in self._levels:
            if len(out) >= limit:
                break
            out += lane.peek(limit - len(out), now_ms)
        return out

    def _count_resident(self, lane: FifoStore, before: tuple[int, int]) -> None:
        count, size = lane.resident()
        self._resident += count - before[0]
        self._resident_bytes += size - before[1]

    # ---- the log's side of delivery and settling ------------------------------------------------

    def mark_delivered(self, entries: list[Entry]) -> None:
        for lane, group in self._by_lane(entries).items():  # each lane is FIFO: one watermark per lane
            lane.mark_delivered(group)

    def settle(self, entries: list[Entry]) -> None:
        for lane, group in self._by_lane(entries).items():
            lane.settle(group)

    def purge(self) -> None:
        for lane in self._levels:
            lane.purge()
        self._resident = self._resident_bytes = 0

    def _by_lane(self, entries: list[Entry]) -> Mapping[FifoStore, list[Entry]]:
        groups: dict[FifoStore, list[Entry]] = {}
        for entry in entries:
            lane = self.lane(entry.seq & LEVEL_MASK)
            groups.setdefault(lane, []).append(entry)
        return groups

    # ---- taking chosen entries out (redrive) ----------------------------------------------------

    def remove(self, seqs: set[int]) -> list[Entry]:
        """Lane by lane (a seq's low byte names its lane)."""
        out: list[Entry] = []
        wanted = {level for level in {seq & LEVEL_MASK for seq in seqs} if level <= self.max_priority}
        for level, lane in enumerate(self._lanes):
            if lane is None:
                continue
            before = lane.resident()
            out += lane.remove({seq for seq in seqs if seq & LEVEL_MASK == level} if level in wanted else set())
            self._count_resident(lane, before)
        return out

    def reinsert(self, entries: list[Entry]) -> None:
        for lane, group in self._by_lane(entries).items():
            lane.reinsert(group)

    # ---- recovery -------------------------------------------------------------------------------

    def restore(self, count: int, max_seq: int) -> int:
        """Rows under the queue's own key: none are ever written there (its lanes hold them)."""
        self.log.stage_purge(queue_key(self.vhost, self.name))
        return 1

    def restore_lane(self, level: int, count: int, max_seq: int) -> int:
        """The rows of one level (store-key kind ``lane``); 0 for a level above ``x-max-priority``."""
        if level > self.max_priority:
            return 0
        self.lane(level).restore(count, max_seq)
        return (max_seq >> LEVEL_BITS) + 1
