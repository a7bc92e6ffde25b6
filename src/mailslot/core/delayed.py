"""Delayed messages: the ``x-delayed-message`` exchange type of RabbitMQ's delayed-message plugin
(rabbitmq-delayed-message-exchange), made durable. User documentation: docs/delayed-messages.md.

Rules of this module:

* A delayed exchange routes as its ``x-delayed-type`` says: an inner exchange of that type keeps its
  bindings. A message whose ``x-delay`` header is a positive delay in ms (up to 2^32 - 1, the plugin's
  bound) is not routed at publish time: it becomes one row of the message log under the exchange's
  *delay key* (``StoredMessage.deadline`` = when it is due) and is routed by the bindings the exchange
  has *when it is due*, with ``x-delay`` negated, as the plugin does (so it is not delayed again).
* Memory per scheduled message is one int in a heap, ``(due_ms << SEQ_BITS) | seq`` (about 45 bytes);
  bodies stay in the log except a small, bounded window of those due within ``HOT_HORIZON_MS``.
* One timer for the whole broker: a single ``Broker.tickers`` entry releases what is due every tick.
* A release stages the enqueues of the routed copies and the removal of the delay row in the same
  store batch, so a crash (even kill -9) neither loses nor duplicates a delayed message.
"""

from __future__ import annotations

import heapq
import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..storage.api import QueueRecovery, StoredMessage
from .errors import PreconditionFailed
from .exchanges import Destination, Exchange, HeadersExchange, make_exchange, register_type
from .message import Message
from .routing import sender_keys
from .storekeys import DELAYED, StoreKey, feature_key
from .storekeys import decode as storekeys_decode
from .ttl import parse_expiration

if TYPE_CHECKING:
    from .vhost import VirtualHost

log = logging.getLogger("mailslot.delayed")

DELAYED_TYPE = "x-delayed-message"
# The plugin delays only 0 < x-delay <= 2^32 - 1 ms (Erlang's longest timer); anything else routes at once.
MAX_DELAY_MS = 2**32 - 1
SEQ_BITS = 40  # a heap key is (due_ms << SEQ_BITS) | seq: one int sorts by due time, then publish order
SEQ_MASK = (1 << SEQ_BITS) - 1
# Bodies of messages due this soon stay in memory (no read back): short delays are common and cheap to hold.
HOT_HORIZON_MS = 2_000
HOT_BYTES = 8 * 1024 * 1024
# Due messages released per tick (10 ticks a second): a backlog that fell due while the broker was down
# drains at up to 100,000 a second instead of stalling the event loop for one huge batch.
RELEASE_PER_TICK = 10_000
# Due rows are read back in seq ranges: neighbours closer than this share one read.
READ_GAP = 64
RESTORE_BATCH = 2_000  # rows read at a time when rebuilding the schedule at start-up (bodies dropped)
# A due row that cannot be read yet is still in a store batch being written; after this many ticks it is
# taken as gone (and logged) so it cannot hold the exchange's schedule up for ever.
MAX_READ_MISSES = 100
# A due message that only queues of other nodes reached, and they refused it (their owner is changing: a
# takeover takes about the lease TTL), is tried again this much later.
REMOTE_RETRY_MS = 1_000
DONE, FORWARDED, RETRY = 0, 1, 2  # what releasing one message did (Schedule._route)
AfterCommit = Callable[[Callable[[bool], None]], None]  # calls a function with the batch's outcome

_INTEGER = re.compile(r"[+-]?[0-9]+")


def delay_key(vhost: str, exchange: str, partition: str = "") -> str:
    """The message-log key of a delayed exchange's scheduled messages (core/storekeys.py, kind ``delayed``).
    ``partition``: the store's (a cluster node's process, mailslot.cluster) when several nodes schedule
    for one exchange: each writes its own log, which another node releases if it dies."""
    if partition:
        return StoreKey(DELAYED, vhost, exchange, partition).encode()
    return feature_key(DELAYED, vhost, exchange)


