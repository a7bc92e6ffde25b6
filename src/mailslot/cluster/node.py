"""A node of a cluster: which shared queues this broker serves, kept current by polling PostgreSQL.

Rules of this module:

* The core runs on the event loop; the database is polled from one thread of this module's own
  (``mailslot-cluster``), every ``ttl / 3``: a heartbeat, the renewal of every lease held, the
  lease table (who owns what), then the takeover of the shared queues whose lease is free. Nodes
  learn about each other only by polling: no LISTEN/NOTIFY (docs/decisions/0003).
* The thread never touches the core. What changes it (a queue gained or lost) is handed to the
  loop with ``call_soon_threadsafe``; what it needs from the core (the shared queues) it asks the
  loop for.
* A queue another node owns keeps its Queue object here (bindings, consumers that wait), with
  ``Queue.remote`` set: nothing is staged for it, publishes go to :attr:`ClusterNode.remote`.
* Gained: the lease is held (so the log may write for it) before the loop restores the queue from
  the rows the former owner committed. Lost: the queue's consumers are cancelled (basic.cancel), a
  fresh Queue object marked remote replaces it, and what was staged for it is dropped at the next
  cut (ClusterMessageLog.prepare_commit drops what is staged for leases other nodes hold).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mailslot.core import delayed, featureset, storekeys
from mailslot.core.broker import Broker
from mailslot.core.exchanges import DeduplicationExchange
from mailslot.core.message import Entry, Message
from mailslot.core.queue import Queue
from mailslot.storage.api import QueueRecovery
from mailslot.storage.postgres import FencedError, StoreUnavailable

from . import shared_exchanges
from .forward import Forwarder, is_link_consumer
from .leases import Lease, LeaseTable, NodeRow
from .proxy import QueryClient
from .stats import Counts, QueueFigures, QueueStats
from .store import ClusterMessageLog, ClusterMetadataStore
from .sync import MetadataSync
from .transient import TransientQueues

log = logging.getLogger("mailslot.cluster")
T = TypeVar("T")

# Longest the poller waits for the event loop to answer (the shared queues it serves).
LOOP_ANSWER_TIMEOUT = 5.0
# A node whose last complete poll is more than CUT_OFF_POLLS renewal intervals old was cut off from the
# database; it then takes no expired lease of another node for PATIENCE_POLLS intervals, the time the
# other nodes, cut off too, need to poll (each retries every interval, a first retry may hit the
# connection's reconnect backoff) and renew their leases.
CUT_OFF_POLLS, PATIENCE_POLLS = 2.0, 2.0


class Unforwarded:
    """The remote owner when no cluster link is configured: a publish to a queue another node owns
    is refused (nacked), since it cannot reach the owner. Consumers wait for a takeover."""

    def __init__(self) -> None:
        self._warned: set[str] = set()

    def enqueue(self, queue: Queue, message: Message) -> bool:
        if queue.key not in self._warned:
            self._warned.add(queue.key)
            log.warning("queue '%s' in vhost '%s' is owned by another node and no --cluster-link is set: "
                        "publishes to it are nacked here; publish through its owner", queue.name, queue.vhost)
        return False

    def consumers_changed(self, queue: Queue) -> None:
        pass  # consumers here wait until this node owns the queue

    def settled(self, queue: Queue, entries: list[Entry]) -> None:
        pass

    def returned(self, queue: Queue, entries: list[Entry], requeue: bool) -> None:
        pass  # nothing is taken in without a link

    def get(self, queue: Queue, count: int, settle: str) -> asyncio.Future[list[tuple[Entry, int]]]:
        queue.served_here("basic.get")  # raises: the owner cannot be reached without a link
        raise AssertionError("unreachable")

    def purge(self, queue: Queue) -> asyncio.Future[int]:
        queue.served_here("queue.purge")
        raise AssertionError("unreachable")

    def count(self, queue: Queue) -> asyncio.Future[int]:
        queue.served_here("a message count")
        raise AssertionError("unreachable")

    def forget(self, queue: Queue) -> None:
        pass

    def refresh(self, queues: list[Queue]) -> None:
        pass


class ClusterNode:
    """Keeps this broker's share of the cluster current (see the module's rules)."""

    def __init__(
        self,
        core: Broker,
        message_log: ClusterMessageLog,
        metadata: ClusterMetadataStore,
        loop: asyncio.AbstractEventLoop,
        remote: Forwarder | Unforwarded | None = None,
        link_address: str = "",
    ) -> None:
        self.core, self.log, self.metadata, self.loop = core, message_log, metadata, loop
        self.leases: LeaseTable = message_log.leases
        message_log.owners = lambda: self.owners
        message_log.on_lease_refused = self.poke  # learn at once which lease went, rather than at the next poll
        self.node = message_log.node
        self.remote: Forwarder | Unforwarded = remote if remote is not None else Unforwarded()
        self.link_address = link_address
        self.owners: dict[str, Lease] = {}  # the lease table as last polled: queue key -> lease
        self.links: dict[str, str] = {}  # running nodes' cluster link addresses, as last polled
        self.nodes: list[NodeRow] = []  # the nodes table as last polled (/api/nodes)
        self.closers: list[Callable[[], None]] = []  # the link's server and forwarder, closed at stop
        self.received: Callable[[], int] = lambda: 0  # messages other nodes forwarded here (the link's receiver)
        self.takeovers = 0  # leases taken over from another node (or a former process) since start
        self.polled_at = 0.0  # time.monotonic() of the last complete poll
        self._patient_until = 0.0  # until then, expired leases of other nodes are not taken (_patient)
        self.sync: MetadataSync | None = None  # the metadata sync, started and stopped with the node
        self.transient: TransientQueues | None = None  # other nodes' non-durable and exclusive queues
        self.queries: QueryClient | None = None  # asks queues' owners (with a cluster link)
        self.management_url = ""  # this node's management API, for other nodes' queries (bootstrap sets it)
        self.stats = QueueStats(message_log.settings, margin=self.leases.renew_every)  # queues' figures, shared at each poll (stats.py)
        self.queue_figures: dict[str, QueueFigures] = {}  # queue_stats as last polled: queue key -> figures
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle (event loop) -----------------------------------------------------------------------
    def start(self) -> None:
        """After the core recovered: queues whose lease this node did not take are remote."""
        self.metadata.on_declared = self._declared
        self.metadata.on_exchange_declared = self._exchange_declared
        held = self.leases.held
        for queue in self._shared_queues():
            if queue.key not in held:
                self._make_remote(queue)
        for _, exchange in shared_exchanges.dedup_exchanges(self.core):
            if exchange.window is not None and exchange.window.store_key not in held:
                shared_exchanges.hand_over(exchange, self.remote)
        log.info("cluster node '%s': serving %d shared queue(s); lease TTL %.1f s", self.node, len(held),
                 self.leases.ttl)
        self._thread = threading.Thread(target=self._run, name="mailslot-cluster", daemon=True)
        self._thread.start()
        if self.sync is not None:
            self.sync.start()

    def stop(self) -> None:
        for close in self.closers:
            close()
        if self.sync is not None:
            self.sync.stop()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.stats.close()

    def poke(self) -> None:
        """Poll now rather than at the next interval."""
        self._wake.set()

    # -- what the management API shows (http/context.py's ClusterView) -------------------------------------
    def node_extras(self) -> dict[str, Any]:
        return {
            "epoch": self.log.epoch,
            "lease_ttl": self.leases.ttl,
            "leases": len(self.leases.held),
            "takeovers": self.takeovers,
            "link": self.link_address,
            "last_poll_age": round(time.monotonic() - self.polled_at, 3) if self.polled_at else None,
            "forwarded": self.remote.forwarded if isinstance(self.remote, Forwarder) else 0,
            "received": self.received(),
        }

    def peers(self) -> list[dict[str, Any]]:
        owned: dict[str, int] = {}
        for lease in self.owners.values():
            if not lease.expired:
                owned[lease.owner] = owned.get(lease.owner, 0) + 1
        return [
            {
                "name": row.name,
                "type": "disc",
                "running": row.running,
                "cluster": {  # mailslot: what the nodes table and the lease table say of it
                    "epoch": row.epoch,
                    "started_at": row.started_at.isoformat(),
                    "seen_at": row.seen_at.isoformat() if row.seen_at is not None else None,
                    "leases": owned.get(row.name, 0),
                    "link": row.link,
                },
            }
            for row in self.nodes if row.name != self.node
        ]

    async def ask(self, owner: str, method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """A management request answered by node ``owner`` (proxy.py); ConnectionError saying why not."""
        if self.queries is None:
            raise ConnectionError("this node has no cluster link (--cluster-link) to ask it")
        return await self.queries.ask(owner, method, path, headers, body)

    def owner_of(self, queue_key: str) -> str | None:
        if queue_key in self.leases.held:
            return self.node
        lease = self.owners.get(queue_key)
        return lease.owner if lease is not None else None

    def figures(self, queue_key: str) -> QueueFigures | None:
        """The figures of a queue another node owns, as that owner last wrote them (None: this node owns
        it, or its owner wrote none yet, or they were written by a node that no longer owns it)."""
        if queue_key in self.leases.held:
            return None
        figures = self.queue_figures.get(queue_key)
        lease = self.owners.get(queue_key)
        if figures is None or lease is None or lease.owner != figures.node:
            return None
        return figures

    # -- the poller (its own thread) -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll()
            except (StoreUnavailable, concurrent.futures.TimeoutError) as exc:
                log.warning("cluster poll failed (%s); trying again", " ".join(str(exc).split()))
            except Exception:
                log.exception("cluster poll failed")
            self._wake.wait(max(0.0, self.leases.renew_every - (time.monotonic() - started)))
            self._wake.clear()

    def poll(self) -> None:
        """One round: heartbeat, renew, read the lease table, take what is free."""
        leases = self.leases
        leases.heartbeat(self.log.epoch, self.link_address)
        lost = leases.renew()
        if lost:
            self.log.lost |= lost
            self.loop.call_soon_threadsafe(self._lose, lost)
        table = {lease.queue: lease for lease in leases.table()}
        self.owners = table
        self.nodes = leases.nodes()
        self.links = {row.name: row.link for row in self.nodes if row.running and row.link}
        shared = self._on_loop(self._shared_keys)
        # Other node processes' delayed-message schedules: taken over like queues when their lease expires.
        shared |= {key for key in table if shared_exchanges.is_schedule_key(key)}
        self.loop.call_soon_threadsafe(self._refresh_subscriptions)
        held = leases.held
        patient = self._patient()
        free = [key for key in shared if key not in held and (
            key not in table or (table[key].expired and not patient) or table[key].owner == self.node)]
        if free:
            taken = leases.take(free)
            if taken:
                self._adopt(taken, {k: table[k].owner for k in taken if k in table})
        if self.transient is not None and not patient:  # an outage is not the death of their nodes either
            self.transient.sweep(table, self._on_loop, self.loop)
        released = self._on_loop(self._released_schedules)
        if released:
            self.loop.call_soon_threadsafe(self._forget_schedules, leases.drop_empty(released))
        self._share_figures()
        self.polled_at = time.monotonic()

    def _share_figures(self) -> None:
        """Write the figures of the queues this node owns (those that changed), read everyone's (stats.py)."""
        self.stats.write(self._on_loop(self._owned_counts))
        self.queue_figures = self.stats.read()

    def _patient(self) -> bool:
        """Whether to leave other nodes' expired leases alone for now: after this node was cut off from
        the database (an outage, a failover, commits waiting for a standby, or this process frozen), their
        leases expired because nobody could renew them, not because their nodes died. Every node renews
        first, so an outage longer than the TTL reshuffles no queue."""
        now = time.monotonic()
        if self.polled_at and now - self.polled_at > CUT_OFF_POLLS * self.leases.renew_every:
            self._patient_until = now + PATIENCE_POLLS * self.leases.renew_every
        return now < self._patient_until

    def _adopt(self, taken: dict[str, int], former: dict[str, str]) -> None:
        try:
            recoveries = self.log.adopt(taken)
        except FencedError as exc:  # taken over again before we read it: the next poll sees who has it
            log.warning("lost a lease while taking it over: %s", exc)
            return
        for key, epoch in taken.items():
            if key in former:
                self.takeovers += 1
                log.warning("took over %s from node '%s' (lease epoch %d)", _show(key), former[key], epoch)
        self.loop.call_soon_threadsafe(self._gain, taken, recoveries)

    def _on_loop(self, fn: Callable[[], T]) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as error:  # noqa: BLE001 - handed to the poller
                future.set_exception(error)

        self.loop.call_soon_threadsafe(run)
        return future.result(LOOP_ANSWER_TIMEOUT)

    # -- changes to the core (event loop) --------------------------------------------------------------
    def _shared_queues(self) -> list[Queue]:
        return [q for vhost in self.core.vhosts.values() for q in vhost.queues.values()
                if q.durable and q.exclusive_owner is None and not q.deleted]

    def _shared_keys(self) -> set[str]:
        """The leases this node may hold: its shared queues' and its deduplicating exchanges' windows'."""
        keys = {q.key for q in self._shared_queues()}
        keys.update(e.window.store_key for _, e in shared_exchanges.dedup_exchanges(self.core) if e.window is not None)
        return keys

    def _queue(self, key: str) -> Queue | None:
        parsed = storekeys.decode(key)
        vhost = self.core.vhosts.get(parsed.vhost)
        queue = vhost.queues.get(parsed.name) if vhost is not None else None
        return queue if queue is not None and queue.key == key else None

    def _owned_counts(self) -> dict[str, Counts]:
        """(ready, unacked, consumers) of each shared queue this node owns; the consumers exclude the other
        nodes' subscriptions (a node adds its own consumers to these when it shows the queue)."""
        held = self.leases.held
        return {q.key: (q.message_count, q.unacked, sum(not is_link_consumer(c) for c in q.consumers))
                for q in self._shared_queues() if q.key in held and q.remote is None}

    def _refresh_subscriptions(self) -> None:
        self.remote.refresh(self._shared_queues())

    def _declared(self, vhost: str, name: str, owned: bool) -> None:
        host = self.core.vhosts.get(vhost)
        queue = host.queues.get(name) if host is not None else None
        if queue is not None and not owned:
            self._make_remote(queue)

    def _gain(self, taken: dict[str, int], recoveries: list[QueueRecovery]) -> None:
        core = self.core
        for key in taken:
            queue = self._queue(key)
            if queue is not None:
                self.remote.forget(queue)  # what it took in from the former owner is the log's again
            exchange = shared_exchanges.dedup_exchange(core, key)
            if exchange is not None:
                shared_exchanges.serve(exchange)  # its window is restored from the rows below
        for recovered in recoveries:
            featureset.recover(core.vhosts, recovered)
        for key in taken:
            queue = self._queue(key)
            if queue is not None:
                queue.remote = None
                core.mark_dirty(queue)
        core.request_flush()

    def _lose(self, lost: set[str]) -> None:
        lost = self.transient.lose(lost) if self.transient is not None else lost
        for key in lost:
            if shared_exchanges.is_exchange_key(key):
                self._lose_exchange_state(key)
                continue
            queue = self._queue(key)
            if queue is None or queue.remote is not None:
                continue
            log.warning("lost the lease of %s: another node serves it now; its consumers here are "
                        "cancelled", _show(key))
            self.replace_with_remote(queue)
        self.core.request_flush()

    def _lose_exchange_state(self, key: str) -> None:
        """Another node holds the lease of an exchange's schedule or window now: it releases or decides."""
        log.warning("lost the lease of %s: another node serves it now", _show(key))
        exchange = shared_exchanges.dedup_exchange(self.core, key)
        if exchange is not None:
            shared_exchanges.hand_over(exchange, self.remote)
            return
        vhost = self.core.vhosts.get(storekeys.decode(key).vhost)
        if vhost is not None:
            delayed.messages(vhost).forget(key)

    def _released_schedules(self) -> list[str]:
        """Schedules of former node processes that this node took over and released entirely."""
        held = self.leases.held
        return [key for vhost in self.core.vhosts.values() for key, schedule in delayed.messages(vhost).schedules.items()
                if key in held and not len(schedule) and schedule.exchange.schedule is not schedule]

    def _forget_schedules(self, keys: set[str]) -> None:
        for key in keys:
            vhost = self.core.vhosts.get(storekeys.decode(key).vhost)
            if vhost is not None:
                delayed.messages(vhost).forget(key)

    def _exchange_declared(self, vhost: str, name: str, owned: bool) -> None:
        host = self.core.vhosts.get(vhost)
        exchange = host.exchanges.get(name) if host is not None else None
        if isinstance(exchange, DeduplicationExchange) and not owned:
            shared_exchanges.hand_over(exchange, self.remote)

    def replace_with_remote(self, queue: Queue) -> Queue:
        """Stop serving ``queue`` here: cancel its consumers, and put an empty Queue marked remote in its
        place (same name, arguments and bindings, which are by name)."""
        vhost = self.core.vhosts[queue.vhost]
        for consumer in list(queue.consumers):
            consumer.session.cancelled_by_broker(consumer)
        queue.consumers.clear()
        queue.deleted = True  # what it still stages is dropped at the cut (ClusterMessageLog.prepare_commit)
        fresh = featureset.build_queue(
            vhost, queue.name, durable=queue.durable, exclusive_owner=None, auto_delete=queue.auto_delete,
            arguments=queue.arguments, effective=queue.effective_arguments,
        )
        self._make_remote(fresh)
        vhost.queues[queue.name] = fresh
        return fresh

    def _make_remote(self, queue: Queue) -> None:
        """Another node owns ``queue``: publishes go to it; what this object stages (delivery watermarks of
        what it took in) is dropped at the cut, since this node holds no lease for it."""
        queue.remote = self.remote


def _show(key: str) -> str:
    parsed = storekeys.decode(key)
    if parsed.kind == storekeys.DELAYED:
        return f"the delayed messages of exchange '{parsed.name}' in vhost '{parsed.vhost}' ({parsed.sub})"
    if parsed.kind == storekeys.DEDUP_EXCHANGE:
        return f"the deduplication window of exchange '{parsed.name}' in vhost '{parsed.vhost}'"
    return f"queue '{parsed.name}' in vhost '{parsed.vhost}'"
