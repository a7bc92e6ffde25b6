"""Append-only segment message log (docs/storage-format.md "Segment log", docs/decisions/0002).

Rules of this module:

* Staging builds bytes: ``stage_append`` keeps each message's fields in a tuple, packed into its final
  record at commit; removes, redelivered flags and purges are folded into per-queue lists the way the SQLite store does
  (an append removed in the same batch is dropped, a flag on a staged append edits its record, a purge
  drops the queue's staged work). ``commit()`` writes the batch as ONE framed, checksummed write
  (purges, queue names, appends, flags, removes, in that order) and ``fdatasync``s it, and only then
  applies it to the in-memory index. If the write or the sync fails, the bytes are truncated away, the
  index is untouched and the batch stays staged.
* The index holds live messages only: per queue, parallel arrays of seq, location and record length
  (20 bytes a message), sorted by seq, plus the requeue counts that the location's redelivered bit does
  not imply (see :class:`_QueueIndex`). Reads ``pread`` the records it points to; they see committed
  data only. The deadline lives in the record alone.
* A segment may be deleted only when it holds no live append AND every older segment its remove /
  purge / flag records point into is gone already; otherwise a restart could resurrect a removed
  message. Segments carry their own queue-name records so any subset of them can be replayed.
* Delivery watermarks (``stage_delivered``) are one small record per queue per batch. A watermark
  record points at older segments without pinning them: instead the first batch of every segment
  repeats every watermark in force, so the newest segment always holds them all and any older
  segment may go. That is why a segment left dead by a roll is deleted only after the new segment's
  first batch is on disk.
* A body several queues got in one batch (the same object) is written once; the other appends refer to
  it (F_BODYREF, in the same batch and so the same segment, which lives while any of them does).
* One process at a time: an exclusive ``flock`` on ``<directory>/LOCK``. The loop thread calls it, except a
  batch with large bodies that :meth:`SegmentMessageLog.prepare_commit` detached for the broker's commit
  thread; ``_lock`` serialises that writer with everything that reads the index or the files.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from pathlib import Path

from mailslot.storage.api import DEFAULT_CODEC, QueueRecovery, StoredMessage
from mailslot.storage.segments._format import (
    APPEND,
    APPEND_EXT,
    BATCH,
    BATCH_MAGIC,
    BIG_ENDIAN_HOST,
    BODYREF,
    DREC,
    F_BODYREF,
    F_CODEC,
    F_EXTENDED,
    F_PERSISTENT,
    F_REDELIVERED,
    LOC_REDELIVERED,
    LOC_TRANSIENT,
    MAX_REQUEUES,
    OFF_MASK,
    QREC,
    READABLE_MAGICS,
    REC,
    SEG_MASK,
    SEG_SHIFT,
    SEGMENT_MAGIC,
    SEGMENT_MAGIC_PREFIX,
    SEGMENT_SUFFIX,
    SEQS,
    T_APPEND,
    T_DELIVERED,
    T_PURGE,
    T_QUEUE,
    T_REDELIVER,
    T_REMOVE,
    segment_name,
)

# A segment is closed (a new one started) once it holds this much: bounds how much one dead-but-pinned
# segment costs on disk and how much recovery reads at once. A single batch is never split.
SEGMENT_BYTES = 64 * 1024 * 1024
# Compaction: a closed segment whose live records fill less than this share of it is rewritten
# (its live records copied into the active segment) so that it can be deleted.
COMPACT_LIVE_RATIO = 0.25
# Compaction scans (and copies the live records of) at most this much of a segment per commit(): one step
# is a pread, a Python pass over its records and a write + fdatasync of the live ones, and the event loop
# waits for it. 1 MiB measured 15-60 ms a step on the 2-core test machine (4 MiB: 50-250 ms, which a
# live consumer saw as delivery dips; benchmarks/compaction_latency.py).
COMPACT_STEP_BYTES = 1024 * 1024
# A closed segment is compacted only once its live bytes have not changed for this many commits. A
# segment a consumer is draining changes at every commit and dies by itself soon: copying its live
# records forward (the very messages about to be delivered) is wasted work that competed with the drain
# (issue 15: dips of 1-2 s about every 40 s during a long drain). A segment pinned by a few messages
# nobody takes (a dead-letter queue, a parked consumer) is stable and is compacted. 200 commits is
# well under a second at the broker's commit rates and keeps a steady drain out.
COMPACT_STABLE_COMMITS = 200
# Adjacent records are read with one pread up to this size.
READ_GROUP_BYTES = 4 * 1024 * 1024
LOCK_FILENAME = "LOCK"
# A body at least this large that several queues got in one batch (the same object: one message routed
# to several queues) is written once; the other records refer to it (F_BODYREF). Below it, a reference
# (12 bytes, and a second read when paging in) buys too little.
SHARE_MIN_BYTES = 4096
# A body at least this large goes to pwritev as its own buffer instead of being copied into the payload.
LARGE_BODY_BYTES = 256 * 1024
# A batch carrying at least this many body bytes is written and fsynced in the broker's commit thread
# (prepare_commit) rather than on the event loop: a 100 MB message takes ~0.3-0.5 s to write and sync
# here, and every other connection would wait that long. Smaller batches stay on the loop (packing needs
# the loop anyway, and the thread hop would cost more than the write; docs/concurrency.md).
THREADED_COMMIT_BYTES = 4 * 1024 * 1024
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)

_log = logging.getLogger(__name__)

_APPEND_SIZE = APPEND.size
_APPEND_PACK = APPEND.pack
_EXT_SIZE = APPEND_EXT.size
_EXT_PACK = APPEND_EXT.pack
_BATCH_SIZE = BATCH.size


# A staged append: exchange, routing key, properties, body, and the record's flags, packed into a record
# at commit. For an extended record the last item is (flags, deadline, requeues, codec) (see _row_flags).
_Flags = int | tuple[int, int, int, str]
_Row = tuple[str, str, bytes, bytes, _Flags]


def _row_flags(persistent: bool, redelivered: bool, deadline: int, requeues: int,
               codec: str = DEFAULT_CODEC) -> _Flags:
    """The flags of a staged append; with the deadline, the requeue count and the codec when the plain
    record cannot say them (a deadline, a count other than the one F_REDELIVERED implies, a codec other
    than the default)."""
    flags = F_PERSISTENT if persistent else 0
    if codec != DEFAULT_CODEC:
        if redelivered or requeues:
            flags |= F_REDELIVERED
            requeues = max(requeues, 1)
        return flags | F_EXTENDED | F_CODEC, deadline, min(requeues, MAX_REQUEUES), codec
    if redelivered or requeues:  # requeues > 0 is redelivered (storage/api.py)
        flags |= F_REDELIVERED
        if requeues != 1 or deadline:
            return flags | F_EXTENDED, deadline, min(requeues, MAX_REQUEUES), codec
    elif deadline:
        return flags | F_EXTENDED, deadline, 0, codec
    return flags


def _codec_at(data: bytes, a: int) -> tuple[str, int]:
    """The codec name of an F_CODEC record at ``a`` (after APPEND_EXT), and the offset after it."""
    n = data[a]
    return bytes(data[a + 1:a + 1 + n]).decode("ascii"), a + 1 + n


class SegmentCorruptError(RuntimeError):
    """A segment other than the last one fails its checks: real corruption, not a torn write."""


class SegmentFormatError(RuntimeError):
    """A segment written in another version of the format (refused rather than misread or reset)."""


class _QueueIndex:
    """Live messages of one queue: parallel arrays sorted by seq, tombstones (loc 0) and a head pointer.

    Appends come in increasing seq (the core's order), so they are array appends; head removals (acks
    in order) move ``head``; other removals leave a tombstone, compacted away once tombstones outnumber
    live entries. Everything before ``head`` is garbage, trimmed now and then.

    Requeue counts: a live entry without the redelivered bit has 0, one with it has 1 unless ``counts``
    (seq -> count) says otherwise. Most messages are never requeued and most requeued ones once, so the
    dict stays small (empty for most queues); it holds messages requeued more than once and those
    appended as redelivered with no count (0).
    """

    __slots__ = ("counts", "head", "lens", "live", "locs", "seqs")

    def __init__(self) -> None:
        self.seqs = array("q")
        self.locs = array("Q")
        self.lens = array("I")
        self.head = 0
        self.live = 0
        self.counts: dict[int, int] = {}

    def set_requeues(self, seq: int, loc: int, requeues: int) -> None:
        """Record the count of a (re)placed entry whose location is ``loc``."""
        counts = self.counts
        if counts:
            counts.pop(seq, None)
        if loc & LOC_REDELIVERED and requeues != 1:
            counts[seq] = requeues

    def requeue(self, i: int) -> None:
        """One more requeue of the live entry at ``i``."""
        loc = self.locs[i]
        if not loc & LOC_REDELIVERED:
            self.locs[i] = loc | LOC_REDELIVERED
            return
        seq = self.seqs[i]
        counts = self.counts
        n = counts.get(seq, 1) + 1
        if n == 1:
            del counts[seq]  # it was 0 ("redelivered, none counted")
        else:
            counts[seq] = n

    def find(self, seq: int) -> int:
        """Position of the live entry for ``seq``, or -1."""
        seqs = self.seqs
        h = self.head
        n = len(seqs)
        if h < n and seqs[h] == seq:
            return h
        i = bisect_left(seqs, seq, h)
        if i < n and seqs[i] == seq and self.locs[i]:
            return i
        return -1

    def put(self, seq: int, loc: int, length: int) -> tuple[int, int] | None:
        """Add (or replace) ``seq``; returns the replaced live entry's (loc, length)."""
        seqs = self.seqs
        n = len(seqs)
        if self.head == n and n:
            self._reset()
            n = 0
        if not n or seq > seqs[-1]:
            seqs.append(seq)
            self.locs.append(loc)
            self.lens.append(length)
            self.live += 1
            return None
        i = bisect_left(seqs, seq, self.head)
        if i < n and seqs[i] == seq:
            old = self.locs[i]
            old_len = self.lens[i]
            self.locs[i] = loc
            self.lens[i] = length
            if old:
                return old, old_len
            self.live += 1
            return None
        seqs.insert(i, seq)
        self.locs.insert(i, loc)
        self.lens.insert(i, length)
        self.live += 1
        return None

    def drop(self, i: int) -> None:
        """Tombstone the live entry at ``i``."""
        locs = self.locs
        locs[i] = 0
        self.live -= 1
        n = len(locs)
        h = self.head
        if i == h:
            h += 1
            while h < n and not locs[h]:
                h += 1
            self.head = h
            if h == n:
                self._reset()
            elif h > 4096 and h > n // 2:
                del self.seqs[:h]
                del self.locs[:h]
                del self.lens[:h]
                self.head = 0
        elif (n - h) - self.live > self.live + 64:
            self._compact()

    def _reset(self) -> None:
        self.seqs = array("q")
        self.locs = array("Q")
        self.lens = array("I")
        self.head = 0

    def _compact(self) -> None:
        seqs, locs, lens = self.seqs, self.locs, self.lens
        keep = [i for i in range(self.head, len(locs)) if locs[i]]
        self.seqs = array("q", [seqs[i] for i in keep])
        self.locs = array("Q", [locs[i] for i in keep])
        self.lens = array("I", [lens[i] for i in keep])
        self.head = 0

    def live_entries(self) -> list[tuple[int, int, int]]:
        seqs, locs, lens = self.seqs, self.locs, self.lens
        return [(seqs[i], locs[i], lens[i]) for i in range(self.head, len(locs)) if locs[i]]

    def nbytes(self) -> int:
        """Bytes held by the arrays (capacity, not just length) and the requeue counts."""
        counts = self.counts.__sizeof__() + 56 * len(self.counts) if self.counts else 0  # + its int objects
        return sum(a.__sizeof__() for a in (self.seqs, self.locs, self.lens)) + counts


