"""Deduplicated publishing: a message whose key was seen inside its window is confirmed but not
enqueued again (docs/deduplication.md).

Rules of this module:

* Compatible with RabbitMQ's message-deduplication plugin: the exchange type
  ``x-message-deduplication`` (``x-cache-size``, ``x-cache-ttl``, routes as fanout) and the queue
  argument ``x-message-deduplication`` (a key is refused while a message holding it is in the queue);
  the key is the ``x-deduplication-header`` header. mailslot extensions: ``x-cache-size`` /
  ``x-cache-ttl`` on a queue make it a window that outlives the message, and
  ``x-deduplication-key: "message_id"`` takes the key from the message_id property.
* The window lives in the message log, one row per key under an internal store key (body = the key,
  ``deadline`` = its expiry), staged with the message it admitted, so one group commit makes both
  durable or neither: a crash can neither keep a key without its message (the retry would be dropped)
  nor a message without its key (the retry would be a second copy). A key lasts as long as its message
  would: a transient message or a non-durable owner keeps its key in memory only.
* In memory a ``KeyIndex`` maps a 64-bit hash of each key to its row: about 40 bytes a key
  (benchmarks/dedup_memory.py). A different key with the same hash is taken for a duplicate; with
  ``n`` keys in a window that happens to a new key with probability n / 2**64 (5e-14 at 1M keys).
* Nothing here runs for queues and exchanges without deduplication.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..storage.api import MessageLog, QueueRecovery, StoredMessage
from .features import QueueFeature
from .message import Entry, Message
from .outcome import Outcome
from .storekeys import DEDUP_EXCHANGE, DEDUP_QUEUE, feature_key

if TYPE_CHECKING:
    from .exchanges import Exchange
    from .queue import Queue
    from .vhost import VirtualHost

EXCHANGE_TYPE = "x-message-deduplication"
KEY_HEADER = "x-deduplication-header"
TTL_HEADER = "x-cache-ttl"
KEY_SOURCES = ("header", "message_id")  # values of x-deduplication-key (a mailslot extension)
RESTORE_BATCH = 10_000  # rows read per log.read at start-up
# Keys expired per window per tick: bounds the tick's work (and the batch it stages); an expired key
# still in the index reads as absent, so a backlog only costs memory until the next ticks.
EXPIRE_PER_TICK = 50_000

DUPLICATE = b""  # DedupWindow.check's answer for a duplicate (a real key is never empty: see key_bytes)

_EMPTY = -1  # an empty table slot
_GONE = -1  # ring seq of a removed entry


class KeyIndex:
    """Key hash -> (row seq, expiry ms), in insertion order, in flat arrays.

    A dict of int -> int measured ~120 bytes a key here (two int objects and the entry), so this keeps
    the entries in three 64-bit arrays in insertion order (a ring: hash, seq, expiry) and finds them
    through an open-addressing table (linear probing, backward-shift deletion) of ring positions:
    ~24 bytes a key in the ring plus 11-21 in the table. Positions are absolute; ring index = position -
    ``_base``. Removed entries leave a tombstone (seq -1) in the ring until the oldest end passes it or a
    compaction (when tombstones outnumber live entries) rebuilds both arrays.
    """

    MIN_SLOTS = 16

    def __init__(self) -> None:
        self.count = 0
        self._hashes = array("q")
        self._seqs = array("q")
        self._expiries = array("q")
        self._base = 0  # absolute position of ring index 0
        self._head = 0  # ring index before which every entry is gone
        self._slots = array("q", [_EMPTY]) * self.MIN_SLOTS
        self._mask = self.MIN_SLOTS - 1

    def find(self, h: int) -> int:
        """The position of hash ``h``, or -1."""
        slots, hashes, base, mask = self._slots, self._hashes, self._base, self._mask
        i = h & mask
        while True:
            pos = slots[i]
            if pos == _EMPTY:
                return -1
            if hashes[pos - base] == h:
                return pos
            i = (i + 1) & mask

    def seq(self, pos: int) -> int:
        return self._seqs[pos - self._base]

    def expiry(self, pos: int) -> int:
        return self._expiries[pos - self._base]

    def add(self, h: int, seq: int, expiry: int) -> None:
        """Append a new key (the caller checked it is absent)."""
        if (self.count + 1) * 4 > len(self._slots) * 3:  # load factor 0.75: double
            self._rebuild(len(self._slots) * 2)
        pos = self._base + len(self._seqs)
        self._hashes.append(h)
        self._seqs.append(seq)
        self._expiries.append(expiry)
        self._place(h, pos)
        self.count += 1

    def remove(self, pos: int) -> int:
        """Forget the entry at ``pos``; returns its row seq."""
        i = pos - self._base
        seq = self._seqs[i]
        self._seqs[i] = _GONE
        self._unplace(self._hashes[i], pos)
        self.count -= 1
        if i == self._head:
            self._advance()
        elif len(self._seqs) - self._head > 2 * self.count + 1024:
            self._rebuild(self._table_size(self.count))
        return seq

    def oldest(self) -> int:
        """The position of the oldest entry, or -1 when empty."""
        return self._base + self._head if self.count else -1

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def __len__(self) -> int:
        return self.count

    def nbytes(self) -> int:
        """Bytes held by the arrays (their allocation, not just their use)."""
        arrays = (self._hashes, self._seqs, self._expiries, self._slots)
        return sum(a.buffer_info()[1] * a.itemsize for a in arrays)

    # ---- internals ------------------------------------------------------------------------------

    def _place(self, h: int, pos: int) -> None:
        slots, mask = self._slots, self._mask
        i = h & mask
        while slots[i] != _EMPTY:
            i = (i + 1) & mask
        slots[i] = pos

    def _unplace(self, h: int, pos: int) -> None:
        slots, hashes, base, mask = self._slots, self._hashes, self._base, self._mask
        i = h & mask
        while slots[i] != pos:
            i = (i + 1) & mask
        j = i
        while True:  # backward shift: pull later members of the probe run into the hole
            j = (j + 1) & mask
            p = slots[j]
            if p == _EMPTY:
                break
            home = hashes[p - base] & mask
            if (i <= j and (home <= i or home > j)) or (i > j and home <= i and home > j):
                slots[i] = p
                i = j
        slots[i] = _EMPTY

    def _advance(self) -> None:
        seqs, head, n = self._seqs, self._head, len(self._seqs)
        while head < n and seqs[head] == _GONE:
            head += 1
        self._head = head
        if head == n:  # empty: start the ring over (absolute positions keep increasing)
            self._base += n
            self._head = 0
            del self._hashes[:], self._seqs[:], self._expiries[:]
            if len(self._slots) > self.MIN_SLOTS:
                self._slots = array("q", [_EMPTY]) * self.MIN_SLOTS
                self._mask = self.MIN_SLOTS - 1
        elif head > 4096 and head * 2 > n:
            self._rebuild(self._table_size(self.count))

    def _table_size(self, count: int) -> int:
        size = self.MIN_SLOTS
        while count * 2 > size:  # load factor <= 0.5 after a rebuild
            size *= 2
        return size

    def _rebuild(self, table_size: int) -> None:
        """Drop tombstones from the ring and re-place every live entry in a table of ``table_size``."""
        hashes, seqs, expiries = array("q"), array("q"), array("q")
        for i in range(self._head, len(self._seqs)):
            seq = self._seqs[i]
            if seq != _GONE:
                hashes.append(self._hashes[i])
                seqs.append(seq)
                expiries.append(self._expiries[i])
        self._base += len(self._seqs)  # fresh positions: nothing points at the old ones after this
        self._hashes, self._seqs, self._expiries, self._head = hashes, seqs, expiries, 0
        self._slots = array("q", [_EMPTY]) * table_size
        self._mask = table_size - 1
        base = self._base
        for i, h in enumerate(hashes):
            self._place(h, base + i)


@dataclass(frozen=True, slots=True)
class DedupSettings:
    """What a queue's or exchange's arguments ask for (validated by core.arguments first)."""

    size: int | None = None  # remember at most this many keys (oldest forgotten first)
    ttl_ms: int | None = None  # remember each key this long (x-cache-ttl; a per-message header overrides it)
    until_settled: bool = False  # queue mode: a key is forgotten when its message leaves the queue
    key_source: str = "header"

    @classmethod
    def for_queue(cls, arguments: dict[str, Any]) -> DedupSettings | None:
        if arguments.get("x-message-deduplication") is not True:
            return None
        size, ttl = _positive(arguments.get("x-cache-size")), _positive(arguments.get("x-cache-ttl"))
        return cls(size, ttl, until_settled=size is None and ttl is None, key_source=_source(arguments))

    @classmethod
    def for_exchange(cls, arguments: dict[str, Any]) -> DedupSettings:
        return cls(_positive(arguments.get("x-cache-size")), _positive(arguments.get("x-cache-ttl")),
                   key_source=_source(arguments))


def _positive(value: Any) -> int | None:
    """An integer argument or header (the plugin also takes a decimal string); None if absent or bad."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        value = int(value) if value.strip().isdigit() else None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _source(arguments: dict[str, Any]) -> str:
    value = arguments.get("x-deduplication-key", "header")
    return value.decode() if isinstance(value, bytes) else str(value)


