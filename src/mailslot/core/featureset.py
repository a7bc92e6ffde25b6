"""Which features a queue or an exchange gets, and who owns a store key at start-up.

The one place that names the features (core/features.py is their protocol): the broker, the virtual
host and the session call the functions here and never a feature module directly.

* :func:`build_queue` makes a queue from its declared and effective arguments (priority queues get a
  ready store of FIFO lanes, core/priority.py; TTL state; the features of :data:`QUEUE_FEATURES`), and gives it
  :func:`compose` so that ``Queue.reconfigure`` composes them again from new effective arguments.
* Exchanges: :func:`check_exchange`, :func:`exchange_declared` and :func:`exchange_deleted` (the
  delayed-message and deduplication types keep per-exchange state).
* Recovery: :func:`recover` decodes a recovered store key (core/storekeys.py) and hands it to what
  owns its kind: the queue, a priority lane, or a feature registered in ``VirtualHost.owners``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..storage.api import QueueRecovery
from . import dedup, delayed, storekeys
from .delayed import DELAYED_TYPE, DelayedExchange, delayed_routing_type
from .errors import CommandInvalid
from .exchanges import Exchange, is_known_type
from .features import QueueFeature
from .priority import max_priority, use_priorities
from .queue import Queue
from .ttl import QueueExpiry

if TYPE_CHECKING:
    from .vhost import VirtualHost


class StoreOwner(Protocol):
    """Something other than a queue that keeps rows under its own store key (a deduplication window, a
    delayed exchange's schedule), registered in ``VirtualHost.owners`` under that key."""

    def restore(self, recovered: QueueRecovery) -> None: ...

    def tick(self, now: float) -> None: ...


# A feature factory: the feature the effective arguments ask for (None: not wanted). Called on every
# compose; a feature already on the queue that is ``same_as`` the arguments is kept instead (its state too).
FeatureFactory = Callable[["VirtualHost", Queue, dict[str, Any]], "QueueFeature | None"]


def _dedup(vhost: VirtualHost, queue: Queue, arguments: dict[str, Any]) -> QueueFeature | None:
    return dedup.DedupFeature.build(queue, arguments, vhost.log, vhost.clock, vhost.owners)


QUEUE_FEATURES: tuple[tuple[str, FeatureFactory], ...] = (("dedup", _dedup),)


def build_queue(
    vhost: VirtualHost,
    name: str,
    *,
    durable: bool,
    exclusive_owner: object | None,
    auto_delete: bool,
    arguments: dict[str, Any],
    effective: dict[str, Any],
) -> Queue:
    queue = Queue(
        name,
        vhost.name,
        durable=durable,
        exclusive_owner=exclusive_owner,
        auto_delete=auto_delete,
        arguments=arguments,
        log=vhost.log,
        codecs=vhost.codecs,
        effective=effective,
    )
    # x-max-priority is not a policy key (RabbitMQ refuses it there), so the ready store is fixed for life.
    levels = max_priority(effective)
    if levels:
        use_priorities(queue, levels)
    policy = queue.policy
    queue.expiry = QueueExpiry(vhost.clock, vhost.expired, policy.message_ttl, policy.expires)
    queue.expiring = policy.message_ttl is not None
    queue.composer = lambda q, args: compose(vhost, q, args)
    queue.set_features(compose(vhost, queue, effective))
    return queue


def compose(vhost: VirtualHost, queue: Queue, effective: dict[str, Any]) -> tuple[QueueFeature, ...]:
    """The features ``effective`` asks for, keeping those already on ``queue`` that stay the same."""
    features: list[QueueFeature] = []
    for name, factory in QUEUE_FEATURES:
        current = queue.feature(name)
        if current is not None and current.same_as(effective):
            features.append(current)
            continue
        if current is not None:  # changed: the old one goes first (it may own the same store key)
            queue.set_features(tuple(f for f in queue.hooks.all if f is not current))
        built = factory(vhost, queue, effective)
        if built is not None:
            features.append(built)
    return tuple(features)


# ---- exchanges ------------------------------------------------------------------------------------


def check_exchange(type_: str, arguments: dict[str, Any]) -> None:
    """Checks of a new exchange's type that belong to a feature (the delayed-message plugin's: 406 without
    a routing type, 503 for an unknown one)."""
    if type_ == DELAYED_TYPE:
        routing_type = delayed_routing_type(arguments)
        if not is_known_type(routing_type):
            raise CommandInvalid(f"unknown exchange type '{routing_type}'")


def exchange_declared(vhost: VirtualHost, exchange: Exchange) -> None:
    dedup.attach_to_exchange(vhost, exchange)
    if isinstance(exchange, DelayedExchange):
        delayed.messages(vhost).attach(exchange)


def exchange_deleted(vhost: VirtualHost, exchange: Exchange) -> None:
    if isinstance(exchange, DelayedExchange):
        delayed.messages(vhost).drop(exchange)
    dedup.detach_from_exchange(vhost, exchange)


def counts_as_routed(exchange: Exchange, message: Any) -> bool:
    """A publish that reached no queue because an exchange feature kept it (a deduplicating exchange
    dropped a duplicate): confirmed, no basic.return."""
    return dedup.dropped_as_duplicate(exchange, message)


def publish_refused(exchange: Exchange, message: Any) -> None:
    """A queue refused the publish (reject-publish overflow): exchange features forget it."""
    dedup.refused(exchange, message)


# ---- timers and recovery ----------------------------------------------------------------------------


def tick_owners(vhosts: Iterable[VirtualHost], now: float) -> None:
    """The broker's feature timer: every registered store owner's tick (deduplication windows expire keys)."""
    for vhost in vhosts:
        for owner in list(vhost.owners.values()):
            owner.tick(now)


def recover(vhosts: Mapping[str, VirtualHost], recovered: QueueRecovery) -> bool:
    """Hand a recovered store key to its owner; False when nothing owns it (its rows are purged)."""
    key = storekeys.decode(recovered.queue)
    vhost = vhosts.get(key.vhost)
    if vhost is None:
        return False
    if key.kind == storekeys.QUEUE:
        queue = vhost.queues.get(key.name)
        if queue is None or queue.key != recovered.queue:
            return False
        queue.restore(recovered.count, recovered.max_seq)
        return True
    if key.kind == storekeys.LANE:
        queue = vhost.queues.get(key.name)
        return queue is not None and queue.restore_lane(int(key.sub), recovered.count, recovered.max_seq)
    owner = vhost.owners.get(recovered.queue)
    if owner is None:
        if key.kind == storekeys.DELAYED:  # another process's schedule of a delayed exchange (a cluster node's)
            return delayed.messages(vhost).adopt(recovered)
        return False
    owner.restore(recovered)
    return True