def _seq_bytes(seqs: list[int]) -> bytes:
    a = array("q", seqs)
    if BIG_ENDIAN_HOST:
        a.byteswap()
    return a.tobytes()


def _seqs_from(data: memoryview | bytes, start: int, count: int) -> array[int]:
    a = array("q")
    a.frombytes(data[start : start + 8 * count])
    if BIG_ENDIAN_HOST:
        a.byteswap()
    return a


class SegmentMessageLog:
    """:class:`~mailslot.storage.api.MessageLog` as append-only segment files in ``directory``."""

    def __init__(
        self,
        directory: Path | str,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        compact: bool = True,
        compact_stable_commits: int = COMPACT_STABLE_COMMITS,
        compact_step_bytes: int = COMPACT_STEP_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.compact_enabled = compact
        self.compact_stable_commits = compact_stable_commits
        self.compact_step_bytes = compact_step_bytes
        created = not self.directory.exists()
        self.directory.mkdir(parents=True, exist_ok=True)
        if created:
            _fsync_dir(self.directory.parent)
        self._lock_fd: int | None = os.open(self.directory / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._lock_fd)
            self._lock_fd = None
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RuntimeError(f"{self.directory} is in use by another process") from e
            raise
        # Segments: fd, committed size, live append records, their bytes, and the older segments
        # this one's remove/purge/flag records point into (it must outlive them).
        self._fds: dict[int, int] = {}
        self._size: dict[int, int] = {}
        self._live: dict[int, int] = {}
        self._live_bytes: dict[int, int] = {}
        self._deps: dict[int, set[int]] = {}
        self._compact_from: dict[int, int] = {}  # where the next compaction step of a segment starts
        # Closed segment -> (its live bytes, the commit they were first seen at): see COMPACT_STABLE_COMMITS.
        self._stable_since: dict[int, tuple[int, int]] = {}
        self._batches = 0  # batches committed by this process (compaction steps not counted)
        self._active = 0
        self._declared: set[int] = set()  # qids with a queue-name record in the active segment
        self._index: dict[str, _QueueIndex] = {}
        self._qids: dict[str, int] = {}
        self._qnames: dict[int, str] = {}
        self._next_qid = 1
        # Staging.
        self._appends: dict[str, dict[int, _Row]] = {}
        self._removes: dict[str, list[int]] = {}
        self._marks: dict[str, list[int]] = {}
        self._purges: dict[str, None] = {}
        self._delivered_staged: dict[str, int] = {}
        self._delivered: dict[str, int] = {}  # queue -> committed delivery watermark
        self._active_format = SEGMENT_MAGIC  # the header of the last segment replayed
        self._large_bytes = 0  # bytes of staged bodies of LARGE_BODY_BYTES and more
        self._dirty = False
        self._closed = False
        # Held while a batch is written (the broker's commit thread, or commit()) and by everything that
        # reads the index or the files; staging needs no lock (it touches only the staged batch).
        self._lock = threading.Lock()
        self.stats = {"commits": 0, "bytes_written": 0, "segments_deleted": 0, "compacted_bytes": 0}
        try:
            self._load()
        except BaseException:
            self._release()
            raise

    # -- staging -------------------------------------------------------------------------------------
    def stage_append(self, messages: list[StoredMessage]) -> None:
        if not messages:
            return
        self._dirty = True
        appends = self._appends
        last: str | None = None
        rows: dict[int, _Row] = {}
        for m in messages:
            q = m.queue
            if q != last:
                r = appends.get(q)
                if r is None:
                    r = appends[q] = {}
                rows = r
                last = q
            # Packed at commit: a message acked before the commit (the common case when consumers
            # keep up) costs one tuple here and nothing more.
            if m.deadline or m.requeues or m.redelivered or m.codec != DEFAULT_CODEC:
                flags = _row_flags(m.persistent, m.redelivered, m.deadline, m.requeues, m.codec)
            else:
                flags = F_PERSISTENT if m.persistent else 0
            body = m.body
            if len(body) >= LARGE_BODY_BYTES:
                self._large_bytes += len(body)
            rows[m.seq] = (m.exchange, m.routing_key, m.properties, body, flags)

    def stage_remove(self, queue: str, seqs: list[int]) -> None:
        if not seqs:
            return
        self._dirty = True
        rows = self._appends.get(queue)
        if rows:
            pop = rows.pop
            rest = [s for s in seqs if pop(s, None) is None]  # published and acked in one batch
        else:
            rest = list(seqs)
        if rest:
            staged = self._removes.get(queue)
            if staged is None:
                self._removes[queue] = rest
            else:
                staged.extend(rest)

    def stage_mark_redelivered(self, queue: str, seqs: list[int]) -> None:
        if not seqs:
            return
        self._dirty = True
        rows = self._appends.get(queue)
        rest: list[int] = []
        for s in seqs:
            row = rows.get(s) if rows else None
            if row is None:
                rest.append(s)
            else:
                f = row[4]
                if isinstance(f, tuple):
                    flags, deadline, requeues, codec = f
                else:
                    flags, deadline, requeues, codec = f, 0, 1 if f & F_REDELIVERED else 0, DEFAULT_CODEC
                rows[s] = (  # type: ignore[index]
                    row[0], row[1], row[2], row[3],
                    _row_flags(bool(flags & F_PERSISTENT), True, deadline, requeues + 1, codec),
                )
        if rest:
            self._marks.setdefault(queue, []).extend(rest)

    def stage_delivered(self, queue: str, seq: int) -> None:
        self._dirty = True  # even when it changes nothing: has_staged() answers as the reference store does
        staged = self._delivered_staged
        # Compared with the staged one when there is one or a purge is staged (the committed one will not count).
        fresh = queue in staged or queue in self._purges
        if seq > (staged.get(queue, 0) if fresh else self._delivered.get(queue, 0)):
            staged[queue] = seq

    def stage_purge(self, queue: str) -> None:
        self._dirty = True
        self._appends.pop(queue, None)
        self._removes.pop(queue, None)
        self._marks.pop(queue, None)
        self._delivered_staged.pop(queue, None)
        self._purges[queue] = None

    def has_staged(self) -> bool:
        return self._dirty

    def _new_qid(self, queue: str) -> int:
        qid = self._next_qid
        self._next_qid = qid + 1
        self._qids[queue] = qid
        self._qnames[qid] = queue
        return qid

    def _qid(self, queue: str) -> int:
        return self._qids.get(queue) or self._new_qid(queue)

    # -- commit --------------------------------------------------------------------------------------
    def commit(self) -> None:
        """Write the batch as one checksummed frame, fdatasync it, then apply it to the index.

        If it raises, nothing of the batch is applied (its bytes are truncated away) and it stays staged.
        """
        self._check_open()
        if not self._dirty:
            return
        with self._lock:
            self._write_staged(self._appends, self._removes, self._marks, self._purges, self._delivered_staged)
            self._detach()

    def prepare_commit(self) -> Callable[[], None] | None:
        """A batch with THREADED_COMMIT_BYTES of large bodies: detach it and return the function that
        writes it, run by the broker in its commit thread while the loop goes on (one at a time, in
        order). Anything smaller (or with a purge, whose watermark bookkeeping stage_delivered reads):
        None, and the broker calls :meth:`commit` on the loop.

        The detached batch is the broker's from then on: if its write raises, it is not staged again
        (the broker nacks what waited on it), as with the SQLite store."""
        if self._large_bytes < THREADED_COMMIT_BYTES or not self._dirty or self._purges:
            return None
        staged = (self._appends, self._removes, self._marks, self._purges, self._delivered_staged)
        self._detach()

        def write() -> None:
            with self._lock:
                self._check_open()
                self._write_staged(*staged)

        return write

    def _detach(self) -> None:
        self._appends = {}
        self._removes = {}
        self._marks = {}
        self._purges = {}
        self._delivered_staged = {}
        self._large_bytes = 0
        self._dirty = False

    def _write_staged(
        self,
        appends: dict[str, dict[int, _Row]],
        removes: dict[str, list[int]],
        marks: dict[str, list[int]],
        purges: dict[str, None],
        delivered: dict[str, int],
    ) -> None:
        """Write (with the lock held) and apply one staged batch, then a compaction step."""
        rows = [(q, r) for q, r in appends.items() if r]
        if rows or removes or marks or purges or delivered:
            self._write_and_apply(rows, removes, marks, purges, delivered)
        self._batches += 1
        if self.compact_enabled:
            try:
                self._maybe_compact()
            except OSError:
                # The batch above is durable and must be reported so; a failed compaction step wrote
                # nothing that counts (its bytes are truncated away) and is retried at a later commit.
                _log.exception("segment compaction failed; will retry")

    def _write_and_apply(
        self,
        appends: list[tuple[str, dict[int, _Row]]],
        removes: dict[str, list[int]],
        marks: dict[str, list[int]],
        purges: dict[str, None],
        delivered: dict[str, int],
    ) -> None:
        rolled = self._roll() if self._size[self._active] >= self.segment_bytes else 0
        active = self._active
        fd = self._fds[active]
        base = self._size[active]
        if base == len(SEGMENT_MAGIC) and self._delivered:
            # The segment's first batch: it repeats every watermark in force (see the module's rules).
            delivered = {**{q: s for q, s in self._delivered.items() if q not in purges}, **delivered}
        qids = self._qids
        declared = self._declared
        parts: list[bytes] = []
        new_declared: list[int] = []
        for q in (*purges, *(q for q, _ in appends), *marks, *removes, *delivered):
            qid = self._qid(q)
            if qid not in declared and qid not in new_declared:
                key = q.encode()
                parts.append(QREC.pack(QREC.size + len(key), T_QUEUE, qid) + key)
                new_declared.append(qid)
        for q in purges:
            parts.append(QREC.pack(QREC.size, T_PURGE, qids[q]))
        off = base + _BATCH_SIZE + sum(map(len, parts))
        segbase = active << SEG_SHIFT
        pack = _APPEND_PACK
        placed: list[tuple[str, list[int], list[int], list[int], bool, list[tuple[int, int]]]] = []
        shared: dict[int, int] = {}  # id(body) -> offset of its first copy in this batch
        large = False  # a body of LARGE_BODY_BYTES or more: pass it to pwritev uncopied
        for q, rows in appends:
            qid = qids[q]
            q_seqs: list[int] = []
            q_locs: list[int] = []
            q_lens: list[int] = []
            q_counts: list[tuple[int, int]] = []  # (seq, requeues) the redelivered bit does not imply
            in_order = True
            prev = None
            for seq, (ex, rk, props, body, flags) in rows.items():
                exb = ex.encode()
                rkb = rk.encode()
                blen = len(body)
                n = _APPEND_SIZE + len(exb) + len(rkb) + len(props) + blen
                loc = segbase | off
                if flags == F_PERSISTENT and blen < SHARE_MIN_BYTES:  # the common record
                    parts += (pack(n, T_APPEND, qid, seq, flags, len(exb), len(rkb), len(props)), exb, rkb, props, body)
                else:
                    ext = b""
                    if isinstance(flags, tuple):
                        flags, deadline, requeues, codec = flags
                        ext = _EXT_PACK(deadline, requeues)
                        if flags & F_CODEC:
                            name = codec.encode("ascii")
                            ext += bytes((len(name),)) + name
                        n += len(ext)
                        if flags & F_REDELIVERED and requeues != 1:
                            q_counts.append((seq, requeues))
                    if flags & F_REDELIVERED:
                        loc |= LOC_REDELIVERED
                    if not flags & F_PERSISTENT:
                        loc |= LOC_TRANSIENT
                    if blen >= SHARE_MIN_BYTES:
                        first = shared.get(id(body))  # the rows hold every body, so ids are unique here
                        if first is None:
                            shared[id(body)] = off + n - blen
                            large = large or blen >= LARGE_BODY_BYTES
                        else:
                            body = BODYREF.pack(first, blen)
                            n += len(body) - blen
                            flags |= F_BODYREF
                    parts += (
                        pack(n, T_APPEND, qid, seq, flags, len(exb), len(rkb), len(props)), ext, exb, rkb, props, body
                    )
                if prev is not None and seq <= prev:
                    in_order = False
                prev = seq
                q_seqs.append(seq)
                q_locs.append(loc)
                q_lens.append(n)
                off += n
            placed.append((q, q_seqs, q_locs, q_lens, in_order, q_counts))
        for kind, staged in ((T_REDELIVER, marks), (T_REMOVE, removes)):
            for q, seqs in staged.items():
                parts.append(SEQS.pack(SEQS.size + 8 * len(seqs), kind, qids[q], len(seqs)))
                parts.append(_seq_bytes(seqs))
        for q, seq in delivered.items():
            parts.append(DREC.pack(DREC.size, T_DELIVERED, qids[q], seq))
        if large:
            chunks = _coalesce(parts)
            size = sum(map(len, chunks))
            crc = 0
            for chunk in chunks:
                crc = zlib.crc32(chunk, crc)  # releases the GIL on large buffers
        else:
            chunks = [b"".join(parts)]
            size = len(chunks[0])
            crc = zlib.crc32(chunks[0])
        header = BATCH.pack(BATCH_MAGIC, size, crc)
        try:
            _pwrite_all(fd, [header, *chunks], base)
            os.fdatasync(fd)
        except BaseException:
            try:
                os.ftruncate(fd, base)
                self._preallocate(fd, base)
            except OSError:
                pass
            raise
        end = base + _BATCH_SIZE + size
        self._size[active] = end
        declared.update(new_declared)
        self.stats["commits"] += 1
        self.stats["bytes_written"] += end - base

        # Apply, in the order written.
        touched: set[int] = set()
        for q in purges:
            self._purge_index(q, active, touched)
        index = self._index
        live = self._live
        live_bytes = self._live_bytes
        added = added_bytes = 0
        for q, q_seqs, q_locs, q_lens, in_order, q_counts in placed:
            idx = index.get(q)
            if idx is None:
                idx = index[q] = _QueueIndex()
            have = idx.seqs
            if idx.head == len(have) and have:
                idx._reset()
                have = idx.seqs
            if in_order and (not have or q_seqs[0] > have[-1]):  # the core's case: plain array appends
                have.extend(q_seqs)
                idx.locs.extend(q_locs)
                idx.lens.extend(q_lens)
                idx.live += len(q_seqs)
            else:
                put = idx.put
                counts = idx.counts
                for seq, loc, n in zip(q_seqs, q_locs, q_lens):
                    old = put(seq, loc, n)
                    if old is not None:
                        self._forget(old[0], old[1], active, touched)
                    if counts:
                        counts.pop(seq, None)  # a replaced entry's count goes with it
            if q_counts:
                idx.counts.update(q_counts)
            added += len(q_seqs)
            added_bytes += sum(q_lens)
        live[active] += added
        live_bytes[active] += added_bytes
        for q, seqs in marks.items():
            self._mark_index(q, seqs, active)
        for q, seqs in removes.items():
            self._remove_index(q, seqs, active, touched)
        for q, seq in delivered.items():
            self._set_delivered(q, seq)
        if rolled and rolled in self._fds and not self._live[rolled]:
            touched.add(rolled)  # only now: this first batch of the new segment holds the watermarks
        if touched:
            self._delete_dead(touched)

    # -- index updates (shared by commit and replay) ---------------------------------------------------
    def _forget(self, loc: int, length: int, active: int, touched: set[int]) -> None:
        seg = (loc >> SEG_SHIFT) & SEG_MASK
        self._live[seg] -= 1
        self._live_bytes[seg] -= length
        if seg != active:
            self._deps[active].add(seg)
        if not self._live[seg]:
            touched.add(seg)

    def _remove_index(self, queue: str, seqs: list[int] | array[int], active: int, touched: set[int]) -> None:
        idx = self._index.get(queue)
        if idx is None:
            return
        live = self._live
        live_bytes = self._live_bytes
        deps = self._deps[active]
        find = idx.find
        drop = idx.drop
        for s in seqs:
            i = find(s)
            if i < 0:
                continue
            loc = idx.locs[i]
            length = idx.lens[i]
            drop(i)
            seg = (loc >> SEG_SHIFT) & SEG_MASK
            live[seg] -= 1
            live_bytes[seg] -= length
            if seg != active:
                deps.add(seg)
            if not live[seg]:
                touched.add(seg)
        counts = idx.counts
        if counts:  # the removed messages' requeue counts go with them
            for s in seqs:
                counts.pop(s, None)
        if not idx.live:
            del self._index[queue]

    def _mark_index(self, queue: str, seqs: list[int] | array[int], active: int) -> None:
        idx = self._index.get(queue)
        if idx is None:
            return
        deps = self._deps[active]
        locs = idx.locs
        for s in seqs:
            i = idx.find(s)
            if i >= 0:
                loc = locs[i]
                idx.requeue(i)
                seg = (loc >> SEG_SHIFT) & SEG_MASK
                if seg != active:
                    deps.add(seg)

    def _set_delivered(self, queue: str, seq: int) -> None:
        if seq:
            self._delivered[queue] = seq
        else:
            self._delivered.pop(queue, None)

    def _purge_index(self, queue: str, active: int, touched: set[int]) -> None:
        self._delivered.pop(queue, None)
        idx = self._index.pop(queue, None)
        if idx is None:
            return
        for _, loc, length in idx.live_entries():
            self._forget(loc, length, active, touched)

    # -- segments ------------------------------------------------------------------------------------
    def _path(self, seg: int) -> Path:
        return self.directory / segment_name(seg)

    def _roll(self) -> int:
        """Close the active segment and start the next one (header fsynced, then the directory); returns
        the closed one (0: none). The caller deletes it if it is dead, once the new one has a batch."""
        old = self._active
        seg = old + 1
        fd = os.open(self._path(seg), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.pwrite(fd, SEGMENT_MAGIC, 0)
            self._preallocate(fd, len(SEGMENT_MAGIC))
            os.fdatasync(fd)
            _fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        if old:
            # Give back the unused preallocation of the closed segment (its tail is zeros anyway).
            os.ftruncate(self._fds[old], self._size[old])
            os.fdatasync(self._fds[old])
        self._fds[seg] = fd
        self._size[seg] = len(SEGMENT_MAGIC)
        self._live[seg] = 0
        self._live_bytes[seg] = 0
        self._deps[seg] = set()
        self._active = seg
        self._declared = set()
        return old

    def _preallocate(self, fd: int, start: int) -> None:
        """Reserve the rest of the segment so that a commit's fdatasync need not grow the file
        (measured: ~1.7x the commits/s for one-message batches on ext4). Reads back as zeros, which
        recovery treats as the end of the segment."""
        if start < self.segment_bytes:
            try:
                os.posix_fallocate(fd, start, self.segment_bytes - start)
            except OSError:
                pass  # not supported here: the file grows with each write instead

    def _delete_dead(self, candidates: set[int]) -> None:
        """Delete segments with no live append whose pointed-into older segments are all gone."""
        todo = sorted(candidates, reverse=True)
        fds = self._fds
        while todo:
            seg = todo.pop()
            if seg == self._active or seg not in fds or self._live[seg]:
                continue
            if any(d in fds for d in self._deps[seg]):
                continue
            os.close(fds.pop(seg))
            os.unlink(self._path(seg))
            # Each unlink durable before the next: a later segment's deletion may depend on this one.
            _fsync_dir(self.directory)
            for d in (self._size, self._live, self._live_bytes, self._deps):
                del d[seg]
            self._compact_from.pop(seg, None)
            self._stable_since.pop(seg, None)
            self.stats["segments_deleted"] += 1
            for other, deps in self._deps.items():
                if seg in deps:
                    deps.discard(seg)
                    if not self._live[other] and other not in todo:
                        todo.append(other)
            todo.sort(reverse=True)

    def _maybe_compact(self) -> None:
        """One compaction step per commit: of the segment being compacted, else of the oldest closed segment
        that is mostly dead (or simply the oldest when closed segments hold more than twice their live
        bytes plus one segment) and whose live bytes have been stable for ``compact_stable_commits``.

        Remove records point backwards, so segments tend to die in order and a single pinned old
        segment pins the ones after it; rewriting from the oldest end breaks such chains.
        """
        fds = self._fds
        closed = [s for s in sorted(fds) if s != self._active]
        if not closed:
            return
        for seg in closed:
            if self._compact_from.get(seg, self._size[seg]) < self._size[seg]:
                self._compact_segment(seg)  # started: finish it (its own steps change its live bytes)
                return
        batches = self._batches
        stable = self._stable_since
        size = sum(self._size[s] for s in closed)
        live = sum(self._live_bytes[s] for s in closed)
        over = size > 2 * live + self.segment_bytes
        chosen = 0
        for seg in closed:
            live_bytes = self._live_bytes[seg]
            seen = stable.get(seg)
            if seen is None or seen[0] != live_bytes:
                stable[seg] = seen = (live_bytes, batches)
            if chosen or any(d in fds for d in self._deps[seg]):
                continue  # it could not be deleted anyway: the older segments it points into go first
            if (over or live_bytes <= COMPACT_LIVE_RATIO * self._size[seg]) \
                    and batches - seen[1] >= self.compact_stable_commits:
                chosen = seg
        if chosen:
            self._compact_segment(chosen)

    def _compact_segment(self, seg: int) -> None:
        """Copy forward the live records of the next ``compact_step_bytes`` of ``seg`` (from where the
        previous step stopped); delete ``seg`` once all of it has been scanned and nothing lives in it.
        Steps bound the pause a commit pays for compaction."""
        fd = self._fds[seg]
        size = self._size[seg]
        pos = self._compact_from.get(seg, len(SEGMENT_MAGIC))
        segbase = seg << SEG_SHIFT
        index = self._index
        qnames = self._qnames
        unpack_rec = REC.unpack_from
        unpack_append = APPEND.unpack_from
        staged: dict[str, dict[int, _Row]] = {}
        bodies: dict[int, bytes] = {}  # offset in the segment -> a shared body already read in this step
        moved = 0
        base = pos
        data = _pread_all(fd, min(size - pos, self.compact_step_bytes), pos)
        i = 0
        while pos < size:
            if i + _BATCH_SIZE > len(data):
                if i:
                    break
                data = _pread_all(fd, _BATCH_SIZE, pos)
            _, plen, _ = BATCH.unpack_from(data, i)
            if i + _BATCH_SIZE + plen > len(data):
                if i:
                    break  # the next step starts with this batch
                data = _pread_all(fd, _BATCH_SIZE + plen, pos)  # one batch larger than a step
            p = i + _BATCH_SIZE
            end = p + plen
            while p < end:
                length, kind = unpack_rec(data, p)
                if kind == T_APPEND:
                    _, _, qid, seq, flags, exl, rkl, pl = unpack_append(data, p)
                    q = qnames[qid]
                    idx = index.get(q)
                    j = idx.find(seq) if idx is not None else -1
                    if idx is not None and j >= 0:
                        loc = idx.locs[j]
                        if loc & ~(LOC_REDELIVERED | LOC_TRANSIENT) == segbase | (base + p):
                            a = p + _APPEND_SIZE
                            deadline = 0
                            codec = DEFAULT_CODEC
                            if flags & F_EXTENDED:
                                deadline = APPEND_EXT.unpack_from(data, a)[0]
                                a += _EXT_SIZE
                                if flags & F_CODEC:
                                    codec, a = _codec_at(data, a)
                            b = a + exl
                            c = b + rkl
                            d = c + pl
                            # The current state: requeues since the append included.
                            redelivered = bool(loc & LOC_REDELIVERED)
                            requeues = idx.counts.get(seq, 1) if redelivered else 0
                            rows = staged.get(q)
                            if rows is None:
                                rows = staged[q] = {}
                            if flags & F_BODYREF:
                                body = self._shared_body(fd, data, base, bodies, *BODYREF.unpack_from(data, d))
                            else:
                                body = data[d : p + length]
                                if len(body) >= SHARE_MIN_BYTES:
                                    bodies[base + d] = body  # copies referring to it share this object again
                            rows[seq] = (
                                data[a:b].decode(), data[b:c].decode(), data[c:d], body,
                                _row_flags(bool(flags & F_PERSISTENT), redelivered, deadline, requeues, codec),
                            )
                            moved += length
                p += length
            i = end
            pos = base + i
        self._compact_from[seg] = pos
        if staged:
            self._write_and_apply(list(staged.items()), {}, {}, {}, {})
            self.stats["compacted_bytes"] += moved
        if seg in self._fds and not self._live[seg]:
            self._delete_dead({seg})

    @staticmethod
    def _shared_body(fd: int, data: bytes, base: int, bodies: dict[int, bytes], offset: int, length: int) -> bytes:
        """The body an F_BODYREF record points at (``offset`` in the segment of ``fd``): from ``data``
        (read from ``base``) when it holds it, else read; kept in ``bodies`` so copies share it again."""
        body = bodies.get(offset)
        if body is None:
            start = offset - base
            body = data[start : start + length] if 0 <= start and start + length <= len(data) else _pread_all(fd, length, offset)
            bodies[offset] = body
        return body

    # -- reading -------------------------------------------------------------------------------------
    def read(self, queue: str, after_seq: int, limit: int) -> list[StoredMessage]:
        with self._lock:
            return self._read(queue, after_seq, limit)

    def _read(self, queue: str, after_seq: int, limit: int) -> list[StoredMessage]:
        self._check_open()
        if limit <= 0:
            return []
        idx = self._index.get(queue)
        if idx is None:
            return []
        seqs, locs, lens, counts = idx.seqs, idx.locs, idx.lens, idx.counts
        delivered_upto = self._delivered.get(queue, 0)
        n = len(seqs)
        i = bisect_right(seqs, after_seq, idx.head)
        picked: list[tuple[int, int, int]] = []
        while i < n and len(picked) < limit:
            loc = locs[i]
            if loc:
                picked.append((seqs[i], loc, lens[i]))
            i += 1
        out: list[StoredMessage] = []
        fds = self._fds
        unpack = APPEND.unpack_from
        bodies: dict[int, dict[int, bytes]] = {}  # segment -> offset -> shared body read by this call
        j = 0
        count = len(picked)
        while j < count:
            loc0 = picked[j][1] & ~(LOC_REDELIVERED | LOC_TRANSIENT)
            seg = loc0 >> SEG_SHIFT
            start = loc0 & OFF_MASK
            end = start + picked[j][2]
            k = j + 1
            while k < count:
                loc = picked[k][1] & ~(LOC_REDELIVERED | LOC_TRANSIENT)
                if loc >> SEG_SHIFT != seg or loc & OFF_MASK != end or end - start > READ_GROUP_BYTES:
                    break
                end += picked[k][2]
                k += 1
            buf = _pread_all(fds[seg], end - start, start)
            p = 0
            for seq, loc, length in picked[j:k]:
                # Record decoding written out here and in _compact_segment: as a shared function (one call
                # and one tuple per row) it cost this page-in path ~9% (790k -> 730k rows/s).
                _, _, _, _, flags, exl, rkl, pl = unpack(buf, p)
                a = p + _APPEND_SIZE
                deadline = 0
                codec = DEFAULT_CODEC
                if flags & F_EXTENDED:
                    deadline = APPEND_EXT.unpack_from(buf, a)[0]
                    a += _EXT_SIZE
                    if flags & F_CODEC:
                        codec, a = _codec_at(buf, a)
                b = a + exl
                c = b + rkl
                d = c + pl
                redelivered = loc & LOC_REDELIVERED
                out.append(
                    StoredMessage(
                        queue,
                        seq,
                        buf[a:b].decode(),
                        buf[b:c].decode(),
                        buf[c:d],
                        buf[d : p + length] if not flags & F_BODYREF else self._shared_body(
                            fds[seg], buf, start, bodies.setdefault(seg, {}), *BODYREF.unpack_from(buf, d)
                        ),
                        bool(flags & F_PERSISTENT),
                        bool(redelivered) or seq <= delivered_upto,
                        deadline,
                        (counts.get(seq, 1) if counts else 1) if redelivered else 0,
                        codec,
                    )
                )
                p += length
            j = k
        return out

    def recover(self) -> list[QueueRecovery]:
        """Durably remove transient messages (one batch), then report what each queue holds."""
        self._check_open()
        for q, idx in list(self._index.items()):
            seqs, locs = idx.seqs, idx.locs
            transient = [seqs[i] for i in range(idx.head, len(locs)) if locs[i] & LOC_TRANSIENT]
            if transient:
                self.stage_remove(q, transient)
        self.commit()
        out: list[QueueRecovery] = []
        for q in sorted(self._index):
            idx = self._index[q]
            i = len(idx.locs) - 1
            while not idx.locs[i]:
                i -= 1
            out.append(QueueRecovery(q, idx.live, idx.seqs[i]))
        # The core numbers new messages from a queue's highest seq: no watermark may reach above it.
        highest = {r.queue: r.max_seq for r in out}
        for q, upto in self._delivered.items():
            if upto > highest.get(q, 0):
                self._delivered_staged[q] = highest.get(q, 0)
                self._dirty = True
        self.commit()
        return out

    def index_bytes(self) -> int:
        """Memory held by the per-queue index arrays (for tests and capacity planning)."""
        with self._lock:
            return sum(idx.nbytes() for idx in self._index.values())

    def segments(self) -> list[int]:
        with self._lock:
            return sorted(self._fds)

    # -- open / close --------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        try:
            self.commit()
        finally:
            with self._lock:  # a batch still being written in the commit thread lands first
                self._release()

    def _release(self) -> None:
        self._closed = True
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the message log is closed")

    def _load(self) -> None:
        ids = sorted(
            int(p.name[: -len(SEGMENT_SUFFIX)])
            for p in self.directory.iterdir()
            if p.name.endswith(SEGMENT_SUFFIX) and p.name[: -len(SEGMENT_SUFFIX)].isdigit()
        )
        for n, seg in enumerate(ids):
            self._replay_segment(seg, last=n == len(ids) - 1)
        if ids:
            if self._active_format != SEGMENT_MAGIC:
                self._roll()  # new record types go into a segment whose header announces them
            if self._delivered and self._size[self._active] == len(SEGMENT_MAGIC):
                # The segment has no first batch yet (a roll, then a crash): write the watermarks in force
                # before any older segment that holds them may be deleted below.
                self._write_and_apply([], {}, {}, {}, {})
            # Recovery may leave segments that died while their targets were still around.
            self._delete_dead({s for s in self._fds if not self._live[s]})
        else:
            self._roll()

    def _replay_segment(self, seg: int, last: bool) -> None:
        path = self._path(seg)
        fd = os.open(path, os.O_RDWR)
        self._fds[seg] = fd
        self._live[seg] = 0
        self._live_bytes[seg] = 0
        self._deps[seg] = set()
        self._active = seg
        self._declared = set()
        size = os.fstat(fd).st_size
        data = _pread_all(fd, size, 0)
        magic = len(SEGMENT_MAGIC)
        self._active_format = data[:magic]
        if len(data) < magic or data[:magic] not in READABLE_MAGICS:
            if data[:magic].startswith(SEGMENT_MAGIC_PREFIX):
                raise SegmentFormatError(
                    f"{path}: segment format {data[:magic].decode(errors='replace')!r}, this mailslot reads"
                    f" {', '.join(repr(m.decode()) for m in READABLE_MAGICS)} only"
                )
            if not last:
                raise SegmentCorruptError(f"{path}: bad segment header")
            # Created, then the process died before its header reached the disk.
            os.ftruncate(fd, 0)
            os.pwrite(fd, SEGMENT_MAGIC, 0)
            os.fdatasync(fd)
            self._size[seg] = magic
            self._active_format = SEGMENT_MAGIC
            return
        view = memoryview(data)
        pos = magic
        while pos < size:
            start = pos + _BATCH_SIZE
            if start > size:
                break
            bmagic, plen, crc = BATCH.unpack_from(data, pos)
            end = start + plen
            if bmagic != BATCH_MAGIC or not plen or end > size or zlib.crc32(view[start:end]) != crc:
                break
            self._replay_batch(seg, data, start, end)
            pos = end
        if pos < size and data.count(b"\0", pos) != size - pos:  # zeros: preallocated, never written
            if not last:
                raise SegmentCorruptError(f"{path}: bad batch at offset {pos}")
            # A torn (or corrupt) tail of the last segment: a commit that never returned. Cut it off
            # (so no stale bytes can ever follow a later batch), then re-reserve the space as zeros.
            os.ftruncate(fd, pos)
            self._preallocate(fd, pos)
            os.fdatasync(fd)
        self._size[seg] = pos

    def _replay_batch(self, seg: int, data: bytes, pos: int, end: int) -> None:
        index = self._index
        qnames = self._qnames
        live = self._live
        live_bytes = self._live_bytes
        segbase = seg << SEG_SHIFT
        touched: set[int] = set()  # deletions wait for the end of the load
        unpack_rec = REC.unpack_from
        unpack_append = APPEND.unpack_from
        while pos < end:
            length, kind = unpack_rec(data, pos)
            if kind == T_APPEND:
                _, _, qid, seq, flags, _, _, _ = unpack_append(data, pos)
                q = qnames[qid]
                idx = index.get(q)
                if idx is None:
                    idx = index[q] = _QueueIndex()
                loc = segbase | pos
                if flags & F_REDELIVERED:
                    loc |= LOC_REDELIVERED
                if not flags & F_PERSISTENT:
                    loc |= LOC_TRANSIENT
                old = idx.put(seq, loc, length)
                if old is not None:
                    self._forget(old[0], old[1], seg, touched)
                if flags & F_EXTENDED:
                    idx.set_requeues(seq, loc, APPEND_EXT.unpack_from(data, pos + _APPEND_SIZE)[1])
                elif idx.counts:
                    idx.counts.pop(seq, None)  # a replaced entry's count goes with it; this one's is implied
                live[seg] += 1
                live_bytes[seg] += length
            elif kind == T_REMOVE or kind == T_REDELIVER:
                _, _, qid, count = SEQS.unpack_from(data, pos)
                seqs = _seqs_from(data, pos + SEQS.size, count)
                if kind == T_REMOVE:
                    self._remove_index(qnames[qid], seqs, seg, touched)
                else:
                    self._mark_index(qnames[qid], seqs, seg)
            elif kind == T_PURGE:
                _, _, qid = QREC.unpack_from(data, pos)
                self._purge_index(qnames[qid], seg, touched)
            elif kind == T_DELIVERED:
                _, _, qid, seq = DREC.unpack_from(data, pos)
                self._set_delivered(qnames[qid], seq)
            elif kind == T_QUEUE:
                _, _, qid = QREC.unpack_from(data, pos)
                q = bytes(data[pos + QREC.size : pos + length]).decode()
                qnames[qid] = q
                self._qids[q] = qid
                self._declared.add(qid)
                if qid >= self._next_qid:
                    self._next_qid = qid + 1
            else:
                raise SegmentCorruptError(f"unknown record type {kind} in segment {seg} (newer format?)")
            pos += length


def _coalesce(parts: list[bytes]) -> list[bytes]:
    """``parts`` as few buffers: runs of small parts joined, large bodies left as they are (not copied)."""
    chunks: list[bytes] = []
    run: list[bytes] = []
    for part in parts:
        if len(part) >= LARGE_BODY_BYTES:
            if run:
                chunks.append(b"".join(run))
                run = []
            chunks.append(part)
        else:
            run.append(part)
    if run:
        chunks.append(b"".join(run))
    return chunks


def _pwrite_all(fd: int, buffers: list[bytes], offset: int) -> None:
    """Write ``buffers`` back to back at ``offset``: pwritev in groups of IOV_MAX, short writes finished."""
    pos = offset
    for i in range(0, len(buffers), _IOV_MAX):
        group = buffers[i : i + _IOV_MAX]
        total = sum(map(len, group))
        written = os.pwritev(fd, group, pos)
        if written < total:  # short write (rare on regular files): finish with plain pwrites
            rest = memoryview(b"".join(group))[written:]
            p = pos + written
            while rest:
                n = os.pwrite(fd, rest, p)
                rest = rest[n:]
                p += n
        pos += total


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        chunk = os.pread(fd, size - got, offset + got)
        if not chunk:
            raise SegmentCorruptError(f"short read at offset {offset + got}")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