def key_bytes(value: Any) -> bytes | None:
    """The canonical bytes of a key value; None for values that name no key (absent, void, tables,
    arrays). A string and an integer of the same digits are different keys, as in the plugin."""
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray)):
        return b"s" + bytes(value)
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return b"b" + (b"1" if value else b"0")
    if isinstance(value, int):
        return b"i" + str(value).encode()
    return b"o" + repr(value).encode()


class DedupWindow:
    """The keys one queue or exchange remembers, and their rows in the message log."""

    def __init__(
        self,
        store_key: str,
        settings: DedupSettings,
        *,
        durable: bool,
        log: MessageLog,
        clock: Callable[[], float],
    ) -> None:
        self.store_key = store_key
        self.settings = settings
        self.durable = durable
        self.log = log
        self.clock = clock
        self.index = KeyIndex()
        self._next_seq = 1
        self.duplicates = 0  # messages dropped as duplicates (for stats and tests)

    # ---- the publish path ----------------------------------------------------------------------

    def key_of(self, message: Message) -> bytes | None:
        if self.settings.key_source == "message_id":
            return key_bytes(message.message_id)
        return key_bytes(message.header(KEY_HEADER))

    def check(self, message: Message) -> bytes | None:
        """The message's key (remember it once the message is in), None when it has none, or
        ``DUPLICATE``."""
        key = self.key_of(message)
        if key is not None and self.seen(key):
            return DUPLICATE
        return key

    def admit(self, message: Message) -> bool:
        """Check and remember at once (exchanges: nothing can refuse the message in between)."""
        key = self.check(message)
        if key is DUPLICATE:
            return False
        if key is not None:
            self.remember(key, message, message.persistent)
        return True

    def seen(self, key: bytes) -> bool:
        """Is ``key`` in the window? Counts a duplicate; an expired key is forgotten here."""
        index = self.index
        pos = index.find(hash(key))
        if pos < 0:
            return False
        expiry = index.expiry(pos)
        if expiry and expiry <= self._now_ms():
            self._forget([pos])
            return False
        self.duplicates += 1
        return True

    def remember(self, key: bytes, message: Message, persist: bool) -> None:
        """Record a key just admitted with ``message``; its row is staged in the message's batch when
        the message is written durably (``persist``)."""
        settings = self.settings
        ttl = settings.ttl_ms
        if not settings.until_settled:
            ttl = _positive(message.header(TTL_HEADER)) or ttl
        expiry = self._now_ms() + ttl if ttl else 0
        seq = self._next_seq
        self._next_seq = seq + 1
        index = self.index
        if persist and self.durable:
            self.log.stage_append([StoredMessage(self.store_key, seq, "", "", b"", key, True, deadline=expiry)])
        else:
            seq = -seq  # a negative seq: no row to remove
        index.add(hash(key), seq, expiry)
        if settings.size is not None and len(index) > settings.size:
            self._forget([index.oldest()])

    def forget_key(self, key: bytes) -> None:
        pos = self.index.find(hash(key))
        if pos >= 0:
            self._forget([pos])

    def settled(self, entries: Iterable[Entry]) -> None:
        """Queue mode: these entries left the queue (acked, dropped, dead-lettered), so their keys go."""
        if not self.settings.until_settled:
            return
        index = self.index
        found = []
        for entry in entries:
            key = self.key_of(entry.message)
            if key is not None:
                pos = index.find(hash(key))
                if pos >= 0:
                    found.append(pos)
        if found:
            self._forget(found)

    # ---- timers, purge, start-up ------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Forget keys past their expiry, oldest first (a key with a longer per-message TTL stops the
        sweep; the ones behind it that expired read as absent and go when the sweep passes them)."""
        if self.settings.ttl_ms is None and self.settings.until_settled:
            return
        index = self.index
        now_ms = int(now * 1000)
        gone: list[int] = []
        while len(gone) < EXPIRE_PER_TICK:
            pos = index.oldest()
            if pos < 0:
                break
            expiry = index.expiry(pos)
            if not expiry or expiry > now_ms:
                break
            gone.append(index.remove(pos))
        self._drop_rows(gone)

    def clear(self) -> None:
        """Purge or delete: every key goes, and every row."""
        self.index.clear()
        if self.durable:
            self.log.stage_purge(self.store_key)

    def tick(self, now: float) -> None:
        self.expire(now)

    def restore(self, recovered: QueueRecovery | None = None) -> None:
        """At start-up: rebuild the index from the rows the log kept (expired ones are removed)."""
        log, index, now_ms = self.log, self.index, self._now_ms()
        expired: list[int] = []
        after = 0
        while True:
            rows = log.read(self.store_key, after, RESTORE_BATCH)
            if not rows:
                break
            for row in rows:
                if row.deadline and row.deadline <= now_ms:
                    expired.append(row.seq)
                    continue
                h = hash(row.body)
                if index.find(h) < 0:
                    index.add(h, row.seq, row.deadline)
                else:
                    expired.append(row.seq)  # a second row of one key cannot be written; be safe
            after = rows[-1].seq
        self._next_seq = max(self._next_seq, after + 1)
        if expired:
            log.stage_remove(self.store_key, expired)
        size = self.settings.size
        gone: list[int] = []
        while size is not None and len(index) > size:  # the window was made smaller
            gone.append(index.remove(index.oldest()))
        self._drop_rows(gone)

    # ---- internals ------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _forget(self, positions: list[int]) -> None:
        remove = self.index.remove
        self._drop_rows([remove(pos) for pos in positions])

    def _drop_rows(self, seqs: list[int]) -> None:
        stored = [seq for seq in seqs if seq > 0]
        if stored:
            self.log.stage_remove(self.store_key, stored)


def queue_store_key(vhost: str, name: str) -> str:
    """The store key of a queue's window (core/storekeys.py, kind ``dedup-queue``)."""
    return feature_key(DEDUP_QUEUE, vhost, name)


