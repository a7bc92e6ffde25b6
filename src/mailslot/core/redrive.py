"""Redrive: move dead-lettered messages back to where they came from, or to any exchange.

Rules of this module:

* A redrive selects messages once, when it starts (by id, by filter, or all; core/browse.py), and then
  moves them in steps. One step takes its messages out of the dead-letter queue (``Queue.remove``),
  publishes a copy of each to its target and settles the originals: the publish (stored rows appended to
  the targets) and the removal (the originals' rows dropped) are staged together, so they land in the same
  store commit. A crash before that commit loses both, and the message is still in the dead-letter queue;
  after it, the message is in its target. Nothing is lost and nothing doubled.
* A moved message keeps its properties, and so its ``x-death`` history and ``x-first-death-*`` headers.
* A message whose target routes it nowhere (its queue was deleted, the exchange does not exist, it has no
  ``x-death`` to say where it came from) or refuses it (a full queue with ``x-overflow`` reject-publish)
  stays in the dead-letter queue at its place, counted as failed: never dropped. (A refusal by one of
  several queues a target exchange routes to leaves the copies the others took.)
* Selected messages that are gone by the time their step comes (consumed, expired, purged) are skipped.
* The host (http/extras.py) runs the steps: it waits for the commit of each one, paces them to the rate
  limit, and cancels between steps. This module knows no event loop.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .browse import SCAN_LIMIT, Filter, original_destination, select
from .message import Entry, Message
from .queue import Queue
from .session import REJECTED, UNROUTED
from .vhost import VirtualHost

# Messages one step moves when there is no rate limit: one store commit per step, so a step is a batch
# the size of a busy publisher's (the hot path's group commit), not one message at a time.
STEP_MESSAGES = 500
# Finished redrives kept for their progress documents (the API's GET after the end).
KEEP_FINISHED = 100

Publish = Callable[[str, str, Message], int]  # (exchange, routing key, message) -> session.publish outcome


@dataclass(frozen=True, slots=True)
class Target:
    exchange: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class RedriveRequest:
    """``ids``: these messages (None: every one matching ``where``); ``target``: None sends each message
    back to the queue of its newest death; ``rate``: messages a second (None: as fast as steps go);
    ``limit``: move at most this many."""

    ids: tuple[int, ...] | None = None
    where: Filter | None = None
    target: Target | None = None
    rate: float | None = None
    limit: int | None = None
    scan_limit: int = SCAN_LIMIT


def destination(message: Message, target: Target | None) -> Target | None:
    if target is not None:
        return target
    origin = original_destination(message)
    return None if origin is None else Target(*origin)


@dataclass(slots=True)
class PlannedMove:
    id: int
    target: Target | None  # None: no x-death to say where it came from
    queues: list[str]  # where the target routes it now


def plan(vhost: VirtualHost, queue: Queue, request: RedriveRequest, now: float) -> list[PlannedMove]:
    """A dry run: what a redrive with this request would move now, and where each message would land."""
    moves = []
    for entry in select(queue, now, ids=request.ids, where=request.where, limit=request.limit,
                        scan_limit=request.scan_limit):
        target = destination(entry.message, request.target)
        queues: list[str] = []
        if target is not None:
            exchange = vhost.exchanges.get(target.exchange)
            if exchange is not None:
                copy = _copy(entry.message, target)
                queues = [q.name for q in vhost.route(exchange, target.routing_key, copy)]
        moves.append(PlannedMove(entry.seq, target, queues))
    return moves


def _copy(message: Message, target: Target) -> Message:
    """The message as published to ``target``: same properties (x-death included), body and persistence."""
    return Message(target.exchange, target.routing_key, message.properties, message.body, message.persistent,
                   message.codec)


@dataclass
class Redrive:
    """One redrive in progress (or finished): its selection, its counters and its state."""

    id: str
    vhost: VirtualHost
    queue: Queue
    request: RedriveRequest
    user: str = ""
    pending: list[int] = field(default_factory=list)  # selected ids not yet moved, in queue order
    matched: int = 0
    moved: int = 0
    failed: int = 0
    skipped: int = 0  # selected, but gone by their step
    staged_moved: int = 0  # moved (failed) in the step whose commit is awaited: not reported yet
    staged_failed: int = 0
    state: str = "running"  # running | done | cancelled | failed
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def start(self, now: float) -> None:
        entries = select(self.queue, now, ids=self.request.ids, where=self.request.where,
                         limit=self.request.limit, scan_limit=self.request.scan_limit)
        self.pending = [entry.seq for entry in entries]
        self.pending.reverse()  # popped from the end: the head of the queue goes first
        self.matched = len(entries)
        if not self.pending:
            self.finish("done")

    @property
    def remaining(self) -> int:
        return len(self.pending)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def step(self, publish: Publish, budget: int = STEP_MESSAGES) -> int:
        """Move up to ``budget`` selected messages. The caller commits, then calls :meth:`landed` (only then
        are they counted as moved). Returns how many were taken out of the dead-letter queue in this step."""
        if not self.running:
            return 0
        if self.queue.deleted:
            self.finish("failed", f"queue '{self.queue.name}' was deleted")
            return 0
        chosen: set[int] = set()
        while self.pending and len(chosen) < budget:
            chosen.add(self.pending.pop())
        taken = self.queue.remove(chosen)
        self.skipped += len(chosen) - len(taken)
        settled: list[Entry] = []
        kept: list[Entry] = []
        for entry in taken:
            target = destination(entry.message, self.request.target)
            outcome = UNROUTED if target is None else self._publish(publish, entry.message, target)
            if outcome == UNROUTED or outcome == REJECTED:
                self.staged_failed += 1
                kept.append(entry)
            else:
                self.staged_moved += 1
                settled.append(entry)
        self.queue.settle(settled)
        self.queue.reinsert(kept)
        self.vhost.mark_dirty(self.queue)
        return len(taken)

    def landed(self, ok: bool = True) -> None:
        """The commit of the last step is done (``ok``) or failed: count its moves, or stop."""
        if not ok:
            self.staged_moved = self.staged_failed = 0
            self.finish("failed", "the store could not commit; what was not committed is still in the "
                                  "dead-letter queue")
            return
        self.moved += self.staged_moved
        self.failed += self.staged_failed
        self.staged_moved = self.staged_failed = 0
        if self.running and not self.pending:
            self.finish("done")

    def _publish(self, publish: Publish, message: Message, target: Target) -> int:
        """Publish the copy only where it is routed somewhere (an unroutable publish is a no-op anyway)."""
        vhost = self.vhost
        exchange = vhost.exchanges.get(target.exchange)
        if exchange is None:
            return UNROUTED
        copy = _copy(message, target)
        if not vhost.route(exchange, target.routing_key, copy):
            return UNROUTED
        return publish(target.exchange, target.routing_key, copy)

    def cancel(self) -> None:
        if self.running:
            self.finish("cancelled")

    def finish(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error
        self.finished_at = time.time()

    def document(self) -> dict[str, Any]:
        """The progress document of the API (docs/dead-letter-queues.md)."""
        target = self.request.target
        return {
            "id": self.id,
            "vhost": self.vhost.name,
            "queue": self.queue.name,
            "user": self.user,
            "state": self.state,
            "matched": self.matched,
            "moved": self.moved,
            "failed": self.failed,
            "skipped": self.skipped,
            "remaining": self.remaining,
            "rate": self.request.rate,
            "target": None if target is None else {"exchange": target.exchange, "routing_key": target.routing_key},
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
        }


class Redrives:
    """The redrives of one broker, by id: the running ones and the last ``KEEP_FINISHED`` finished ones."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self._all: OrderedDict[str, Redrive] = OrderedDict()

    def add(self, vhost: VirtualHost, queue: Queue, request: RedriveRequest, user: str, now: float) -> Redrive:
        redrive = Redrive(f"{int(now)}-{next(self._ids)}", vhost, queue, request, user)
        redrive.start(now)
        self._all[redrive.id] = redrive
        finished = [key for key, item in self._all.items() if not item.running]
        for key in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._all[key]
        return redrive

    def get(self, vhost: str, redrive_id: str) -> Redrive | None:
        redrive = self._all.get(redrive_id)
        return redrive if redrive is not None and redrive.vhost.name == vhost else None

    def all(self, vhosts: Iterable[str] | None = None) -> list[Redrive]:
        allowed = None if vhosts is None else set(vhosts)
        return [r for r in self._all.values() if allowed is None or r.vhost.name in allowed]

    def cancel_all(self) -> None:
        for redrive in self._all.values():
            redrive.cancel()
