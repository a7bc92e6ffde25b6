"""Poison messages and stuck consumers: delivery limits, delivery counts, retry delays, ack timeouts.

Rules of this module (docs/lifecycle-redelivery.md says the same for users):

* A *failed delivery* is a requeue: basic.nack/basic.reject with requeue=true, basic.recover, or an
  unacked delivery given back because its channel closed (or timed out). Each one adds 1 to
  ``Entry.requeues``, which the log keeps (``stage_mark_redelivered`` -> ``StoredMessage.requeues``).
  RabbitMQ 3.10's quorum queues count the same three cases (checked against it).
* ``x-delivery-limit: N``: the requeue that makes the count exceed N dead-letters the message with
  reason ``delivery_limit`` instead (or drops it without a dead-letter exchange): N + 1 deliveries in all.
* ``x-delivery-count``: a delivery whose count is > 0 carries it as a header, set at delivery time on a
  copy of the properties; a message never requeued is sent as it was published (costs nothing).
* ``x-retry-delays: [d1, d2, ...]`` (ms, a mailslot extension): the requeue that brings the count to n
  holds the message for ``d[min(n, len) - 1]`` ms before it is ready again, in its original place
  (seq). Held messages count in the queue's length but are not delivered; a timer releases them, one
  wake-up per tick at most, so a poison message nacked in a loop is delivered once per delay, not in a
  spin. The due time is not stored: after a restart a held message is ready at once (its count survives,
  so its next failure waits the next delay).
* Consumer acknowledgement timeout (broker-wide, default 30 min; per queue ``x-consumer-timeout`` in
  ms, 0 = none, as RabbitMQ 3.12): a session holding an unacked delivery older than its queue's timeout
  is closed and its front end told (AMQP: channel.close 406 PRECONDITION_FAILED, RabbitMQ's text); its
  unacked deliveries are requeued, which counts as a failed delivery. Checked once a second, so a
  timeout fires up to about 2 s late, never early (RabbitMQ checks once a minute by default).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .message import Entry, PropertiesCodec

if TYPE_CHECKING:
    from .queue import Queue
    from .session import Session

log = logging.getLogger("mailslot.core")

DELIVERY_COUNT_HEADER = "x-delivery-count"
DEFAULT_CONSUMER_TIMEOUT_MS = 30 * 60 * 1000  # RabbitMQ's consumer_timeout default (1800000 ms)
ACK_CHECK_SECONDS = 1.0  # how often unacked deliveries are looked at for the consumer timeout


def retry_delay_ms(delays: tuple[int, ...], requeues: int) -> int:
    """How long the ``requeues``-th requeue (1, 2, ...) holds a message: the last delay repeats."""
    return delays[min(requeues, len(delays)) - 1]


def delivery_properties(entry: Entry, codec: PropertiesCodec) -> bytes:
    """The properties to deliver ``entry`` with, in ``codec``'s encoding (the delivering front end's): the
    message's own bytes unless it was requeued (then with the x-delivery-count header) or published in
    another encoding. Only the header changes (a decode/encode round trip would retype the others);
    properties that do not parse are delivered as published, since a peer's bytes must not fail a delivery."""
    message = entry.message
    raw = message.properties_for(codec)
    if not entry.requeues:
        return raw
    try:
        return codec.with_int_header(raw, DELIVERY_COUNT_HEADER, entry.requeues)
    except ValueError:
        return raw


class RetryTimer:
    """Releases held messages (``x-retry-delays``) when they are due. Only queues holding something are
    looked at, each in O(1) per tick when nothing is due (the queue's held heap is ordered by due time)."""

    def __init__(self, mark_dirty: Callable[[Queue], None]) -> None:
        self._mark_dirty = mark_dirty
        self._watched: dict[Queue, None] = {}  # insertion-ordered set

    def watch(self, queue: Queue) -> None:
        self._watched[queue] = None

    @property
    def watching(self) -> int:
        """Queues the timer looks at on each tick."""
        return len(self._watched)

    def tick(self, now: float) -> None:
        if not self._watched:
            return
        now_ms = int(now * 1000)
        for queue in list(self._watched):
            if queue.deleted or not queue.holding:
                del self._watched[queue]
            elif queue.release_held(now_ms):
                self._mark_dirty(queue)