def exchange_store_key(vhost: str, name: str) -> str:
    return feature_key(DEDUP_EXCHANGE, vhost, name)


# ---- the queue feature (core/features.py) ----------------------------------------------------------


class DedupFeature(QueueFeature):
    """``x-message-deduplication`` on a queue: a key in the window refuses the message (DUPLICATE);
    keys are remembered once the queue took the message and forgotten as their messages leave
    (until-settled mode), on purge, and with the feature."""

    name = "dedup"

    def __init__(self, window: DedupWindow, owners: dict[str, Any]) -> None:
        self.window = window
        self._owners = owners  # the vhost's store-key owners: recovery and the feature timer find the window there
        owners[window.store_key] = window
        self._key: bytes | None = None  # the admitted message's key, remembered by ``enqueued``

    @classmethod
    def build(cls, queue: Queue, arguments: dict[str, Any], log: MessageLog,
              clock: Callable[[], float], owners: dict[str, Any]) -> DedupFeature | None:
        settings = DedupSettings.for_queue(arguments)
        if settings is None:
            return None
        key = queue_store_key(queue.vhost, queue.name)
        return cls(DedupWindow(key, settings, durable=queue.durable, log=log, clock=clock), owners)

    def same_as(self, arguments: dict[str, Any]) -> bool:
        return DedupSettings.for_queue(arguments) == self.window.settings

    def admit(self, queue: Queue, message: Message) -> int:
        key = self.window.check(message)
        if key is DUPLICATE:
            return Outcome.DUPLICATE
        self._key = key
        return 0

    def enqueued(self, queue: Queue, message: Message, outcome: Outcome) -> None:
        key, self._key = self._key, None
        # Remembered once the queue took the message (a refused one may be retried); drop-head victims,
        # the new message among them, are settled by the vhost after this returns, which forgets them.
        if key is not None and outcome != Outcome.REJECTED:
            self.window.remember(key, message, message.persistent and queue.durable)

    def settle(self, queue: Queue, entries: list[Entry]) -> None:
        self.window.settled(entries)

    def purge(self, queue: Queue) -> None:
        self.window.clear()

    def close(self, queue: Queue) -> None:
        """The queue is deleted or no longer deduplicates: its keys and their rows go."""
        if self._owners.get(self.window.store_key) is self.window:
            del self._owners[self.window.store_key]
        self.window.clear()


