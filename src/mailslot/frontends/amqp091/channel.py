"""One AMQP channel: a core session plus what is AMQP-only (publisher confirms, the "last declared
queue" shorthand) and the table of channel methods, each handler typed with its pamqp method class."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import base
from pamqp import commands as spec

from ...core import errors as core_errors
from ...core.broker import OnCommit
from ...core.message import Entry, Message
from ...core.redelivery import delivery_properties
from ...core.session import REJECTED, REPLY_TO, UNROUTED, Session
from ...core.ttl import parse_expiration
from ...core.vhost import VirtualHost
from ...protocols.amqp091 import ReplyCode
from ...protocols.amqp091 import properties as props
from ...protocols.amqp091.codec import unchecked
from . import sender_selected, through_owner
from .confirms import ConfirmRelease, PublisherConfirms
from .properties import AMQP_CODEC, CHECKED_FLAGS, FLAG_HEADERS

if TYPE_CHECKING:
    from .connection import AMQPConnection

# Output buffered for one connection before its consumers stop getting deliveries until the
# transport has written it: bounds memory per slow consumer (RabbitMQ uses credit flow for this).
OUTPUT_HIGH_WATER = 4 * 1024 * 1024


class UnexpectedMethod(Exception):
    """A method a client may not send on a channel (a server-to-client method, or connection class)."""

    def __init__(self, method: base.Frame) -> None:
        super().__init__(method.name)
        self.method = method


class ConnectionFault(Exception):
    """The peer's request is a connection error that no core error names: 502 SYNTAX_ERROR for a
    malformed property block (AMQP's own bytes, which the core never sees)."""

    def __init__(self, code: ReplyCode, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


class Channel:
    """One AMQP channel: a core session plus confirms and the method table. Implements DeliverySink."""

    def __init__(self, connection: AMQPConnection, number: int, vhost: VirtualHost) -> None:
        self.connection = connection
        self.number = number
        self.session: Session = connection.broker.open_session(
            vhost, connection, self, connection.gate, connection.authz
        )
        self.confirms: PublisherConfirms | None = None  # set by confirm.select
        self.last_queue = ""  # "the last queue declared on this channel" (AMQP shorthand for empty names)

    # ---- DeliverySink ---------------------------------------------------------------------------

    def deliver_many(self, consumer_tag: str, first_tag: int, entries: list[Entry]) -> None:
        conn = self.connection
        send = conn.proto.send_deliver
        number = self.number
        tag = first_tag
        size = 0
        amqp = AMQP_CODEC
        for entry in entries:
            message = entry.message
            body = message.body
            send(
                number,
                consumer_tag,
                tag,
                entry.redelivered,
                message.exchange,
                message.routing_key,
                # As published (no decode), unless requeued (x-delivery-count) or published in another protocol.
                message.properties if message.codec is amqp and not entry.requeues else delivery_properties(entry, amqp),
                body,
            )
            tag += 1
            size += len(body)
        conn.buffered += size + 64 * len(entries)
        if conn.buffered > OUTPUT_HIGH_WATER:
            conn.gate.open = False
        conn.touch()

    def consumer_cancelled(self, consumer_tag: str) -> None:
        self.connection.proto.send_method(
            self.number, unchecked(spec.Basic.Cancel, consumer_tag=consumer_tag, nowait=True)
        )
        self.connection.touch()

    def acknowledgement_timed_out(self, timeout_ms: int) -> None:
        """RabbitMQ's words (rabbit_channel:evaluate_consumer_timeout)."""
        conn = self.connection
        if conn.channels.get(self.number) is not self or conn.closed:
            return  # already closing
        code = ReplyCode.PRECONDITION_FAILED
        text = (
            f"delivery acknowledgement on channel {self.number} timed out. Timeout value used: {timeout_ms} ms. "
            "This timeout value can be configured, see consumers doc guide to learn more"
        )
        conn.fail_channel(self, code, code.text(text))

    # ---- publishing -----------------------------------------------------------------------------

    def publish(self, method: spec.Basic.Publish, properties: bytes, body: bytes) -> None:
        conn = self.connection
        conn.publisher = True  # resource alarms block connections that publish (docs/backpressure.md)
        if method.immediate:
            raise core_errors.NotImplementedFeature("immediate=true")
        ttl = None
        cc = sender_selected.NONE
        try:
            flags = ((properties[0] << 8) | properties[1]) if len(properties) >= 2 else 0
            if flags & CHECKED_FLAGS:
                properties, ttl = self.check_properties(properties)
            # CC or BCC, maybe: no "C" byte at all (a memchr, ~10 ns) rules both out; then "CC" (~80 ns).
            if flags & FLAG_HEADERS and 0x43 in properties and properties.find(sender_selected.MARKER) >= 0:
                cc, properties = self.sender_selected(method.exchange, properties)
            persistent = props.delivery_mode(properties) == 2
        except ValueError as error:  # the peer's bytes, not our bug: a hard syntax error, not 541
            raise ConnectionFault(
                ReplyCode.SYNTAX_ERROR, f"malformed content header properties ({error})"
            ) from None
        message = Message(method.exchange, method.routing_key, properties, body, persistent, AMQP_CODEC, ttl)
        confirms = self.confirms
        broker = conn.broker
        if confirms is not None:
            confirms.published += 1
            broker.publishing = confirms  # a queue on another node may refuse it later (Broker.publishing)
        try:
            if cc:
                message.cc = cc  # dead-lettering routes on them again (core/routing.py sender_keys)
                outcome = self.session.publish(method.exchange, method.routing_key, message, method.mandatory, cc)
            else:
                outcome = self.session.publish(method.exchange, method.routing_key, message, method.mandatory)
        finally:
            broker.publishing = None
        if confirms is not None:
            if outcome == REJECTED:
                confirms.rejected.append(confirms.published)
            if not confirms.hooked:
                confirms.hooked = True
                broker.after_commit(ConfirmRelease(confirms, self.release_confirms))
        if outcome == UNROUTED and method.mandatory:
            self.send_return(method.exchange, method.routing_key, properties, body)

    def sender_selected(self, exchange: str, properties: bytes) -> tuple[tuple[str, ...], bytes]:
        """CC/BCC routing keys and the properties without BCC (sender_selected.py). A refused header is
        406, after the 404 of a missing exchange, as rabbit_channel orders them."""
        try:
            return sender_selected.read(properties)
        except core_errors.PreconditionFailed:
            vhost = self.session.vhost
            if exchange not in vhost.exchanges:
                raise core_errors.NotFound(f"no exchange '{exchange}' in vhost '{vhost.name}'") from None
            raise

    def send_return(self, exchange: str, routing_key: str, properties: bytes, body: bytes) -> None:
        """basic.return 312 NO_ROUTE for an unroutable mandatory publish."""
        self.session.stats_returned += 1
        method = unchecked(
            spec.Basic.Return, reply_code=ReplyCode.NO_ROUTE, reply_text="NO_ROUTE", exchange=exchange,
            routing_key=routing_key
        )
        self.connection.proto.send_content(self.number, method, properties, body)
        self.connection.touch()

    def check_properties(self, raw: bytes) -> tuple[bytes, int | None]:
        """Direct reply-to rewrites reply_to; user_id must be the authenticated user (RabbitMQ validates it);
        expiration is read as the message's TTL (406 when it is no count of ms, as RabbitMQ)."""
        decoded = props.decode_properties(raw)
        user_id = decoded.user_id
        if user_id is not None and user_id != self.connection.username and not self.connection.impersonator:
            raise core_errors.PreconditionFailed(
                f"user_id property set to '{user_id}' but authenticated user was '{self.connection.username}'"
            )
        # after user_id, as RabbitMQ
        ttl = None if decoded.expiration is None else parse_expiration(str(decoded.expiration))
        if decoded.reply_to == REPLY_TO:
            if self.session.reply_name is None:
                raise core_errors.PreconditionFailed("fast reply consumer does not exist")
            decoded.reply_to = self.session.reply_name
            return props.encode_properties(decoded), ttl
        return raw, ttl

    def release_confirms(self, upto: int, ok: bool) -> None:
        """After the group commit (see confirms.py)."""
        confirms = self.confirms
        if confirms is None or self.session.closed:
            return
        acked = confirms.acked
        if confirms.release(self.connection.proto, self.number, upto, ok):
            self.session.stats_confirmed += confirms.acked - acked
            self.connection.touch()

    # ---- methods --------------------------------------------------------------------------------

    def handle(self, method: base.Frame) -> None:
        handler = _METHODS.get(type(method))
        if handler is None:
            raise UnexpectedMethod(method)
        handler(self, method)

    def reply(self, method: base.Frame) -> None:
        self.connection.proto.send_method(self.number, method)
        self.connection.touch()

    def _queue_name(self, name: str) -> str:
        if name:
            return name
        if not self.last_queue:
            raise core_errors.NotFound("no previously declared queue")
        return self.last_queue

    def exchange_declare(self, m: spec.Exchange.Declare) -> None:
        self.session.vhost.declare_exchange(
            m.exchange,
            m.exchange_type,
            passive=m.passive,
            durable=m.durable,
            auto_delete=m.auto_delete,
            internal=m.internal,
            arguments=m.arguments or {},
            authz=self.session.authz,
        )
        if not m.nowait:
            self.reply(spec.Exchange.DeclareOk())

    def exchange_delete(self, m: spec.Exchange.Delete) -> None:
        self.session.vhost.delete_exchange(
            m.exchange, if_unused=m.if_unused, authz=self.session.authz, missing_ok=True
        )
        if not m.nowait:
            self.reply(spec.Exchange.DeleteOk())

    def exchange_bind(self, m: spec.Exchange.Bind) -> None:
        self.session.vhost.bind(
            m.source, ("exchange", m.destination), m.routing_key, m.arguments or {}, self.connection,
            self.session.authz,
        )
        if not m.nowait:
            self.reply(spec.Exchange.BindOk())

    def exchange_unbind(self, m: spec.Exchange.Unbind) -> None:
        self.session.vhost.unbind(
            m.source, ("exchange", m.destination), m.routing_key, m.arguments or {}, self.session.authz
        )
        if not m.nowait:
            self.reply(spec.Exchange.UnbindOk())

    def queue_declare(self, m: spec.Queue.Declare) -> None:
        vhost = self.session.vhost
        if m.queue == REPLY_TO:  # RabbitMQ answers for the pseudo-queue, passive or not, with one consumer
            name, messages, consumers = m.queue, 0, 1
        else:
            queue = vhost.declare_queue(
                m.queue,
                passive=m.passive,
                durable=m.durable,
                exclusive=m.exclusive,
                auto_delete=m.auto_delete,
                arguments=m.arguments or {},
                owner=self.connection,
                authz=self.session.authz,
            )
            name, messages, consumers = queue.name, queue.message_count, len(queue.consumers)
        self.last_queue = name
        if not m.nowait:
            self.reply(
                unchecked(spec.Queue.DeclareOk, queue=name, message_count=messages, consumer_count=consumers)
            )

    def _queue_and_key(self, m: spec.Queue.Bind | spec.Queue.Unbind) -> tuple[str, str]:
        """Empty queue name: the last declared queue; then an empty key too: that queue's name (spec 1.7.2.3)."""
        queue = self._queue_name(m.queue)
        return queue, (m.routing_key if (m.routing_key or m.queue) else queue)

    def queue_bind(self, m: spec.Queue.Bind) -> None:
        queue, routing_key = self._queue_and_key(m)
        self.session.vhost.bind(
            m.exchange, ("queue", queue), routing_key, m.arguments or {}, self.connection, self.session.authz
        )
        if not m.nowait:
            self.reply(spec.Queue.BindOk())

    def queue_unbind(self, m: spec.Queue.Unbind) -> None:
        queue, routing_key = self._queue_and_key(m)
        self.session.vhost.unbind(m.exchange, ("queue", queue), routing_key, m.arguments or {}, self.session.authz)
        self.reply(spec.Queue.UnbindOk())

    def queue_purge(self, m: spec.Queue.Purge) -> None:
        vhost = self.session.vhost
        name = self._queue_name(m.queue)
        self.session.authz.read("queue", name)  # rabbit_channel: before the lookup
        queue = vhost.queue(name)
        vhost.check_access(queue, self.connection)
        if queue.remote is not None:  # another node of the cluster owns it: purged there
            through_owner.purge(self, queue, m.nowait)
            return
        count = queue.purge()
        if not m.nowait:
            self.reply(spec.Queue.PurgeOk(message_count=count))

    def queue_delete(self, m: spec.Queue.Delete) -> None:
        vhost = self.session.vhost
        name = self._queue_name(m.queue)
        self.session.authz.configure("queue", name)  # rabbit_channel: before the lookup
        count = 0
        queue = vhost.queues.get(name)
        if queue is not None:  # deleting a missing queue is not an error in RabbitMQ
            vhost.check_access(queue, self.connection)
            if m.if_unused and queue.consumers:
                raise core_errors.PreconditionFailed(f"queue '{name}' in vhost '{vhost.name}' in use")
            if queue.remote is not None:  # another node of the cluster owns it: its count is the owner's
                through_owner.delete(self, vhost, queue, m.if_empty, m.nowait)
                return
            if m.if_empty and queue.message_count:
                raise core_errors.PreconditionFailed(f"queue '{name}' in vhost '{vhost.name}' not empty")
            count = self.connection.broker.delete_queue(vhost, queue)
        if not m.nowait:
            self.reply(spec.Queue.DeleteOk(message_count=count))

    def basic_qos(self, m: spec.Basic.Qos) -> None:
        self.session.qos(m.prefetch_size, m.prefetch_count, m.global_)
        self.reply(spec.Basic.QosOk())

    def basic_consume(self, m: spec.Basic.Consume) -> None:
        queue = self._queue_name(m.queue)
        tag = self.session.consume(
            queue, m.consumer_tag, no_ack=m.no_ack, exclusive=m.exclusive, arguments=m.arguments or {}
        )
        if not m.nowait:
            # consume-ok must precede the first delivery: deliveries go out at the next flush.
            self.reply(unchecked(spec.Basic.ConsumeOk, consumer_tag=tag))

    def basic_cancel(self, m: spec.Basic.Cancel) -> None:
        self.session.cancel(m.consumer_tag or "")
        if not m.nowait:
            self.reply(unchecked(spec.Basic.CancelOk, consumer_tag=m.consumer_tag))

    def basic_get(self, m: spec.Basic.Get) -> None:
        name = self._queue_name(m.queue)
        queue = self.session.vhost.queues.get(name)
        if queue is not None and queue.remote is not None:  # another node of the cluster owns it: got there
            through_owner.get(self, self.session.readable(name), m.no_ack)
            return
        got = self.session.get(name, no_ack=m.no_ack)
        if got is None:
            self.reply(spec.Basic.GetEmpty())
            return
        self.send_get_ok(*got)

    def send_get_ok(self, tag: int, entry: Entry, remaining: int) -> None:
        message = entry.message
        self.connection.proto.send_content(
            self.number,
            unchecked(
                spec.Basic.GetOk,
                delivery_tag=tag,
                redelivered=entry.redelivered,
                exchange=message.exchange,
                routing_key=message.routing_key,
                message_count=remaining,
            ),
            delivery_properties(entry, AMQP_CODEC),
            message.body,
        )
        self.connection.touch()

    def basic_ack(self, m: spec.Basic.Ack) -> None:
        self.session.ack(m.delivery_tag, m.multiple)

    def basic_nack(self, m: spec.Basic.Nack) -> None:
        self.session.nack(m.delivery_tag, m.multiple, m.requeue)

    def basic_reject(self, m: spec.Basic.Reject) -> None:
        self.session.nack(m.delivery_tag or 0, False, m.requeue)

    def basic_recover(self, m: spec.Basic.Recover) -> None:
        self.session.recover(m.requeue)
        self.reply(spec.Basic.RecoverOk())

    def basic_recover_async(self, m: spec.Basic.RecoverAsync) -> None:
        self.session.recover(m.requeue)

    def confirm_select(self, m: spec.Confirm.Select) -> None:
        if self.session.tx is not None:
            raise core_errors.PreconditionFailed("cannot switch from tx to confirm mode")
        if self.confirms is None:
            self.confirms = PublisherConfirms()
        if not m.nowait:
            self.reply(spec.Confirm.SelectOk())

    def tx_select(self, m: spec.Tx.Select) -> None:
        if self.confirms is not None:
            raise core_errors.PreconditionFailed("cannot switch from confirm to tx mode")
        self.session.tx_select()
        self.reply(spec.Tx.SelectOk())

    def tx_commit(self, m: spec.Tx.Commit) -> None:
        for exchange, routing_key, message in self.session.tx_commit():  # unroutable mandatory ones
            self.send_return(exchange, routing_key, message.properties_for(AMQP_CODEC), message.body)

        def committed(ok: bool) -> None:  # commit-ok only once the transaction is on disk
            if self.session.closed:
                return
            if ok:
                self.reply(spec.Tx.CommitOk())
            else:
                code = ReplyCode.INTERNAL_ERROR
                self.connection.fail_channel(self, code, code.text("store write failed"))

        self.connection.broker.after_commit(OnCommit(committed))
        self.connection.touch()

    def tx_rollback(self, m: spec.Tx.Rollback) -> None:
        self.session.tx_rollback()
        self.reply(spec.Tx.RollbackOk())

    def channel_flow(self, m: spec.Channel.Flow) -> None:
        self.session.flow(bool(m.active))

    def channel_flow_ok(self, m: spec.Channel.FlowOk) -> None:
        pass  # we never send channel.flow; tolerate a stray reply


#: The channel methods a client may send, by pamqp class (anything else: 503 COMMAND_INVALID).
_METHODS: dict[type[base.Frame], Callable[[Channel, Any], None]] = {
    spec.Exchange.Declare: Channel.exchange_declare,
    spec.Exchange.Delete: Channel.exchange_delete,
    spec.Exchange.Bind: Channel.exchange_bind,
    spec.Exchange.Unbind: Channel.exchange_unbind,
    spec.Queue.Declare: Channel.queue_declare,
    spec.Queue.Bind: Channel.queue_bind,
    spec.Queue.Unbind: Channel.queue_unbind,
    spec.Queue.Purge: Channel.queue_purge,
    spec.Queue.Delete: Channel.queue_delete,
    spec.Basic.Qos: Channel.basic_qos,
    spec.Basic.Consume: Channel.basic_consume,
    spec.Basic.Cancel: Channel.basic_cancel,
    spec.Basic.Get: Channel.basic_get,
    spec.Basic.Ack: Channel.basic_ack,
    spec.Basic.Nack: Channel.basic_nack,
    spec.Basic.Reject: Channel.basic_reject,
    spec.Basic.Recover: Channel.basic_recover,
    spec.Basic.RecoverAsync: Channel.basic_recover_async,
    spec.Confirm.Select: Channel.confirm_select,
    spec.Tx.Select: Channel.tx_select,
    spec.Tx.Commit: Channel.tx_commit,
    spec.Tx.Rollback: Channel.tx_rollback,
    spec.Channel.Flow: Channel.channel_flow,
    spec.Channel.FlowOk: Channel.channel_flow_ok,
}