class _Watched:
    """One session's consumer-timeout bookkeeping. ``marks`` are (next delivery tag, time) taken at each
    check: every tag below a mark's tag was delivered at or before its time."""

    __slots__ = ("floor", "marks")

    def __init__(self, floor: int) -> None:
        self.floor = floor  # the shortest timeout (ms) of any queue this session took from
        self.marks: deque[tuple[int, float]] = deque()


class AckTimeouts:
    """Closes sessions that hold an unacked delivery past its queue's consumer timeout.

    Nothing is recorded per delivery: once a second each watched session with unacked deliveries gets a
    mark (its next delivery tag, now), and a delivery's age is measured from the first mark after it (an
    upper bound of when it went out, so a timeout never fires early). Unacked deliveries are in tag order,
    so the walk stops at the first one younger than the session's shortest timeout.
    """

    def __init__(self, default_ms: int | None) -> None:
        self.default_ms = default_ms or None  # 0 / None: no broker-wide timeout
        self._sessions: dict[Session, _Watched] = {}
        self._next_check = 0.0

    def timeout_ms(self, queue: Queue) -> int | None:
        per_queue = queue.policy.consumer_timeout
        timeout = self.default_ms if per_queue is None else per_queue
        return timeout or None

    def watch(self, session: Session, queue: Queue) -> None:
        """``session`` takes deliveries that need an ack from ``queue`` (basic.consume / basic.get)."""
        timeout = self.timeout_ms(queue)
        if timeout is None:
            return
        watched = self._sessions.get(session)
        if watched is None:
            self._sessions[session] = _Watched(timeout)
        elif timeout < watched.floor:
            watched.floor = timeout

    def forget(self, session: Session) -> None:
        self._sessions.pop(session, None)

    def tick(self, now: float) -> None:
        if now < self._next_check or not self._sessions:
            return
        self._next_check = now + ACK_CHECK_SECONDS
        for session, watched in list(self._sessions.items()):
            timeout = self._expired(session, watched, now)
            if timeout is not None:
                self._time_out(session, timeout)

    def _expired(self, session: Session, watched: _Watched, now: float) -> int | None:
        """The timeout (ms) an unacked delivery of ``session`` has outlived, if any."""
        unacked = session.unacked
        marks = watched.marks
        if not unacked:
            marks.clear()
            return None
        next_tag = session.next_delivery_tag
        if not marks or marks[-1][0] != next_tag:
            marks.append((next_tag, now))
        oldest = next(iter(unacked))
        while marks[0][0] <= oldest:  # marks only older deliveries, all settled
            marks.popleft()
        floor_s = watched.floor / 1000
        i = 0
        for tag, (queue, _entry, _consumer) in unacked.items():
            while marks[i][0] <= tag:
                i += 1
            age = now - marks[i][1]
            if age < floor_s:
                return None  # later deliveries are no older
            timeout = self.timeout_ms(queue)
            if timeout is not None and age >= timeout / 1000:
                return timeout
        return None

    def _time_out(self, session: Session, timeout_ms: int) -> None:
        log.warning(
            "a consumer timed out waiting for delivery acknowledgement (timeout %d ms): closing its channel",
            timeout_ms,
        )
        session.close()  # requeues its unacked deliveries (each one more failed delivery)
        session.sink.acknowledgement_timed_out(timeout_ms)


class Redelivery:
    """The broker's redelivery timers, run on ``Broker.tickers``."""

    def __init__(self, mark_dirty: Callable[[Queue], None], consumer_timeout_ms: int | None) -> None:
        self.retries = RetryTimer(mark_dirty)
        self.ack_timeouts = AckTimeouts(consumer_timeout_ms)

    def tick(self, now: float) -> None:
        self.retries.tick(now)
        self.ack_timeouts.tick(now)
