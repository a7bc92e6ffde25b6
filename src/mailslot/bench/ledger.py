"""Exact accounting for ``mailslot spike``: which message was confirmed, rejected (nacked) and delivered.

Every message is identified by (producer index, sequence number); the sequence number is also the
publisher-confirm delivery tag of its producer's channel (both start at 1 and count every publish), so a
basic.ack / basic.nack (``multiple`` or not) maps straight onto messages. One byte per message and side:

- ``outcome[p][seq]``: 0 = not confirmed yet, 1 = acked (the broker took it), 2 = nacked (rejected);
- ``seen[p][seq]``: 0 = never processed by a worker, 1 = processed (acked by a worker).

*lost* = acked by the broker but never processed by a worker; *duplicates* = processed more than once.
Both are exact, not differences of counters. Pure (no I/O), so tests drive it directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

PENDING, ACKED, NACKED = 0, 1, 2
_CODE = {True: b"\x01", False: b"\x02"}


@dataclass
class LedgerSummary:
    published: int
    confirmed: int  # acked by the broker
    rejected: int  # nacked by the broker (e.g. x-overflow: reject-publish at x-max-length)
    unconfirmed: int  # published, neither acked nor nacked when the run ended
    delivered: int  # distinct messages processed by workers
    duplicates: int  # extra deliveries of an already processed message
    lost: int  # acked, never processed (only meaningful once the queue is drained)
    delivered_rejected: int  # processed although the broker nacked it (not lost, but a broker bug)
    delivered_unconfirmed: int  # processed, but its confirm never came (the run ended first)
    lost_sample: list[str] = field(default_factory=list)  # up to 10 "producer:seq" of lost messages


class Ledger:
    def __init__(self, producers: int) -> None:
        self.outcome = [bytearray(1) for _ in range(producers)]  # index 0 unused (tags start at 1)
        self.seen = [bytearray(1) for _ in range(producers)]
        self.low = [0] * producers  # every tag <= low[p] is decided (acked or nacked)
        self.published = 0
        self.acked = 0
        self.nacked = 0
        self.delivered = 0  # distinct
        self.duplicates = 0
        self.acked_seen = 0  # acked by the broker and processed: == acked when the queue is drained
        self.foreign = 0  # deliveries whose stamp names no producer of this run

    # ------------------------------------------------------------------ producer side
    def on_publish(self, producer: int, last_seq: int) -> None:
        """Producer ``producer`` has now published every sequence number up to ``last_seq``."""
        out = self.outcome[producer]
        grow = last_seq + 1 - len(out)
        if grow > 0:
            self.published += grow
            out.extend(bytes(grow))

    def on_confirm(self, producer: int, tag: int, multiple: bool, ack: bool) -> int:
        """A basic.ack (``ack``) or basic.nack; returns how many messages it decided."""
        out = self.outcome[producer]
        seen = self.seen[producer]
        tag = min(tag, len(out) - 1)  # a tag beyond what we published is a broker bug; ignore the excess
        lo = self.low[producer] + 1
        if multiple:
            if tag < lo:
                return 0
            idx: Sequence[int] = [i for i in range(lo, tag + 1) if not out[i]] if out.count(0, lo, tag + 1) != tag + 1 - lo \
                else range(lo, tag + 1)
            n = len(idx)
            out[lo:tag + 1] = out[lo:tag + 1].replace(b"\x00", _CODE[ack])
        else:
            if tag < lo or out[tag]:
                return 0
            idx = (tag,)
            n = 1
            out[tag] = ACKED if ack else NACKED
        if ack:
            self.acked += n
            if len(seen) > lo:  # processed before its confirm arrived (allowed: the broker may deliver first)
                self.acked_seen += sum(1 for i in idx if i < len(seen) and seen[i])
        else:
            self.nacked += n
        low = self.low[producer]
        while low + 1 < len(out) and out[low + 1]:
            low += 1
        self.low[producer] = low
        return n

    # ------------------------------------------------------------------ worker side
    def on_delivered(self, producer: int, seq: int) -> bool:
        """A worker processed message (producer, seq); returns False when it is a duplicate."""
        if not 0 <= producer < len(self.seen) or seq <= 0:
            self.foreign += 1
            return True
        seen = self.seen[producer]
        if seq >= len(seen):
            seen.extend(bytes(seq + 1 - len(seen) + 1024))
        if seen[seq]:
            self.duplicates += 1
            return False
        seen[seq] = 1
        self.delivered += 1
        out = self.outcome[producer]
        if seq < len(out) and out[seq] == ACKED:
            self.acked_seen += 1
        return True

    @property
    def drained(self) -> bool:
        """Every message the broker acked has been processed."""
        return self.acked_seen >= self.acked

    # ------------------------------------------------------------------ the end
    def summary(self) -> LedgerSummary:
        lost = delivered_rejected = delivered_unconfirmed = unconfirmed = 0
        sample: list[str] = []
        for p, out in enumerate(self.outcome):
            seen = self.seen[p]
            if len(seen) < len(out):
                seen = seen + bytes(len(out) - len(seen))
            unconfirmed += out.count(0) - 1  # index 0 is a placeholder
            for i in range(1, len(out)):
                o = out[i]
                s = seen[i]
                if o == ACKED:
                    if not s:
                        lost += 1
                        if len(sample) < 10:
                            sample.append(f"{p}:{i}")
                elif s:
                    if o == NACKED:
                        delivered_rejected += 1
                    else:
                        delivered_unconfirmed += 1
        return LedgerSummary(
            published=self.published, confirmed=self.acked, rejected=self.nacked, unconfirmed=unconfirmed,
            delivered=self.delivered, duplicates=self.duplicates, lost=lost,
            delivered_rejected=delivered_rejected, delivered_unconfirmed=delivered_unconfirmed,
            lost_sample=sample,
        )