def delayed_routing_type(arguments: dict[str, Any]) -> str:
    """``x-delayed-type`` of a declaration, checked as the plugin checks it (406, in its words)."""
    value = arguments.get("x-delayed-type")
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, str):
        raise PreconditionFailed("Invalid argument, 'x-delayed-type' must be an existing exchange type")
    if value == DELAYED_TYPE:
        raise PreconditionFailed("Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'")
    return value


def delay_of(headers: dict[str, Any]) -> int | None:
    """The delay ``x-delay`` asks for in ms, or None to route now. As the plugin (3.10): an integer, or a
    string holding one; any other type, zero, a negative value or one over 2^32 - 1 means no delay."""
    value = headers.get("x-delay")
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, bytes)):
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if not _INTEGER.fullmatch(text):
            return None
        value = int(text)
    if isinstance(value, int) and 0 < value <= MAX_DELAY_MS:
        return value
    return None


class DelayedExchange(Exchange):
    """Routes as its ``x-delayed-type``; hands messages that ask for a delay to its schedule instead."""

    type = DELAYED_TYPE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.routing = make_exchange(delayed_routing_type(self.arguments), self.name)
        self.schedule: Schedule | None = None  # attached by the vhost once declared
        self.scheduled: Any = None  # the last message scheduled (``kept``: not for the alternate exchange)

    def route(self, routing_key: str, message: Any) -> Iterable[Destination]:
        schedule = self.schedule
        self.scheduled = None
        if schedule is not None:
            delay = delay_of(message.headers)
            if delay is not None and schedule.add(routing_key, message, delay):
                self.scheduled = message
                return ()  # unroutable now, as with the plugin: a mandatory publish gets basic.return
        return self.routing.route(routing_key, message)

    def route_keys(self, routing_keys: tuple[str, ...], message: Any) -> Iterable[Destination]:
        """Scheduled once, on its routing key; routed now on all of them (CC/BCC) otherwise."""
        found = self.route(routing_keys[0], message)
        if self.scheduled is message:
            return found
        return {**dict.fromkeys(found), **dict.fromkeys(self.routing.route_keys(routing_keys[1:], message))}

    def kept(self, message: Any) -> bool:
        # Unlike the plugin (rabbitmq-delayed-message-exchange#36, "expectations are reasonable"), a
        # scheduled message does not go to the alternate exchange at once; it is routed when due.
        return self.scheduled is message

    def bind(self, destination: Destination, routing_key: str, arguments: dict[str, Any], args_key: str) -> bool:
        if isinstance(self.routing, HeadersExchange):
            HeadersExchange.validate_binding(arguments)
        if not super().bind(destination, routing_key, arguments, args_key):
            return False
        return self.routing.bind(destination, routing_key, arguments, args_key)

    def unbind(self, destination: Destination, routing_key: str, args_key: str) -> bool:
        if not super().unbind(destination, routing_key, args_key):
            return False
        return self.routing.unbind(destination, routing_key, args_key)

    def _index_add(self, destination: Destination, routing_key: str, arguments: dict[str, Any]) -> None:
        pass  # the routing exchange keeps the index

    def _index_remove(self, destination: Destination, routing_key: str, arguments: dict[str, Any]) -> None:
        pass


register_type(DelayedExchange)


