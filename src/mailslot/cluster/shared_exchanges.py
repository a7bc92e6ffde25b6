"""Exchanges whose state the nodes of a cluster share: delayed-message and deduplicating exchanges.

Rules of this module:

* Both keep their state as rows of the message log under a store key (core/storekeys.py, kinds
  ``delayed`` and ``dedup-exchange``); in a cluster each such key has a lease of its own, exactly as a
  queue has (leases.py, fenced the same way by every batch: store.py's ``lease_group``).
* A deduplicating exchange's window has ONE owner, the node holding the lease of its key: the window
  must see every key of the cluster to drop a duplicate, wherever it was published. A node that does
  not own it forwards the exchange's publishes to the owner over the link (:class:`ExchangeForwarder`,
  the exchange's ``remote``); the owner routes them through its window (:func:`exchange_target`),
  commits, and answers, and the publisher is confirmed then, as for a forwarded queue publish.
* A delayed exchange needs no single owner: each node process schedules the delayed publishes it
  receives under a key of its own (``delay_key(..., partition)``: node name and node epoch), whose
  lease it takes before its first write (store.py). Publishing costs no hop over the link. When the
  node dies, another node takes that key's lease over like a queue's and releases its messages when
  due; the release of a row and its removal share one fenced batch, so it is released once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from mailslot.core import featureset, storekeys
from mailslot.core.exchanges import DeduplicationExchange
from mailslot.core.message import Message
from mailslot.core.routing import sender_keys

if TYPE_CHECKING:
    from mailslot.core.broker import Broker
    from mailslot.core.queue import Queue
    from mailslot.core.vhost import VirtualHost

#: Store-key kinds of exchange state that a lease covers (the key is its own lease).
LEASED_KINDS = frozenset({storekeys.DEDUP_EXCHANGE, storekeys.DELAYED})


def is_exchange_key(key: str) -> bool:
    """Is ``key`` the log of a delayed exchange's schedule or of a deduplicating exchange's window?"""
    return storekeys.decode(key).kind in LEASED_KINDS


def is_schedule_key(key: str) -> bool:
    return storekeys.decode(key).kind == storekeys.DELAYED


def partition_of(node: str, epoch: int) -> str:
    """The sub-key under which one node process schedules delayed messages (a fresh one each start)."""
    return f"{node}:{epoch}"


def is_own_schedule(key: str, partition: str) -> bool:
    """A schedule this process writes (``partition``, or a later generation of it: core/delayed.py)."""
    parsed = storekeys.decode(key)
    return parsed.kind == storekeys.DELAYED and (parsed.sub == partition or parsed.sub.startswith(partition + "."))


def dedup_exchanges(core: Broker) -> Iterable[tuple[VirtualHost, DeduplicationExchange]]:
    """The durable deduplicating exchanges (the shared ones: a transient one stays on its node)."""
    for vhost in core.vhosts.values():
        for exchange in vhost.exchanges.values():
            if isinstance(exchange, DeduplicationExchange) and exchange.durable and exchange.window is not None:
                yield vhost, exchange


def dedup_exchange(core: Broker, key: str) -> DeduplicationExchange | None:
    parsed = storekeys.decode(key)
    if parsed.kind != storekeys.DEDUP_EXCHANGE:
        return None
    vhost = core.vhosts.get(parsed.vhost)
    exchange = vhost.exchanges.get(parsed.name) if vhost is not None else None
    if isinstance(exchange, DeduplicationExchange) and exchange.window is not None and exchange.window.store_key == key:
        return exchange
    return None


class _Target:
    """What the forwarder needs of a queue (its key; a name for a warning) for an exchange's key."""

    __slots__ = ("key", "name", "vhost")

    def __init__(self, key: str) -> None:
        parsed = storekeys.decode(key)
        self.key, self.name, self.vhost = key, parsed.name, parsed.vhost


class ExchangeForwarder:
    """``Exchange.remote`` of a deduplicating exchange another node owns: its publishes go to the owner
    (through the node's forwarder, :class:`~mailslot.cluster.forward.Forwarder`, or nacked without a
    link); False (nacked) when no live owner is known, as for a queue."""

    def __init__(self, remote: Any, key: str) -> None:
        self.remote = remote
        self._target = cast("Queue", _Target(key))

    def publish(self, exchange: Any, message: Message) -> bool:
        return bool(self.remote.enqueue(self._target, message))


def exchange_target(core: Broker, key: str) -> Callable[[Message], bool] | None:
    """On the owner: what routes a publish another node forwarded for the exchange of ``key`` (through
    its window: a duplicate is confirmed and dropped). None when this node does not serve it."""
    exchange = dedup_exchange(core, key)
    if exchange is None or exchange.remote is not None:
        return None
    vhost = core.vhosts[storekeys.decode(key).vhost]

    def publish(message: Message) -> bool:
        queues = vhost.route(exchange, message.routing_key, message, sender_keys(message))
        exchange.stats_in += 1
        exchange.stats_out += len(queues)
        ok = True
        for queue in queues:
            ok &= vhost.enqueue(queue, message)
        if not ok:
            featureset.publish_refused(exchange, message)
        return ok

    return publish


def serve(exchange: DeduplicationExchange) -> None:
    """This node owns the exchange's window now: it decides (its rows are restored next)."""
    exchange.remote = None
    if exchange.window is not None:
        exchange.window.index.clear()  # what it knew before is stale; the rows say what holds


def hand_over(exchange: DeduplicationExchange, remote: Any) -> None:
    """Another node owns the exchange's window: forward to it; forget the keys (the rows stay)."""
    if exchange.window is not None:
        exchange.window.index.clear()
        exchange.remote = ExchangeForwarder(remote, exchange.window.store_key)