# ---- exchanges of the plugin's type ----------------------------------------------------------------


def attach_to_exchange(vhost: VirtualHost, exchange: Exchange) -> None:
    from .exchanges import DeduplicationExchange  # exchanges imports this module

    if not isinstance(exchange, DeduplicationExchange):
        return
    key = exchange_store_key(vhost.name, exchange.name)
    window = DedupWindow(
        key,
        DedupSettings.for_exchange(exchange.arguments),
        durable=exchange.durable,
        log=vhost.log,
        clock=vhost.clock,
    )
    exchange.window = window
    vhost.owners[key] = window


def detach_from_exchange(vhost: VirtualHost, exchange: Exchange) -> None:
    window: DedupWindow | None = getattr(exchange, "window", None)
    if window is not None and vhost.owners.get(window.store_key) is window:
        del vhost.owners[window.store_key]
        window.clear()


def dropped_as_duplicate(exchange: Exchange, message: Message) -> bool:
    """Was ``message`` routed nowhere because a deduplicating exchange held its key? Then it counts as
    routed: the producer is confirmed and gets no basic.return (the plugin returns a mandatory one)."""
    return getattr(exchange, "dropped", None) is message


def refused(exchange: Exchange, message: Message) -> None:
    """A queue refused the message (x-overflow reject-publish: nacked): its key must not turn the
    producer's retry into a dropped duplicate."""
    window = getattr(exchange, "window", None)
    if window is not None:
        key = window.key_of(message)
        if key is not None:
            window.forget_key(key)
