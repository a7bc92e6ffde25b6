"""The broker core: virtual hosts, the batch cycle, recovery.

The batch cycle is the heart of the hot path (design.md): front ends apply a whole read buffer
of work through sessions, which only *stage* effects (enqueue, ack, store writes) and mark queues
dirty. Once per event-loop turn the host then calls ``dispatch`` (every dirty queue to its
consumers, overflow spilled), ``cut`` (detach the staged writes and the waiters on them: one
batch), writes the batch (one fsync for all of it: group commit) and calls ``finish``, which
releases publisher confirms and tx.commit-ok. A store with ``prepare_commit`` lets the host write a
batch in a worker thread while the loop works on the next one; at most one batch is in flight, so
batches finish in order. ``flush`` does the whole cycle synchronously.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from ..storage.api import MessageLog, MetadataStore
from . import featureset, ttl_live
from .access.authorizer import UNRESTRICTED, Authorizer
from .argument_source import ArgumentSource, DeclaredOnly
from .delayed import release_ticker
from .message import Codecs, Message, PropertiesCodec
from .queue import Queue
from .redelivery import DEFAULT_CONSUMER_TIMEOUT_MS, Redelivery
from .session import DeliverySink, Gate, Session
from .ttl import ExpiryTicker, after_dispatch
from .vhost import QueueNames, VirtualHost

log = logging.getLogger("mailslot.core")

# How often the host calls Broker.tick: the resolution of every broker timer (TTL, x-expires, consumer
# timeouts, delays). RabbitMQ's own timers are no finer for these (its consumer timeout is checked far less often).
TICK_SECONDS = 0.1

class CommitWaiter(Protocol):
    """Waits for the batch that holds the writes staged before it was registered."""

    def batch_cut(self) -> None:
        """The batch was detached: snapshot what it covers (later work belongs to the next one)."""

    def committed(self, ok: bool) -> None:
        """The batch is durable (``ok``) or its write failed."""


class OnCommit:
    """A waiter that needs no snapshot: call ``fn(ok)``."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[bool], None]) -> None:
        self.fn = fn

    def batch_cut(self) -> None:
        pass

    def committed(self, ok: bool) -> None:
        self.fn(ok)


class Refusals(Protocol):
    """A publisher's confirms, told that one of its publishes was refused (nacked) after routing."""

    published: int  # the sequence number of the publish being routed

    def refuse(self, seq: int) -> None: ...


# A store's hold on a batch's waiters (mailslot.cluster: publishes forwarded to the node that owns their
# queue): called once the batch is written, it calls back with whether the other nodes committed too.
Hold = Callable[[Callable[[bool], None]], None]


class Batch:
    """Detached staged writes (``write`` is None when there were none) and their waiters."""

    __slots__ = ("hold", "ok", "stored", "threadable", "waiters", "write", "written")

    def __init__(
        self, write: Callable[[], None] | None, waiters: list[CommitWaiter], threadable: bool, hold: Hold | None = None,
        written: list[Callable[[bool], None]] | None = None,
    ) -> None:
        self.write, self.waiters, self.threadable, self.hold = write, waiters, threadable, hold
        self.written = written  # after_write callbacks: called when this batch is written, whatever is held
        self.ok: bool | None = None  # known once written (and released by its hold, if any)
        self.stored = True  # False: this node's own commit failed (not an owner node's, through the hold)