class Schedule:
    """One delayed exchange's scheduled messages: rows in the log, a heap of (due, seq) in memory."""

    def __init__(self, vhost: VirtualHost, exchange: DelayedExchange, key: str) -> None:
        self.vhost = vhost
        self.exchange = exchange
        self.key = key
        self.next_seq = 1
        self._heap: list[int] = []
        self._hot: dict[int, Message] = {}  # bodies kept in memory: seq -> message as it will be routed
        self._hot_bytes = 0
        self._misses: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def next_due_ms(self) -> int | None:
        return self._heap[0] >> SEQ_BITS if self._heap else None

    def add(self, routing_key: str, message: Message, delay: int) -> bool:
        """Store the message (the publisher's confirm waits for this row's commit) and schedule it.
        False when its properties cannot be rewritten (the peer's bytes): then it is routed at once."""
        vhost = self.vhost
        try:
            properties = message.with_int_header("x-delay", -delay)
        except ValueError:
            return False
        due = int(vhost.clock() * 1000) + delay
        seq = self.next_seq
        self.next_seq = seq + 1
        vhost.log.stage_append(
            [
                StoredMessage(
                    self.key, seq, message.exchange, routing_key, properties, message.body,
                    message.persistent, deadline=due, codec=message.codec.name,
                )
            ]
        )
        heapq.heappush(self._heap, (due << SEQ_BITS) | seq)
        size = len(message.body)
        if delay <= HOT_HORIZON_MS and self._hot_bytes + size <= HOT_BYTES:
            self._hot[seq] = Message(
                message.exchange, routing_key, properties, message.body, message.persistent, message.codec,
                message.ttl,
            )
            self._hot_bytes += size
        return True

    def release(self, now_ms: int, budget: int, after_commit: AfterCommit | None = None) -> int:
        """Route what is due (at most ``budget``) through the exchange's current bindings; stage the
        enqueues and the removal of the delay rows together. Returns how many left the schedule.
        A message that reached a queue another node owns (mailslot.cluster: forwarded) keeps its row
        until ``after_commit`` says the batch and every forward of it landed; if one failed, it is
        scheduled again (at-least-once: the copies that landed may be enqueued twice)."""
        heap = self._heap
        if not heap or heap[0] >> SEQ_BITS > now_ms:
            return 0
        may_release = getattr(self.vhost.log, "may_release", None)  # a cluster node's store: its lease
        if may_release is not None and not may_release(self.key):
            return 0  # not sure to hold it now (a pause, a slow database): the next tick asks again
        due: list[int] = []
        while heap and heap[0] >> SEQ_BITS <= now_ms and len(due) < budget:
            due.append(heapq.heappop(heap))
        if not due:
            return 0
        try:
            messages = self._fetch([key & SEQ_MASK for key in due])
        except Exception:  # a read failed (I/O): keep them scheduled for the next tick
            for key in due:
                heapq.heappush(heap, key)
            raise
        released: list[int] = []
        forwarded: list[int] = []
        retry: list[int] = []
        for i, key in enumerate(due):
            seq = key & SEQ_MASK
            message = messages.get(seq)
            if message is None and self._missed(seq):
                for later in due[i:]:  # keep the order: wait for the batch that holds it to land
                    heapq.heappush(heap, later)
                break
            routed = DONE if message is None else self._route(message)
            if routed == RETRY:
                retry.append(((now_ms + REMOTE_RETRY_MS) << SEQ_BITS) | seq)
                continue
            (forwarded if routed == FORWARDED and after_commit is not None else released).append(seq)
        for key in retry:
            heapq.heappush(heap, key)  # read back from the log when retried
        if released:
            self.vhost.log.stage_remove(self.key, released)
        if forwarded and after_commit is not None:
            after_commit(lambda ok: self._forwarded(forwarded, ok))
        return len(released) + len(forwarded)

    def _forwarded(self, seqs: list[int], ok: bool) -> None:
        """The batch that forwarded these released messages to other nodes is answered."""
        if ok:
            self.vhost.log.stage_remove(self.key, seqs)
            return
        log.warning("%d delayed message(s) of exchange '%s' could not be handed to another node; they are "
                    "released again", len(seqs), self.exchange.name)
        due = (int(self.vhost.clock() * 1000) + REMOTE_RETRY_MS) << SEQ_BITS
        for seq in seqs:
            heapq.heappush(self._heap, due | seq)

    def _route(self, message: Message) -> int:
        """Enqueue a due message through the exchange's current bindings (on its CC keys too; BCC's were
        not kept: docs/routing.md). RETRY to keep it scheduled: every queue it reached is owned by another
        node and refused it (mailslot.cluster: no live owner known, a takeover under way), so nothing of
        it landed and it can be retried without a second copy anywhere. FORWARDED: some copy went to
        another node, DONE: every copy is staged here."""
        vhost = self.vhost
        refused_remote = landed = forwarded = 0
        for queue in vhost.route(self.exchange, message.routing_key, message, sender_keys(message)):
            if vhost.enqueue(queue, message):
                landed += 1
                forwarded += queue.remote is not None
            elif queue.remote is not None:
                refused_remote += 1
        if landed == 0 and refused_remote > 0:
            return RETRY
        return FORWARDED if forwarded else DONE

    def _missed(self, seq: int) -> bool:
        """True to retry a row that is not readable yet; False once it is taken as gone."""
        misses = self._misses.get(seq, 0) + 1
        if misses < MAX_READ_MISSES:
            self._misses[seq] = misses
            return True
        self._misses.pop(seq, None)
        log.warning("delayed message %d of exchange '%s' is not in the store; dropped", seq, self.exchange.name)
        return False

    def _fetch(self, seqs: list[int]) -> dict[int, Message]:
        """The messages of ``seqs``: from the hot window, else read back in seq ranges."""
        found: dict[int, Message] = {}
        missing: list[int] = []
        hot = self._hot
        for seq in seqs:
            message = hot.pop(seq, None)
            if message is None:
                missing.append(seq)
            else:
                self._hot_bytes -= len(message.body)
                found[seq] = message
        if not missing:
            return found
        missing.sort()
        read, codecs = self.vhost.log.read, self.vhost.codecs
        i, count = 0, len(missing)
        while i < count:
            j = i + 1
            while j < count and missing[j] - missing[j - 1] <= READ_GAP:
                j += 1
            first, last = missing[i], missing[j - 1]
            wanted = set(missing[i:j])
            for row in read(self.key, first - 1, last - first + 1):
                if row.seq in wanted:
                    message = Message(
                        row.exchange, row.routing_key, row.properties, row.body, row.persistent, codecs[row.codec]
                    )
                    message.ttl = self._ttl(message)
                    found[row.seq] = message
                    self._misses.pop(row.seq, None)
            i = j
        return found

    def _ttl(self, message: Message) -> int | None:
        """The per-message TTL (``expiration``) of a row read back: it applies in the queues it reaches."""
        try:
            expiration = message.expiration
            return None if expiration is None else parse_expiration(expiration)
        except (ValueError, PreconditionFailed):  # checked at publish; never let stored bytes raise here
            return None

    def tick(self, now: float) -> None:
        pass  # released by the broker's one delay timer (release_ticker), under a shared budget

    def restore(self, recovered: QueueRecovery) -> None:
        """After a restart: rebuild the heap from the rows' deadlines, reading in batches (bodies are
        dropped as they are read). A row without a deadline is due at once."""
        read, heap = self.vhost.log.read, self._heap
        after = 0
        while True:
            rows = read(self.key, after, RESTORE_BATCH)
            if not rows:
                break
            heap.extend((row.deadline << SEQ_BITS) | row.seq for row in rows)
            after = rows[-1].seq
        heapq.heapify(heap)
        self.next_seq = max(self.next_seq, recovered.max_seq + 1)

    def clear(self) -> None:
        self._heap.clear()
        self._hot.clear()
        self._hot_bytes = 0
        self._misses.clear()


