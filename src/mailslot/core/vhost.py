"""A virtual host: its exchanges, queues and bindings, and the rules for changing them.

Declarations follow RabbitMQ 3.10: reserved ``amq.`` names, equivalence checks on redeclare
(406 with RabbitMQ's "inequivalent arg" text), exclusive ownership, auto-delete, durable
definitions written through to the metadata store. Reply texts are RabbitMQ's, without the
``CODE - `` prefix the front end adds.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..storage.api import BindingDefinition, ExchangeDefinition, MessageLog, MetadataStore, QueueDefinition
from . import featureset, routing, ttl_live
from .access.authorizer import UNRESTRICTED, Authorizer
from .access.limits import check_queue_count
from .argument_source import ArgumentSource, DeclaredOnly
from .arguments import (
    field_type,
    validate_exchange_arguments,
    validate_queue_arguments,
    validate_queue_properties,
)
from .deadletter import death_headers, died_in
from .errors import AccessRefused, CommandInvalid, NotFound, PreconditionFailed, ResourceLocked, StoreFailure
from .exchanges import Destination, Exchange, HeadersExchange, is_known_type, make_exchange
from .message import Codecs, Entry, Message
from .outcome import Outcome
from .queue import Queue
from .stats import VhostStats
from .ttl import drop_expired

if TYPE_CHECKING:
    from .tracing import Tracer

PREDECLARED = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
    "amq.rabbitmq.trace": "topic",
}
DEFAULT_EXCHANGE_REFUSED = "operation not permitted on the default exchange"


def _arguments_key(arguments: dict[str, Any]) -> str:
    """Bindings are identified by (source, destination, key, arguments): a canonical form of the arguments."""
    if not arguments:
        return ""
    return json.dumps(arguments, sort_keys=True, default=repr)


def _flag(value: bool) -> str:
    return "true" if value else "false"


class QueueNames(Protocol):
    """Where queues that live in one node's memory only (non-durable or exclusive) get a name that is
    unique over several nodes (mailslot.cluster.transient); None on a single node."""

    def claim(self, queue: QueueDefinition) -> bool:
        """Before such a queue is made here: True when this node now owns the name, False when another
        node does (the queue made here is a view of that node's); ResourceLocked when another node's
        queue of that name is exclusive, or this one is and the name is taken."""

    def made(self, queue: Queue, owned: bool) -> None:
        """The queue ``claim`` was asked about, just made here."""

    def released(self, queue: Queue) -> None:
        """Such a queue deleted here."""


class VirtualHost:
    def __init__(
        self,
        name: str,
        log: MessageLog,
        metadata: MetadataStore,
        codecs: Codecs,
        mark_dirty: Callable[[Queue], None],
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.log = log
        self.metadata = metadata
        self.codecs = codecs  # to rebuild messages read back from the store (StoredMessage.codec)
        self.mark_dirty = mark_dirty
        self.clock = clock
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        # Features' own rows in the message log, by store key (core/featureset.py StoreOwner): recovery
        # hands them their rows, the broker's feature timer ticks them.
        self.owners: dict[str, featureset.StoreOwner] = {}
        # Where effective arguments come from (policies); the broker sets it (Broker.arguments).
        self.arguments: ArgumentSource = DeclaredOnly()
        self.default_exchange = make_exchange("direct", "")
        self.exchanges[""] = self.default_exchange
        for name_, type_ in PREDECLARED.items():
            # The firehose exchange is internal in RabbitMQ: clients cannot publish to it (403).
            self.exchanges[name_] = make_exchange(type_, name_, durable=True, internal=name_ == "amq.rabbitmq.trace")
        # Per-vhost state of features that are not queue features, by the feature's own key (the
        # delayed-message exchanges' schedules: core/delayed.py ``messages``); the vhost names none of them.
        self.extensions: dict[str, object] = {}
        self.max_queues: int | None = None  # the vhost's max-queues limit (None or negative: none)
        self.stats = VhostStats()  # churn, dead-lettering and closed sessions' counters (core/stats.py)
        self.tracer: Tracer | None = None  # set while tracing is on (core/tracing.py)
        self.queue_names: QueueNames | None = None  # several nodes: unique names of transient queues

    # ---- naming ---------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"in vhost '{self.name}'"

    def exchange(self, name: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(f"no exchange '{name}' {self._where()}")
        return exchange

    def queue(self, name: str) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(f"no queue '{name}' {self._where()}")
        return queue

    # ---- exchanges ------------------------------------------------------------------------------

    def declare_exchange(
        self,
        name: str,
        type_: str,
        *,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: dict[str, Any],
        authz: Authorizer = UNRESTRICTED,
    ) -> Exchange:
        """As rabbit_channel's exchange.declare: passive only looks up (no permission needed); otherwise
        the type is checked (503, a connection error), the default exchange refused, configure permission
        checked, then equivalence for an existing exchange, or for a new one the reserved ``amq.`` prefix
        and, with an alternate exchange, read on this one and write on that one."""
        if passive:
            if not name:
                raise AccessRefused(DEFAULT_EXCHANGE_REFUSED)
            return self.exchange(name)
        if not is_known_type(type_):
            raise CommandInvalid(f"unknown exchange type '{type_}'")
        if not name:
            raise AccessRefused(DEFAULT_EXCHANGE_REFUSED)
        authz.configure("exchange", name)
        existing = self.exchanges.get(name)
        if existing is not None:
            self._check_equivalent(
                "exchange",
                name,
                [
                    ("type", existing.type, type_),
                    ("durable", existing.durable, durable),
                    ("auto_delete", existing.auto_delete, auto_delete),
                    ("internal", existing.internal, internal),
                ],
            )
            self._check_arguments("exchange", name, existing.arguments, arguments, EXCHANGE_EQUIVALENT_ARGS)
            return existing
        if name.startswith("amq."):
            raise AccessRefused(f"exchange name '{name}' contains reserved prefix 'amq.*'")
        alternate = arguments.get("alternate-exchange")
        if isinstance(alternate, (str, bytes)):
            authz.read("exchange", name)
            authz.write("exchange", _text(alternate))
        validate_exchange_arguments(type_, arguments)
        featureset.check_exchange(type_, arguments)
        exchange = make_exchange(
            type_, name, durable=durable, auto_delete=auto_delete, internal=internal, arguments=arguments
        )
        exchange.effective_arguments = self.arguments.exchange_arguments(self.name, name, arguments)
        self.exchanges[name] = exchange
        featureset.exchange_declared(self, exchange)
        if self._stored(exchange):
            self.metadata.save_exchange(
                ExchangeDefinition(name, type_, self.name, durable, auto_delete, internal, arguments)
            )
        return exchange

    def delete_exchange(
        self, name: str, *, if_unused: bool, authz: Authorizer = UNRESTRICTED, missing_ok: bool = False
    ) -> None:
        """As rabbit_channel's exchange.delete: the default and ``amq.*`` exchanges are refused, then
        configure permission is checked; ``missing_ok``: deleting a missing exchange is fine (AMQP)."""
        if not name:
            raise AccessRefused(DEFAULT_EXCHANGE_REFUSED)
        if name.startswith("amq."):
            raise AccessRefused(f"deletion of system exchange '{name}' {self._where()} not allowed")
        authz.configure("exchange", name)
        if missing_ok and name not in self.exchanges:
            return
        exchange = self.exchange(name)
        if if_unused and exchange.bindings:
            raise PreconditionFailed(f"exchange '{name}' {self._where()} in use")
        del self.exchanges[name]  # first: removing its bindings must not auto-delete it a second time
        featureset.exchange_deleted(self, exchange)
        for key in list(exchange.bindings):
            self._remove_binding(exchange, *key)
        for other in list(self.exchanges.values()):  # bindings *to* this exchange
            for dest, routing_key, args_key in other.unbind_destination(("exchange", name)):
                self._forget_binding(other, dest, routing_key, args_key)
        if self._stored(exchange):
            self.metadata.delete_exchange(self.name, name)

    def _stored(self, exchange: Exchange) -> bool:
        """Has the exchange a row? A durable one has; in a cluster (``queue_names``) a non-durable one too, so
        that every node has it and its bindings, as in a RabbitMQ cluster (it lives while the cluster runs)."""
        return exchange.durable or self.queue_names is not None

    # ---- bindings -------------------------------------------------------------------------------

    def bind(
        self,
        source: str,
        destination: Destination,
        routing_key: str,
        arguments: dict[str, Any],
        owner: object,
        authz: Authorizer = UNRESTRICTED,
    ) -> None:
        self._check_binding(source, destination, routing_key, authz)
        exchange = self._bindable(source)
        stored = self._destination(destination, owner)
        if isinstance(exchange, HeadersExchange):
            HeadersExchange.validate_binding(arguments)
        args_key = _arguments_key(arguments)
        if exchange.bind(destination, routing_key, arguments, args_key) and self._stored(exchange) and stored:
            self.metadata.save_binding(
                BindingDefinition(source, destination[1], destination[0], routing_key, self.name, args_key), arguments
            )

    def unbind(
        self,
        source: str,
        destination: Destination,
        routing_key: str,
        arguments: dict[str, Any],
        authz: Authorizer = UNRESTRICTED,
    ) -> None:
        """Unbinding what does not exist (binding, source or destination) is fine, as in RabbitMQ."""
        self._check_binding(source, destination, routing_key, authz)
        if not source or not destination[1]:
            raise AccessRefused(DEFAULT_EXCHANGE_REFUSED)
        exchange = self.exchanges.get(source)
        if exchange is not None:
            self._remove_binding(exchange, destination, routing_key, _arguments_key(arguments))

    def _check_binding(self, source: str, destination: Destination, routing_key: str, authz: Authorizer) -> None:
        """rabbit_channel:binding_action: write on the destination, neither end the default exchange, read
        on the source, and on a topic source the topic read permission for the routing key."""
        kind, name = destination
        authz.write(kind, name)  # type: ignore[arg-type]
        if (kind == "exchange" and not name) or not source:
            raise AccessRefused(DEFAULT_EXCHANGE_REFUSED)
        authz.read("exchange", source)
        exchange = self.exchanges.get(source)
        if exchange is not None and exchange.type == "topic":
            authz.topic("read", source, routing_key)

    def _bindable(self, source: str) -> Exchange:
        if not source:
            raise AccessRefused(DEFAULT_EXCHANGE_REFUSED)
        return self.exchange(source)

    def _destination(self, destination: Destination, owner: object) -> bool:
        """Check the destination; True when bindings to it are stored. In a cluster (``queue_names``) a
        non-durable or exclusive queue has a row too, so its bindings are stored for every node to route by."""
        kind, name = destination
        if kind == "queue":
            queue = self.queue(name)
            self.check_access(queue, owner)
            return queue.durable or self.queue_names is not None
        if not name:
            raise AccessRefused(DEFAULT_EXCHANGE_REFUSED)
        return self._stored(self.exchange(name))

    def _remove_binding(self, exchange: Exchange, destination: Destination, routing_key: str, args_key: str) -> None:
        if exchange.unbind(destination, routing_key, args_key):
            self._forget_binding(exchange, destination, routing_key, args_key)

    def _forget_binding(self, exchange: Exchange, destination: Destination, routing_key: str, args_key: str) -> None:
        self.metadata.delete_binding(
            BindingDefinition(exchange.name, destination[1], destination[0], routing_key, self.name, args_key)
        )
        if exchange.auto_delete and not exchange.bindings and exchange.name in self.exchanges:
            self.delete_exchange(exchange.name, if_unused=False)

    # ---- queues ---------------------------------------------------------------------------------

    def declare_queue(
        self,
        name: str,
        *,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: dict[str, Any],
        owner: object,
        authz: Authorizer = UNRESTRICTED,
        server_named: bool = False,
    ) -> Queue:
        """As rabbit_channel's queue.declare: passive only looks up (no permission needed); otherwise the
        reserved prefix, configure permission, then equivalence for an existing queue, or for a new one
        the vhost's queue limit (406) and, with a dead-letter exchange, read on the queue and write on it.
        ``server_named``: the name may have the reserved prefix (another node's server-named queue)."""
        self.stats.queues_declared += 1
        if passive:
            queue = self.queue(name)
            self.check_access(queue, owner)
            self._declared_again(queue)
            return queue
        if not name:
            name = "amq.gen-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        elif name.startswith("amq.") and not server_named:
            raise AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        authz.configure("queue", name)
        validate_queue_arguments(name, self.name, arguments)
        existing = self.queues.get(name)
        if existing is not None:
            self.check_access(existing, owner)
            if (existing.exclusive_owner is not None) != exclusive:
                raise self._locked(existing)
            self._check_equivalent(
                "queue",
                name,
                [("durable", existing.durable, durable), ("auto_delete", existing.auto_delete, auto_delete)],
            )
            self._check_queue_type(name, existing.arguments, arguments)
            self._check_arguments("queue", name, existing.arguments, arguments, QUEUE_EQUIVALENT_ARGS)
            self._declared_again(existing)
            return existing
        check_queue_count(self.name, name, self.max_queues, len(self.queues))
        dead_letter_exchange = arguments.get("x-dead-letter-exchange")
        if isinstance(dead_letter_exchange, (str, bytes)):
            authz.read("queue", name)
            authz.write("exchange", _text(dead_letter_exchange))
        validate_queue_properties(name, self.name, arguments, durable=durable, exclusive=exclusive, auto_delete=auto_delete)
        transient = self.queue_names is not None and not (durable and not exclusive)
        owned = transient and self.queue_names.claim(  # type: ignore[union-attr]
            QueueDefinition(name, self.name, durable, exclusive, auto_delete, arguments))
        queue = featureset.build_queue(
            self,
            name,
            durable=durable,
            exclusive_owner=owner if exclusive else None,
            auto_delete=auto_delete,
            arguments=arguments,
            effective=self.arguments.queue_arguments(self.name, name, arguments),
        )
        self.queues[name] = queue
        self.stats.queues_created += 1
        if durable and not exclusive:
            try:
                self.metadata.save_queue(QueueDefinition(name, self.name, durable, exclusive, auto_delete, arguments))
            except OSError as exc:  # the store is unreachable (a database outage): not stored, so not declared
                self._undeclare(queue)
                raise StoreFailure(f"queue '{name}' {self._where()} could not be stored: {exc}") from exc
            except BaseException:
                self._undeclare(queue)
                raise
        elif transient:
            self.queue_names.made(queue, owned)  # type: ignore[union-attr]
        return queue

    def _undeclare(self, queue: Queue) -> None:
        """A new queue whose definition could not be stored: gone again, nothing half-made left behind
        (no row, no lease), so the client's next declare starts afresh."""
        self.queues.pop(queue.name, None)
        self.stats.queues_created -= 1
        queue.deleted = True
        queue.set_features(())

    def _declared_again(self, queue: Queue) -> None:
        """A redeclaration renews the x-expires lease; declare-ok counts no expired head (core/ttl.py)."""
        if queue.expiry is not None:
            queue.expiry.used()
            drop_expired(queue)

    def _check_queue_type(self, name: str, current: dict[str, Any], received: dict[str, Any]) -> None:
        """As RabbitMQ 3.10: no x-queue-type is the same as "classic"; two explicit types are named bare."""
        old, new = current.get("x-queue-type"), received.get("x-queue-type")
        if old == new or {old, new} <= {None, "classic", b"classic"}:
            return
        if old is None or new is None:
            shown = (_describe(new), _describe(old))
        else:
            shown = (f"'{_text(new)}'", f"'{_text(old)}'")
        raise PreconditionFailed(
            f"inequivalent arg 'x-queue-type' for queue '{name}' {self._where()}: received {shown[0]} but current is {shown[1]}"
        )

    def expired(self, queue: Queue, entries: list[Entry]) -> None:
        """Entries past their TTL (core/ttl.py): dead-lettered with reason ``expired``."""
        self.dead_letter(queue, entries, "expired")

    def check_access(self, queue: Queue, owner: object) -> None:
        if queue.exclusive_owner is not None and queue.exclusive_owner is not owner:
            raise self._locked(queue)

    def _locked(self, queue: Queue) -> ResourceLocked:
        return ResourceLocked(
            f"cannot obtain exclusive access to locked queue '{queue.name}' {self._where()}. It could be "
            "originally declared on another connection or the exclusive property value does not match "
            "that of the original declaration."
        )

    def delete_queue(
        self, name: str, *, if_unused: bool, if_empty: bool, owner: object, authz: Authorizer = UNRESTRICTED
    ) -> int:
        authz.configure("queue", name)
        queue = self.queue(name)
        self.check_access(queue, owner)
        if if_unused and queue.consumers:
            raise PreconditionFailed(f"queue '{name}' {self._where()} in use")
        if if_empty and queue.message_count:
            raise PreconditionFailed(f"queue '{name}' {self._where()} not empty")
        return self.remove_queue(queue)

    def remove_queue(self, queue: Queue) -> int:
        """Delete without checks (auto-delete, exclusive owner gone). Consumers are cancelled by the caller."""
        count = queue.purge()
        queue.deleted = True
        self.queues.pop(queue.name, None)
        self.stats.queues_deleted += 1
        for exchange in list(self.exchanges.values()):
            for dest, routing_key, args_key in exchange.unbind_destination(("queue", queue.name)):
                self._forget_binding(exchange, dest, routing_key, args_key)
        if queue.durable:
            self.metadata.delete_queue(self.name, queue.name)
            ttl_live.forget(self.metadata, queue)
        if self.queue_names is not None and not (queue.durable and queue.exclusive_owner is None):
            self.queue_names.released(queue)
        queue.set_features(())  # each feature closes (a deduplication window drops its rows)
        return count

    # ---- effective arguments (policies) ------------------------------------------------------------

    def arguments_changed(self) -> list[Queue]:
        """Resolve every queue's and exchange's effective arguments again and reconfigure those whose
        changed (Broker.arguments_changed). Returns the queues reconfigured (the broker dispatches them)."""
        source = self.arguments
        changed: list[Queue] = []
        for queue in list(self.queues.values()):
            effective = source.queue_arguments(self.name, queue.name, queue.arguments)
            if effective == queue.effective_arguments:
                continue
            caps = queue.ttl_caps
            queue.reconfigure(effective)
            if queue.ttl_caps is not caps:  # a message-ttl set or lowered capped what is queued
                ttl_live.save(self.metadata, queue)
            if queue.dropped:  # a lowered max-length with drop-head: the excess is dead-lettered now
                dropped, queue.dropped = queue.dropped, []
                self.dead_letter(queue, dropped, "maxlen")
            if queue.expiring:
                drop_expired(queue)
            changed.append(queue)
        for exchange in list(self.exchanges.values()):
            if exchange is self.default_exchange:
                continue
            exchange.effective_arguments = source.exchange_arguments(self.name, exchange.name, exchange.arguments)
        return changed

    # ---- routing --------------------------------------------------------------------------------

    # route(exchange, routing_key, message, cc=()) -> the queues reached, following exchange-to-exchange
    # bindings and alternate exchanges (core/routing.py; a plain function, so no extra call per publish).
    route = routing.route

    # ---- dead-lettering --------------------------------------------------------------------------

    def enqueue(self, queue: Queue, message: Message) -> bool:
        """Enqueue into one queue, with the overflow rules' consequences; False when it refused it."""
        remote = queue.remote
        if remote is not None:  # another node owns it (mailslot.cluster): its rules apply there
            return remote.enqueue(queue, message)
        outcome = queue.enqueue(message)
        self.mark_dirty(queue)
        if outcome == Outcome.REJECTED:
            if queue.policy.overflow == "reject-publish-dlx":
                self.stats.count_dead_lettered("maxlen", queue.policy.dead_letter_exchange is not None, 1)
                self._dead_letter_message(queue, message, "maxlen")
            return False
        if queue.dropped:
            dropped, queue.dropped = queue.dropped, []
            self.dead_letter(queue, dropped, "maxlen")
        return True

    def dead_letter(self, queue: Queue, entries: list[Any], reason: str) -> None:
        """Entries leave ``queue`` other than by delivery (rejected, maxlen): republish them to its
        dead-letter exchange if it has one, then forget them in ``queue``."""
        self.stats.count_dead_lettered(reason, queue.policy.dead_letter_exchange is not None, len(entries))
        if self.tracer is not None:
            self.tracer.dead_lettered(queue, entries, reason)
        if queue.policy.dead_letter_exchange is not None:
            for entry in entries:
                self._dead_letter_message(queue, entry.message, reason)
        queue.settle(entries)

    def _dead_letter_message(self, queue: Queue, message: Message, reason: str) -> None:
        policy = queue.policy
        exchange = self.exchanges.get(policy.dead_letter_exchange or "")
        if exchange is None:
            return  # RabbitMQ drops a message whose dead-letter exchange does not exist
        old_headers = message.codec.headers(message.properties)
        headers = death_headers(
            old_headers,
            queue=queue.name,
            reason=reason,
            exchange=message.exchange,
            # As RabbitMQ 3.10 (rabbit_dead_letter): the publish's key and its CC keys, never BCC's.
            routing_keys=[message.routing_key, *routing.cc_header(old_headers)],
            now=self.clock(),
            original_expiration=message.expiration,
        )
        cc: tuple[str, ...] = ()
        if policy.dead_letter_routing_key:  # routed on that key alone, and CC goes
            routing_key = policy.dead_letter_routing_key
            headers.pop("CC", None)
        else:  # routed again on all its keys, BCC's included
            routing_key, cc = message.routing_key, routing.sender_keys(message)
        copy = Message(
            exchange.name, routing_key, message.with_headers(headers), message.body, message.persistent, message.codec
        )
        if cc:
            copy.cc = cc
        for target in self.route(exchange, routing_key, copy, cc):
            # A cycle without a rejection in it is cut, as in RabbitMQ (dlx.html, "Dead-Lettered Messages").
            if reason != "rejected" and reason in died_in(old_headers, target.name):
                continue
            self.enqueue(target, copy)

    def _check_arguments(
        self, kind: str, name: str, current: dict[str, Any], received: dict[str, Any], checked: frozenset[str]
    ) -> None:
        """RabbitMQ compares only the arguments it knows (rabbit_misc:assert_args_equivalence)."""
        for arg in sorted(checked & (set(current) | set(received))):
            if current.get(arg) != received.get(arg):
                raise PreconditionFailed(
                    f"inequivalent arg '{arg}' for {kind} '{name}' {self._where()}: "
                    "received {} but current is {}".format(*_describe_pair(received.get(arg), current.get(arg)))
                )

    def _check_equivalent(self, kind: str, name: str, pairs: list[tuple[str, Any, Any]]) -> None:
        for arg, current, received in pairs:
            if current != received:
                shown = (_flag(received), _flag(current)) if isinstance(current, bool) else (received, current)
                raise PreconditionFailed(
                    f"inequivalent arg '{arg}' for {kind} '{name}' {self._where()}: "
                    f"received '{shown[0]}' but current is '{shown[1]}'"
                )


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
def _describe_pair(received: Any, current: Any) -> tuple[str, str]:
    """rabbit_misc:assert_args_equivalence: two values of one type class are shown bare (``'6'``),
    otherwise with their types (``the value '6' of type 'signedint'``, ``none``)."""
    if received is not None and current is not None and _type_class(received) == _type_class(current):
        return _bare(received), _bare(current)
    return _describe(received), _describe(current)


def _type_class(value: Any) -> str:
    kind = field_type(value)
    return {"signedint": "int", "long": "int", "double": "float"}.get(kind, kind)


def _bare(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, bool):
        value = _flag(value)
    return f"'{value}'"


def _describe(value: Any) -> str:
    """RabbitMQ's wording: ``the value 'ae' of type 'longstr'`` or ``none``."""
    if value is None:
        return "none"
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return f"the value '{value}' of type '{field_type(value)}'"


# Arguments RabbitMQ 3.10 checks on redeclare (rabbit_amqqueue:declare_args, rabbit_exchange); others are ignored.
EXCHANGE_EQUIVALENT_ARGS = frozenset({"alternate-exchange"})
QUEUE_EQUIVALENT_ARGS = frozenset(
    {
        "x-expires",
        "x-message-ttl",
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-max-length",
        "x-max-length-bytes",
        "x-max-in-memory-length",
        "x-max-in-memory-bytes",
        "x-max-priority",
        "x-overflow",
        "x-queue-mode",
        "x-queue-version",
        "x-single-active-consumer",
        "x-queue-master-locator",
        "x-quorum-initial-group-size",
        "x-delivery-limit",
        "x-consumer-timeout",
        "x-retry-delays",
    }
)