class Broker:
    def __init__(
        self,
        message_log: MessageLog,
        metadata: MetadataStore,
        codecs: Iterable[PropertiesCodec],
        vhosts: Iterable[str] = ("/",),
        clock: Callable[[], float] = time.time,
        consumer_timeout_ms: int | None = DEFAULT_CONSUMER_TIMEOUT_MS,
        arguments: ArgumentSource | None = None,
    ) -> None:
        """``codecs``: the properties codec of every front end (core/message.py), by which messages read back
        from the store are rebuilt. ``consumer_timeout_ms``: the broker-wide consumer acknowledgement
        timeout (None or 0: none). ``arguments``: where effective queue/exchange arguments come from
        (policies; default: the declared ones), also settable later (``Broker.arguments``)."""
        self.log = message_log
        self.metadata = metadata
        self.codecs = Codecs(codecs)
        self.clock = clock
        self.vhosts: dict[str, VirtualHost] = {}
        self._arguments: ArgumentSource = arguments if arguments is not None else DeclaredOnly()
        self.queue_names: QueueNames | None = None  # several nodes (mailslot.cluster.transient); set before vhosts
        for name in vhosts:
            self.add_vhost(name)
        # Timer work, each called with the clock's time on every tick (TTL, expiry, timeouts, delays).
        self.tickers: list[Callable[[float], None]] = [ExpiryTicker(self)]
        self.redelivery = Redelivery(self.mark_dirty, consumer_timeout_ms)  # retry delays, ack timeouts
        self.tickers.append(self.redelivery.tick)
        # delayed messages: one timer for all
        self.tickers.append(release_ticker(self.vhosts.values(), lambda fn: self.after_commit(OnCommit(fn))))
        self.tickers.append(lambda now: featureset.tick_owners(self.vhosts.values(), now))
        self._dirty: dict[Queue, None] = {}  # insertion-ordered set
        self._waiters: list[CommitWaiter] = []
        self._written: list[Callable[[bool], None]] = []
        self._held: deque[Batch] = deque()  # written batches whose waiters wait for an earlier one's hold
        self._unforwarded = 0  # batches an owner node did not commit since the last warning (logged once a second)
        self._unforwarded_warned = 0.0
        self._reply_sessions: dict[str, Session] = {}
        self.congested: set[Queue] = set()  # see Queue.congested: their publishers are slowed
        self.request_flush: Callable[[], None] = lambda: None  # set by the transport: schedule flush() soon
        # The publisher confirms of the publish being routed, if any (set by the AMQP channel around one
        # publish): a queue on another node refuses a forwarded publish after the fact (mailslot.cluster).
        self.publishing: Refusals | None = None

    # ---- start-up -------------------------------------------------------------------------------

    def recover(self) -> None:
        """Rebuild durable definitions, then point each durable queue at what the log holds."""
        definitions = self.metadata.load()
        for ex in definitions.exchanges:
            vhost = self.vhosts.get(ex.vhost)
            if vhost is not None and ex.name not in vhost.exchanges:
                vhost.declare_exchange(
                    ex.name,
                    ex.type,
                    passive=False,
                    durable=ex.durable,  # a cluster stores non-durable exchanges too (cluster/sync.py)
                    auto_delete=ex.auto_delete,
                    internal=ex.internal,
                    arguments=ex.arguments,
                )
        for q in definitions.queues:
            vhost = self.vhosts.get(q.vhost)
            if vhost is not None:
                vhost.declare_queue(
                    q.name,
                    passive=False,
                    durable=True,
                    exclusive=False,
                    auto_delete=q.auto_delete,
                    arguments=q.arguments,
                    owner=None,
                )
        for binding in definitions.bindings:
            vhost = self.vhosts.get(binding.vhost)
            if vhost is None:
                continue
            exchange = vhost.exchanges.get(binding.source)
            arguments = definitions.binding_arguments.get(binding, {})
            if exchange is not None:
                exchange.bind(
                    (binding.destination_kind, binding.destination), binding.routing_key, arguments, binding.arguments_key
                )
        for recovered in self.log.recover():
            # Dispatched by the key's kind (core/storekeys.py) to the queue, lane or feature owning it.
            if not featureset.recover(self.vhosts, recovered):
                self.log.stage_purge(recovered.queue)  # rows of a queue or feature that no longer exists
        ttl_live.recover(self.metadata, self.vhosts.values())  # a live message-ttl change's caps
        if self.log.has_staged():
            self.log.commit()

    # ---- effective arguments (policies) -----------------------------------------------------------

    @property
    def arguments(self) -> ArgumentSource:
        """Where queues' and exchanges' effective arguments come from (core/argument_source.py): used
        whenever one is built or recovered. Setting it does not touch live queues: call
        ``arguments_changed`` for the vhosts whose arguments it changes."""
        return self._arguments

    @arguments.setter
    def arguments(self, source: ArgumentSource) -> None:
        self._arguments = source
        for vhost in self.vhosts.values():
            vhost.arguments = source

    def arguments_changed(self, vhost: str) -> None:
        """The argument source changed what it says for ``vhost`` (a policy was set or cleared): every
        queue and exchange there is resolved again and those whose effective arguments changed are
        reconfigured at once (Queue.reconfigure). Equivalence checks on redeclare keep comparing the
        declared arguments, as RabbitMQ does."""
        host = self.vhosts.get(vhost)
        if host is None:
            return
        for queue in host.arguments_changed():
            self.mark_dirty(queue)
        self.request_flush()  # dead-lettered excess and purged windows are staged: commit them soon

    # ---- sessions -------------------------------------------------------------------------------

    def open_session(
        self, vhost: VirtualHost, owner: object, sink: DeliverySink, gate: Gate, authz: Authorizer = UNRESTRICTED
    ) -> Session:
        """``authz``: the rights of the connection's user in ``vhost`` (core/access); every operation of
        the session is checked against it."""
        return Session(self, vhost, owner, sink, gate, authz)

    # ---- vhosts ---------------------------------------------------------------------------------

    def add_vhost(self, name: str) -> VirtualHost:
        """Create the vhost (the access model keeps its record); an existing one is returned as it is."""
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self.vhosts[name] = VirtualHost(
                name, self.log, self.metadata, self.codecs, self.mark_dirty, self.clock
            )
            vhost.arguments = self._arguments
            vhost.queue_names = self.queue_names
        return vhost

    def delete_vhost(self, name: str) -> None:
        """Delete the vhost with everything in it: its queues (consumers cancelled, messages removed from
        the store), its exchanges (with their delayed messages and deduplication windows) and bindings.
        Its connections must be closed first (the access model does it)."""
        vhost = self.vhosts.pop(name, None)
        if vhost is None:
            return
        for queue in list(vhost.queues.values()):
            self.delete_queue(vhost, queue)
        for exchange in list(vhost.exchanges.values()):
            if exchange.name and not exchange.name.startswith("amq.") and exchange.name in vhost.exchanges:
                vhost.delete_exchange(exchange.name, if_unused=False)
        self.request_flush()  # the purges are staged: commit them with the next batch

    def set_queue_limit(self, name: str, limit: int | None) -> None:
        vhost = self.vhosts.get(name)
        if vhost is not None:
            vhost.max_queues = limit

    def connection_closed(self, owner: object) -> None:
        """Exclusive queues die with their connection."""
        for vhost in self.vhosts.values():
            for queue in [q for q in vhost.queues.values() if q.exclusive_owner is owner]:
                self.delete_queue(vhost, queue)
        self.request_flush()

    def delete_queue(self, vhost: VirtualHost, queue: Queue) -> int:
        """Delete and tell its consumers (consumer_cancel_notify)."""
        for consumer in list(queue.consumers):
            consumer.session.cancelled_by_broker(consumer)
        queue.consumers.clear()
        self._dirty.pop(queue, None)
        self.congested.discard(queue)
        return vhost.remove_queue(queue)

    # ---- direct reply-to ------------------------------------------------------------------------

    def register_reply_session(self, session: Session) -> str:
        token = base64.urlsafe_b64encode(os.urandom(18)).decode()
        self._reply_sessions[token] = session
        return token

    def unregister_reply_session(self, token: str) -> None:
        self._reply_sessions.pop(token, None)

    def deliver_reply(self, token: str, message: Message) -> bool:
        session = self._reply_sessions.get(token)
        if session is None or session.closed:
            return False  # the requester is gone: the reply is dropped, as RabbitMQ does
        session.deliver_reply(message)
        return True

    # ---- the batch cycle ------------------------------------------------------------------------

    def mark_dirty(self, queue: Queue) -> None:
        self._dirty[queue] = None

    def tick(self) -> None:
        """Run timer work; the host calls it every ``TICK_SECONDS`` and then flushes."""
        now = self.clock()
        for ticker in self.tickers:
            ticker(now)

    def after_commit(self, waiter: CommitWaiter) -> None:
        self._waiters.append(waiter)

    def after_write(self, fn: Callable[[bool], None]) -> None:
        """``fn(ok)`` once the batch being staged is written, without waiting for earlier batches held for
        other nodes' answers (as after_commit waiters do): the cluster link's answer to a forwarded frame.
        Waiting there would be circular when two nodes forward to each other, each holding a batch
        until the other answers."""
        self._written.append(fn)

    def dispatch(self) -> None:
        """Give ready messages of every dirty queue to consumers; spill what exceeds memory windows."""
        dirty = self._dirty
        touched: list[Queue] = []
        while dirty:
            batch = list(dirty)
            dirty.clear()
            for queue in batch:
                if not queue.deleted:
                    queue.dispatch()
                    if queue.expiring:
                        after_dispatch(queue)  # TTL 0: what no consumer took now expires
                    touched.append(queue)
        congested = self.congested
        for queue in touched:
            queue.stats_dirty = True  # for the stats sampler: per batch, not per message (core/stats.py)
            queue.update_congestion()
            if queue.congested:
                congested.add(queue)
            else:
                congested.discard(queue)
            queue.spill()  # what did not fit the memory window goes into the next batch

    def cut(self) -> Batch:
        """Detach everything staged so far, with the waiters on it."""
        log = self.log
        write: Callable[[], None] | None = None
        threadable = False
        if log.has_staged():
            # A store with prepare_commit may detach the batch for the commit thread (SQLite always, the
            # segment log when it carries large bodies); None from it means: commit here, on the loop.
            prepare = getattr(log, "prepare_commit", None)
            write = prepare() if prepare is not None else None
            if write is not None:
                threadable = True
            else:
                write = log.commit
        hold_confirms = getattr(log, "hold_confirms", None)  # mailslot.cluster's log forwards publishes
        hold = hold_confirms() if hold_confirms is not None else None
        waiters = self._waiters
        self._waiters = []
        for waiter in waiters:
            waiter.batch_cut()
        written, self._written = self._written or None, []
        return Batch(write, waiters, threadable, hold, written)

    def finish(self, batch: Batch, ok: bool) -> None:
        """The batch is written: release its waiters, in the order batches were cut (a confirm covers
        every earlier publish), once its hold (if any) released it too. after_write callbacks run now."""
        batch.stored = ok
        if batch.written is not None:
            for fn in batch.written:
                fn(ok)
        if batch.hold is None:
            if not self._held:
                self._release(batch, ok)
                return
            batch.ok = ok
        else:
            batch.hold(lambda remote_ok: self._held_done(batch, ok and remote_ok))
        self._held.append(batch)
        self._release_held()

    def _held_done(self, batch: Batch, ok: bool) -> None:
        batch.ok = ok
        self._release_held()
        self.request_flush()  # released outside a flush: the front ends' confirms go out with the next one

    def _release_held(self) -> None:
        held = self._held
        while held and held[0].ok is not None:
            batch = held.popleft()
            self._release(batch, bool(batch.ok))

    def _release(self, batch: Batch, ok: bool) -> None:
        if not ok and not batch.stored:
            log.error("store commit failed; the publishes waiting on it are nacked")
        elif not ok:  # a cluster node did not commit what was forwarded to it (it died, its lease moved)
            self._unforwarded += 1
            now = time.monotonic()
            if now - self._unforwarded_warned >= 1.0:  # one line a second: a dead owner fails every batch
                log.warning("%d batch(es) of publishes forwarded to an owner node were not committed there; "
                            "their publishes are nacked", self._unforwarded)
                self._unforwarded, self._unforwarded_warned = 0, now
        for waiter in batch.waiters:
            waiter.committed(ok)

    def flush(self) -> None:
        """The whole batch cycle, synchronously."""
        self.dispatch()
        batch = self.cut()
        ok = True
        if batch.write is not None:
            try:
                batch.write()
            except Exception:  # a full disk or I/O error: nack what waited on this commit
                log.exception("store commit failed")
                ok = False
        self.finish(batch, ok)

    def close(self) -> None:
        self.flush()
        self.log.close()
        self.metadata.close()