EXTENSION = "delayed"  # this module's key in VirtualHost.extensions


def messages(vhost: VirtualHost) -> DelayedMessages:
    """The vhost's delayed-message state, made on first use (the vhost holds it without naming it)."""
    found = vhost.extensions.get(EXTENSION)
    if not isinstance(found, DelayedMessages):
        found = vhost.extensions[EXTENSION] = DelayedMessages(vhost)
    return found


class DelayedMessages:
    """The schedules of one vhost's delayed exchanges, by store key. An exchange schedules into its own
    (``exchange.schedule``, under the store's ``partition``); in a cluster (mailslot.cluster) a node also
    releases the schedules of other nodes' processes whose lease it took over (``adopt``)."""

    def __init__(self, vhost: VirtualHost) -> None:
        self.vhost = vhost
        self.schedules: dict[str, Schedule] = {}
        self._generation = 0  # bumped when this process lost its own key's lease: it writes under a new key

    def attach(self, exchange: DelayedExchange) -> None:
        """A delayed exchange was declared: from now on it schedules what asks for a delay."""
        partition: str = getattr(self.vhost.log, "partition", "")  # a cluster node's process (mailslot.cluster)
        if partition and self._generation:
            partition = f"{partition}.{self._generation}"
        exchange.schedule = self._add(exchange, delay_key(self.vhost.name, exchange.name, partition))

    def adopt(self, recovered: QueueRecovery) -> bool:
        """Rows of another key of a delayed exchange (a cluster node's former process): schedule them here
        too. False when their exchange does not exist (the caller purges them)."""
        key = storekeys_decode(recovered.queue)
        exchange = self.vhost.exchanges.get(key.name)
        if not isinstance(exchange, DelayedExchange):
            return False
        schedule = self.schedules.get(recovered.queue) or self._add(exchange, recovered.queue)
        schedule.clear()  # held by another node meanwhile: what it released is gone from the log
        schedule.restore(recovered)
        return True

    def forget(self, key: str) -> None:
        """Another node releases the rows of ``key`` now (mailslot.cluster: the lease was lost): stop
        scheduling them here, without touching the rows."""
        schedule = self.schedules.pop(key, None)
        if schedule is not None:
            self.vhost.owners.pop(key, None)
            schedule.clear()
            if schedule.exchange.schedule is schedule:  # its own: go on under a key no other node holds
                self._generation += 1
                self.attach(schedule.exchange)

    def _add(self, exchange: DelayedExchange, key: str) -> Schedule:
        schedule = self.schedules[key] = Schedule(self.vhost, exchange, key)
        self.vhost.owners[key] = schedule  # its rows, at start-up (core/featureset.py)
        return schedule

    def drop(self, exchange: DelayedExchange) -> None:
        """The exchange was deleted: its scheduled messages go with it (as with the plugin)."""
        exchange.schedule = None
        for key, schedule in list(self.schedules.items()):
            if schedule.exchange is exchange:
                del self.schedules[key]
                self.vhost.owners.pop(key, None)
                schedule.clear()
                self.vhost.log.stage_purge(key)

    def release(self, now_ms: int, budget: int, after_commit: AfterCommit | None = None) -> int:
        released = 0
        for schedule in list(self.schedules.values()):
            if released >= budget:
                break
            released += schedule.release(now_ms, budget - released, after_commit)
        return released

    @property
    def count(self) -> int:
        """Messages scheduled in this vhost (the plugin's ``messages_delayed``)."""
        return sum(len(schedule) for schedule in self.schedules.values())


def release_ticker(
    vhosts: Iterable[VirtualHost], after_commit: AfterCommit | None = None
) -> Callable[[float], None]:
    """The broker's one delay timer: called every tick with the clock's time (seconds). ``vhosts`` is read
    at each tick (a live view), so vhosts created at runtime are served too. ``after_commit(fn)``: call
    ``fn(ok)`` once the batch being staged is committed (and what it forwarded, answered)."""

    def tick(now: float) -> None:
        now_ms = int(now * 1000)
        budget = RELEASE_PER_TICK
        for vhost in list(vhosts):
            delays = vhost.extensions.get(EXTENSION)
            if isinstance(delays, DelayedMessages) and delays.schedules:
                budget -= delays.release(now_ms, budget, after_commit)

    return tick
