"""A session: the one handle a front end uses to work with the broker (an AMQP channel maps onto it).

It owns what RabbitMQ keeps per channel: consumers, unacknowledged deliveries with their
delivery tags, prefetch limits (per consumer and per channel, as ``basic.qos`` global=false/true),
flow, and the open transaction. It speaks to its front end only through a ``DeliverySink``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Protocol

from . import consumer_priority, featureset
from .access.authorizer import UNRESTRICTED, Authorizer
from .errors import AccessRefused, NotAllowed, NotFound, NotImplementedFeature, PreconditionFailed
from .message import Entry, Message
from .outcome import Outcome
from .queue import Queue
from .vhost import VirtualHost

if TYPE_CHECKING:
    from .broker import Broker

# Session.publish outcomes (core/outcome.py). REJECTED: routed, but a full queue refused it (x-overflow
# reject-publish): nack the publisher.
UNROUTED, ROUTED, REJECTED = Outcome.UNROUTED, Outcome.ROUTED, Outcome.REJECTED

REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_TO_PREFIX = REPLY_TO + "."


class DeliverySink(Protocol):
    """What a session needs from its front end."""

    def deliver_many(self, consumer_tag: str, first_tag: int, entries: list[Entry]) -> None:
        """``entries`` get the delivery tags first_tag, first_tag + 1, ... in order."""

    def consumer_cancelled(self, consumer_tag: str) -> None:
        """The broker cancelled this consumer (its queue was deleted)."""

    def acknowledgement_timed_out(self, timeout_ms: int) -> None:
        """The broker closed this session: an unacked delivery outlived the consumer timeout
        (AMQP: channel.close 406 PRECONDITION_FAILED, as RabbitMQ)."""


class Gate:
    """Shared by the sessions of one connection. ``open``: deliveries may be written (the outgoing
    buffer is not full). ``throttled``: it published into a congested queue this turn, so the
    transport stops reading it for a turn (credit flow, as RabbitMQ slows a publisher that outruns
    its queue)."""

    __slots__ = ("open", "socket_full", "throttled")

    def __init__(self) -> None:
        self.open = True
        self.socket_full = False  # the peer is not reading fast enough (transport paused writing)
        self.throttled = False


class Consumer:
    __slots__ = ("arguments", "exclusive", "no_ack", "prefetch", "queue", "session", "tag", "unacked")

    def __init__(
        self, tag: str, session: Session, queue: Queue, no_ack: bool, exclusive: bool, prefetch: int, arguments: Any
    ) -> None:
        self.tag = tag
        self.session = session
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch
        self.unacked = 0
        self.arguments = arguments

    def can_take(self) -> bool:
        session = self.session
        return session.flow_active and session.gate.open and self.has_prefetch_room()

    def wants_more(self) -> bool:
        """It would take messages now if the broker could write them (prefetch room, flow on, and its
        peer keeps up): a backlog in front of such a consumer means the broker is the bottleneck."""
        session = self.session
        return session.flow_active and not session.gate.socket_full and self.has_prefetch_room()

    def has_prefetch_room(self) -> bool:
        """basic.qos allows one more unacked delivery (per consumer and per channel); no-ack: always."""
        if self.no_ack:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        session = self.session
        return not (session.channel_prefetch and session.unacked_count >= session.channel_prefetch)


# An unacknowledged delivery: the queue it came from, its entry, and the consumer (None for basic.get).
Unacked = tuple[Queue, Entry, "Consumer | None"]


class Transaction:
    __slots__ = ("publishes", "settles")

    def __init__(self) -> None:
        self.publishes: list[tuple[str, str, Message, bool, tuple[str, ...]]] = []
        self.settles: list[tuple[int, Unacked, bool, bool]] = []  # (tag, unacked, requeue, is_ack)


class Session:
    _tags = itertools.count(1)

    def __init__(
        self,
        broker: Broker,
        vhost: VirtualHost,
        owner: object,
        sink: DeliverySink,
        gate: Gate,
        authz: Authorizer = UNRESTRICTED,
    ) -> None:
        self.broker = broker
        self.vhost = vhost
        self.authz = authz
        self.write_ok = authz.write_ok  # exchanges already checked for publishing (one lookup per publish)
        self.owner = owner
        self.sink = sink
        self.gate = gate
        self.consumers: dict[str, Consumer] = {}
        self.unacked: dict[int, Unacked] = {}
        self.unacked_count = 0
        self.next_delivery_tag = 1
        self.consumer_prefetch = 0  # basic.qos global=false: applies to consumers created afterwards
        self.channel_prefetch = 0  # basic.qos global=true: shared by the channel's consumers
        self.flow_active = True
        self.tx: Transaction | None = None
        self.reply_consumer: str | None = None
        self.reply_name: str | None = None
        self.closed = False
        # Counters for the management API and metrics (core/stats.py: SESSION_COUNTERS names them all;
        # the front end adds confirms and returns, which only it knows). Bumped once per batch where the
        # work is batch-shaped, once per message only on a path that is per message anyway.
        self.stats_published = 0
        self.stats_unroutable = 0  # routed nowhere (returned or dropped)
        self.stats_returned = 0
        self.stats_confirmed = 0
        self.stats_delivered = 0  # to consumers, both ack modes
        self.stats_delivered_no_ack = 0
        self.stats_get = 0  # basic.get with a message, both ack modes
        self.stats_get_no_ack = 0
        self.stats_get_empty = 0
        self.stats_acked = 0
        self.stats_redelivered = 0
        vhost.stats.channels_opened += 1

    # ---- publishing -----------------------------------------------------------------------------

    def publish(
        self, exchange_name: str, routing_key: str, message: Message, mandatory: bool, cc: tuple[str, ...] = ()
    ) -> Outcome:
        """Route and enqueue: UNROUTED, ROUTED or REJECTED. Inside a transaction: buffered (ROUTED).
        As rabbit_channel: write permission on the exchange before it is looked up (403 before 404).
        ``cc``: more routing keys (sender-selected distribution, the front end read them: CC and BCC)."""
        vhost = self.vhost
        if vhost.tracer is not None and vhost.tracer.wants(self):  # tracing on (core/tracing.py)
            return vhost.tracer.publish(self, exchange_name, routing_key, message, mandatory, cc)
        if exchange_name not in self.write_ok:
            self.authz.may_publish(exchange_name)
        self.stats_published += 1
        if not exchange_name and self.tx is None and not cc:  # the default exchange: the hot path, one lookup
            queue = vhost.queues.get(routing_key)
            if queue is not None:
                if queue.congested:
                    self.gate.throttled = True
                return ROUTED if vhost.enqueue(queue, message) else REJECTED
            if routing_key.startswith(REPLY_TO_PREFIX) and self.broker.deliver_reply(
                routing_key[len(REPLY_TO_PREFIX) :], message
            ):
                return ROUTED
            self.stats_unroutable += 1
            return UNROUTED
        exchange = vhost.exchanges.get(exchange_name)
        if exchange is None:
            raise NotFound(f"no exchange '{exchange_name}' in vhost '{self.vhost.name}'")
        if exchange.internal:
            raise AccessRefused(f"cannot publish to internal exchange '{exchange_name}' in vhost '{self.vhost.name}'")
        if exchange.type == "topic":
            self.authz.topic("write", exchange_name, routing_key)
        if self.tx is not None:
            self.tx.publishes.append((exchange_name, routing_key, message, mandatory, cc))
            return ROUTED
        if exchange.remote is not None:  # another node owns its state (mailslot.cluster): routed there
            exchange.stats_in += 1
            return ROUTED if exchange.remote.publish(exchange, message) else REJECTED
        queues = vhost.route(exchange, routing_key, message, cc)
        exchange.stats_in += 1
        exchange.stats_out += len(queues)
        if not queues:
            if featureset.counts_as_routed(exchange, message):
                return ROUTED
            self.stats_unroutable += 1
            return UNROUTED
        outcome = ROUTED
        for queue in queues:
            if queue.congested:
                self.gate.throttled = True
            if not vhost.enqueue(queue, message):
                outcome = REJECTED
        if outcome == REJECTED:
            featureset.publish_refused(exchange, message)
        return outcome

    # ---- consuming ------------------------------------------------------------------------------

    def consume(self, queue_name: str, tag: str, *, no_ack: bool, exclusive: bool, arguments: Any) -> str:
        if not tag:
            tag = f"amq.ctag-mailslot-{next(self._tags)}"
        if tag in self.consumers:
            raise NotAllowed(f"attempt to reuse consumer tag '{tag}'")
        if queue_name == REPLY_TO:
            return self._consume_replies(tag, no_ack)
        self.authz.read("queue", queue_name)
        queue = self.vhost.queue(queue_name)
        self.vhost.check_access(queue, self.owner)
        if exclusive and queue.policy.single_active_consumer:  # RabbitMQ: exclusive_consume_unavailable
            raise AccessRefused(f"queue '{queue_name}' in vhost '{self.vhost.name}' in exclusive use")
        if queue.consumers and (exclusive or queue.consumers[0].exclusive):
            raise AccessRefused(f"queue '{queue_name}' in vhost '{self.vhost.name}' in exclusive use")
        consumer_priority.check(arguments, queue_name, self.vhost.name)
        consumer = Consumer(tag, self, queue, no_ack, exclusive, self.consumer_prefetch, arguments)
        self.consumers[tag] = consumer
        queue.add_consumer(consumer)
        if not no_ack:
            self.broker.redelivery.ack_timeouts.watch(self, queue)
        self.broker.mark_dirty(queue)
        return tag

    def _consume_replies(self, tag: str, no_ack: bool) -> str:
        if not no_ack:
            raise PreconditionFailed("reply consumer cannot acknowledge")
        if self.reply_consumer is not None:
            raise PreconditionFailed("reply consumer already set")
        self.reply_consumer = tag
        self.reply_name = REPLY_TO_PREFIX + self.broker.register_reply_session(self)
        return tag

    def cancel(self, tag: str) -> bool:
        """Client-initiated cancel; unknown tags are fine (RabbitMQ replies cancel-ok anyway)."""
        if tag == self.reply_consumer:
            self._drop_reply_consumer()
            return True
        consumer = self.consumers.pop(tag, None)
        if consumer is None:
            return False
        # As RabbitMQ 3.10, a cancel does not run a single-active-consumer queue: the next consumer starts at
        # the queue's next event. A client that cancels and then closes its channel (pika does) thus has its
        # unacked messages requeued before the next consumer gets anything, which keeps them in order.
        self._detach(consumer, wake=not consumer.queue.policy.single_active_consumer)
        return True

    def cancelled_by_broker(self, consumer: Consumer) -> None:
        if self.consumers.pop(consumer.tag, None) is not None:
            self.sink.consumer_cancelled(consumer.tag)

    def _detach(self, consumer: Consumer, wake: bool = True) -> None:
        queue = consumer.queue
        queue.remove_consumer(consumer)
        if wake:
            self.broker.mark_dirty(queue)  # its congestion (and auto-delete) must be looked at again
        # A queue another node owns is auto-deleted there, when its last consumer (this node's link) goes.
        if queue.auto_delete and not queue.consumers and not queue.deleted and queue.had_consumer \
                and queue.remote is None:
            self.broker.delete_queue(self.vhost, queue)

    def _drop_reply_consumer(self) -> None:
        if self.reply_name is not None:
            self.broker.unregister_reply_session(self.reply_name[len(REPLY_TO_PREFIX) :])
        self.reply_consumer = self.reply_name = None

    def deliver_many(self, consumer: Consumer, queue: Queue, entries: list[Entry]) -> None:
        """Several deliveries to one consumer, in order: consecutive delivery tags from one call."""
        first = self.next_delivery_tag
        count = len(entries)
        self.next_delivery_tag = first + count
        self.stats_delivered += count
        if consumer.no_ack:
            self.stats_delivered_no_ack += count
            queue.stats_delivered_no_ack += count
            stored = [entry for entry in entries if entry.stored]
            # Features that track messages (deduplication) see them leave; the owner on another node of a
            # queue served through this one hears of them (it delivers no more than it has heard settled).
            if stored or queue.hooks.settle or queue.remote is not None:
                queue.settle(entries)
        else:
            unacked = self.unacked
            tag = first
            for entry in entries:
                unacked[tag] = (queue, entry, consumer)
                tag += 1
            consumer.unacked += count
            self.unacked_count += count
            queue.unacked += count
            queue.mark_delivered(entries)
        if self.vhost.tracer is not None:
            self.vhost.tracer.delivered(self, queue, entries, consumer.tag, consumer.no_ack)
        self.sink.deliver_many(consumer.tag, first, entries)

    def room(self, consumer: Consumer) -> int:
        """How many more deliveries prefetch allows this consumer now (a large number if unlimited)."""
        room = 1 << 30
        if not consumer.no_ack:
            if consumer.prefetch:
                room = consumer.prefetch - consumer.unacked
            if self.channel_prefetch:
                room = min(room, self.channel_prefetch - self.unacked_count)
        return room

    def deliver_reply(self, message: Message) -> None:
        assert self.reply_consumer is not None
        tag = self.next_delivery_tag
        self.next_delivery_tag = tag + 1
        self.sink.deliver_many(self.reply_consumer, tag, [Entry(0, message, False, False)])  # no queue, no ack

    def readable(self, queue_name: str) -> Queue:
        """The queue, if this session may read it (403, 404, 405 otherwise, in RabbitMQ's order)."""
        self.authz.read("queue", queue_name)
        queue = self.vhost.queue(queue_name)
        self.vhost.check_access(queue, self.owner)
        return queue

    def get(self, queue_name: str, *, no_ack: bool) -> tuple[int, Entry, int] | None:
        """basic.get: (delivery tag, entry, messages left) or None when empty. Ignores prefetch, as RabbitMQ."""
        queue = self.readable(queue_name)
        queue.served_here("basic.get")
        if queue.expiry is not None:
            queue.expiry.used()  # basic.get renews the x-expires lease
        queue.stats_dirty = True
        entry = queue.pop_ready()
        if entry is None:
            self.got_nothing(queue)
            return None
        return self.got(queue, entry, no_ack), entry, queue.message_count

    def got_nothing(self, queue: Queue) -> None:
        self.stats_get_empty += 1
        queue.stats_get_empty += 1

    def got(self, queue: Queue, entry: Entry, no_ack: bool) -> int:
        """``entry`` of ``queue`` handed out by basic.get (here, or by the node that owns the queue, through
        ``Queue.remote.get``): its delivery tag."""
        tag = self.next_delivery_tag
        self.next_delivery_tag = tag + 1
        self.stats_get += 1
        queue.stats_get += 1
        if entry.redelivered:
            self.stats_redelivered += 1
        if self.vhost.tracer is not None:
            self.vhost.tracer.delivered(self, queue, [entry], None, no_ack)
        if no_ack:
            self.stats_get_no_ack += 1
            queue.stats_get_no_ack += 1
            queue.settle([entry])
        else:
            self.unacked[tag] = (queue, entry, None)
            self.unacked_count += 1
            queue.unacked += 1
            queue.mark_delivered([entry])
            self.broker.redelivery.ack_timeouts.watch(self, queue)
        return tag

    # ---- settling -------------------------------------------------------------------------------

    def _take(self, delivery_tag: int, multiple: bool) -> list[tuple[int, Unacked]]:
        """Remove and return the deliveries an ack/nack names, as RabbitMQ's collect_acks: the tag
        itself must be outstanding (406 otherwise); ``multiple`` adds every older one; tag 0 with
        ``multiple`` means all (spec 1.8.3.13). ``unacked`` is in delivery-tag order."""
        unacked = self.unacked
        if multiple and delivery_tag == 0:
            taken = list(unacked.items())
            unacked.clear()
            return taken
        found = unacked.pop(delivery_tag, None)
        if found is None:
            raise PreconditionFailed(f"unknown delivery tag {delivery_tag}")
        if not multiple:
            return [(delivery_tag, found)]
        taken = []
        for tag in unacked:
            if tag > delivery_tag:
                break
            taken.append((tag, unacked[tag]))
        for tag, _ in taken:
            del unacked[tag]
        taken.append((delivery_tag, found))
        return taken

    def ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(self._take(delivery_tag, multiple), requeue=False, is_ack=True)

    def nack(self, delivery_tag: int, multiple: bool, requeue: bool) -> None:
        self._settle(self._take(delivery_tag, multiple), requeue=requeue, is_ack=False)

    def _settle(self, taken: list[tuple[int, Unacked]], requeue: bool, is_ack: bool) -> None:
        if self.tx is not None:
            self.tx.settles.extend((tag, item, requeue, is_ack) for tag, item in taken)
            return
        self._apply_settles([item for _, item in taken], requeue, rejected=not is_ack)

    def _apply_settles(self, items: list[Unacked], requeue: bool, rejected: bool = False) -> None:
        if self.vhost.tracer is not None:
            self.vhost.tracer.settled(items, requeue, rejected)
        by_queue: dict[Queue, list[Entry]] = {}
        for queue, entry, consumer in items:
            by_queue.setdefault(queue, []).append(entry)
            if consumer is not None:
                consumer.unacked -= 1
            queue.unacked -= 1
        self.unacked_count -= len(items)
        acked = not requeue and not rejected
        if acked:
            self.stats_acked += len(items)
        mark_dirty = self.broker.mark_dirty
        for queue, entries in by_queue.items():
            if (requeue or rejected) and queue.remote is not None and not queue.deleted:
                # Another node owns it (mailslot.cluster): its owner requeues or dead-letters them, as on one node.
                queue.remote.returned(queue, entries, requeue)
            elif requeue and not queue.deleted:
                exhausted = queue.requeue(entries, self.broker.clock())
                if exhausted:  # past x-delivery-limit
                    self.vhost.dead_letter(queue, exhausted, "delivery_limit")
                if queue.holding:  # x-retry-delays
                    self.broker.redelivery.retries.watch(queue)
            elif rejected and not queue.deleted:
                self.vhost.dead_letter(queue, entries, "rejected")  # or dropped, without a DLX
            else:
                if acked:
                    queue.stats_acked += len(entries)
                queue.settle(entries)
            mark_dirty(queue)

    def recover(self, requeue: bool) -> None:
        if not requeue:
            raise NotImplementedFeature("requeue=false")
        self.requeue_all()

    def requeue_all(self) -> None:
        items = list(self.unacked.values())  # order is free: requeues go back by seq
        self.unacked.clear()
        if self.tx is not None:
            items.extend(item for _, item, _, _ in self.tx.settles)
            self.tx.settles.clear()
        self._apply_settles(items, requeue=True)

    # ---- flow and limits ------------------------------------------------------------------------

    def qos(self, prefetch_size: int, prefetch_count: int, global_: bool) -> None:
        if prefetch_size:
            raise NotImplementedFeature(f"prefetch_size!=0 ({prefetch_size})")
        if global_:
            self.channel_prefetch = prefetch_count
        else:
            # RabbitMQ (rabbit_channel, unlimit_prefetch): a per-consumer qos also lifts the channel limit.
            self.consumer_prefetch = prefetch_count
            self.channel_prefetch = 0
        self.wake_queues()

    def flow(self, active: bool) -> None:
        self.flow_active = active
        if active:
            self.wake_queues()

    def wake_queues(self) -> None:
        for consumer in self.consumers.values():
            self.broker.mark_dirty(consumer.queue)

    # ---- transactions ---------------------------------------------------------------------------

    def tx_select(self) -> None:
        if self.tx is None:
            self.tx = Transaction()

    def tx_commit(self) -> list[tuple[str, str, Message]]:
        """Apply the transaction's publishes and settles; returns the unroutable mandatory publishes."""
        tx = self.tx
        if tx is None:
            raise PreconditionFailed("channel is not transactional")
        self.tx = None
        self.stats_published -= len(tx.publishes)  # counted when buffered; publish() counts them again now
        unroutable = []
        try:
            for exchange, routing_key, message, mandatory, cc in tx.publishes:
                if self.publish(exchange, routing_key, message, mandatory, cc) == UNROUTED and mandatory:
                    unroutable.append((exchange, routing_key, message))
            for requeue, is_ack in ((False, True), (False, False), (True, False)):
                items = [item for _, item, rq, ack in tx.settles if rq is requeue and ack is is_ack]
                if items:
                    self._apply_settles(items, requeue, rejected=not is_ack)
        finally:
            self.tx = Transaction()
        return unroutable

    def tx_rollback(self) -> None:
        tx = self.tx
        if tx is None:
            raise PreconditionFailed("channel is not transactional")
        for tag, item, _, _ in tx.settles:  # acks of a rolled-back transaction never happened
            self.unacked[tag] = item
        self.unacked = dict(sorted(self.unacked.items()))  # keep delivery-tag order (see _take)
        self.tx = Transaction()

    # ---- end ------------------------------------------------------------------------------------

    def close(self) -> None:
        """The channel is gone: requeue its unacked deliveries, cancel its consumers."""
        if self.closed:
            return
        self.closed = True
        self.vhost.stats.retire(self)  # what it counted stays in the vhost's totals
        self.broker.redelivery.ack_timeouts.forget(self)
        self.requeue_all()
        for consumer in list(self.consumers.values()):
            self._detach(consumer)
        self.consumers.clear()
        if self.reply_consumer is not None:
            self._drop_reply_consumer()
