"""Publisher-confirm bookkeeping for one channel, O(1) per confirm frame (not per message).

RabbitMQ confirms with basic.ack/basic.nack carrying the delivery tag (the publish sequence number) and
``multiple`` = "every tag up to this one" (https://www.rabbitmq.com/confirms.html#publisher-confirms).
Tags may be confirmed out of order when messages go to different queues, so the tracker keeps the
settled prefix ``low`` (every tag <= low is settled) plus the set of settled tags above it, and folds
the set into the prefix as gaps close. A batch (one publish or a whole publish_many) waits for ``low`` to
pass its last tag; nacked tags are kept as ranges until no batch can contain them.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .errors import ClientError, PublishNacked


class ConfirmTracker:
    __slots__ = ("error", "holds", "low", "nacks", "progress", "seq", "singles", "waiters")

    def __init__(self) -> None:
        self.seq = 0  # tag of the last publish sent
        self.low = 0  # every tag <= low is settled (acked or nacked)
        self.singles: set[int] = set()  # settled tags > low
        self.nacks: list[tuple[int, int]] = []  # nacked tag ranges, inclusive
        self.waiters: deque[tuple[int, int, asyncio.Future[None]]] = deque()  # (first, last, future)
        self.holds: list[int] = []  # first tags of batches still being sent (publish_many)
        self.progress: asyncio.Future[None] | None = None
        self.error: BaseException | None = None

    @property
    def in_flight(self) -> int:
        return self.seq - self.low

    def add_waiter(self, first: int, last: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.error is not None:
            fut.set_exception(self.error)
        elif last <= self.low:
            self._settle(first, last, fut)
        else:
            self.waiters.append((first, last, fut))
        return fut

    def wait_progress(self) -> asyncio.Future[None]:
        fut = self.progress
        if fut is None or fut.done():
            fut = self.progress = asyncio.get_running_loop().create_future()
            if self.error is not None:
                fut.set_result(None)
        return fut

    def on_confirm(self, tag: int, multiple: bool, ack: bool) -> None:
        low = self.low
        if multiple:
            if tag > low:
                if not ack:
                    if self.singles:  # tags acked one by one inside the range are not nacked
                        self.nacks.extend((t, t) for t in range(low + 1, tag + 1) if t not in self.singles)
                    else:
                        self.nacks.append((low + 1, tag))
                low = tag
                if self.singles:
                    self.singles = {t for t in self.singles if t > low}
                    while low + 1 in self.singles:
                        low += 1
                        self.singles.discard(low)
        elif tag > low:
            if not ack:
                self.nacks.append((tag, tag))
            if tag == low + 1:
                low = tag
                singles = self.singles
                while low + 1 in singles:
                    low += 1
                    singles.discard(low)
            else:
                self.singles.add(tag)
        if low == self.low:
            return
        self.low = low
        waiters = self.waiters
        while waiters and waiters[0][1] <= low:
            first, last, fut = waiters.popleft()
            self._settle(first, last, fut)
        if self.nacks:
            floor = min(waiters[0][0], low + 1) if waiters else low + 1
            if self.holds:
                floor = min(floor, *self.holds)
            self.nacks = [r for r in self.nacks if r[1] >= floor]
        progress = self.progress
        if progress is not None and not progress.done():
            progress.set_result(None)

    def nacked_in(self, first: int, last: int) -> list[int]:
        """Tags in [first, last] that were nacked."""
        out: list[int] = []
        for lo, hi in self.nacks:
            lo, hi = max(lo, first), min(hi, last)
            out.extend(range(lo, hi + 1))
        return sorted(out)

    def _settle(self, first: int, last: int, fut: asyncio.Future[None]) -> None:
        if fut.done():
            return
        nacked = self.nacked_in(first, last) if self.nacks else []
        if nacked:
            fut.set_exception(PublishNacked([t - first for t in nacked]))
        else:
            fut.set_result(None)

    def fail(self, error: ClientError) -> None:
        """The channel or connection is gone: every waiting batch fails with ``error``."""
        self.error = error
        while self.waiters:
            _, _, fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(error)
        if self.progress is not None and not self.progress.done():
            self.progress.set_result(None)

    def reset(self) -> None:
        """A fresh confirm.select (new channel after a reconnect): sequence numbers restart at 1."""
        self.seq = self.low = 0
        self.singles.clear()
        self.nacks.clear()
        self.holds.clear()
        self.error = None
