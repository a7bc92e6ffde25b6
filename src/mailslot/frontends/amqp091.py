"""AMQP 0-9-1 front end: protocol events onto core sessions, core results onto frames and reply codes.

One ``AMQPConnection`` per client connection wraps the sans-IO ``ServerConnection`` (framing,
negotiation, content assembly, heartbeats) and holds one ``Channel`` per open channel. A channel
is a core ``Session`` plus what is AMQP-only: publisher confirms, the "last declared queue"
shorthand, and the method table. Nothing here does I/O: the transport feeds bytes in and takes
``data_to_send()`` out after the broker's flush.
"""

from __future__ import annotations

import ipaddress
import logging
import platform
from collections.abc import Callable
from typing import Any

from pamqp import commands as spec

from .. import __version__
from ..core import errors as core_errors
from ..core.broker import Broker, OnCommit
from ..core.message import Entry, Message
from ..core.peer import PeerCertificate
from ..core.redelivery import delivery_properties
from ..core.session import REJECTED, REPLY_TO, UNROUTED, Gate, Session
from ..core.ttl import parse_expiration
from ..core.vhost import CommandInvalid
from ..protocols import amqp091 as proto
from ..protocols.amqp091 import properties as props
from ..protocols.amqp091.codec import unchecked

log = logging.getLogger("mailslot.amqp")

# Core errors onto AMQP reply codes (AMQP 0-9-1 spec section 1.9; RabbitMQ's choice of code for each case).
REPLY_CODES: dict[type[core_errors.BrokerError], int] = {
    core_errors.NotFound: proto.NOT_FOUND,
    core_errors.ResourceLocked: proto.RESOURCE_LOCKED,
    core_errors.PreconditionFailed: proto.PRECONDITION_FAILED,
    core_errors.AccessRefused: proto.ACCESS_REFUSED,
    core_errors.NotAllowed: proto.NOT_ALLOWED,
    core_errors.NotImplementedFeature: proto.NOT_IMPLEMENTED,
    core_errors.StoreFailure: proto.INTERNAL_ERROR,
}

# Output buffered for one connection before its consumers stop getting deliveries until the
# transport has written it: bounds memory per slow consumer (RabbitMQ uses credit flow for this).
OUTPUT_HIGH_WATER = 4 * 1024 * 1024

FLAG_REPLY_TO = 1 << 9  # property-flag bits (AMQP 0-9-1 spec 4.2.6.1, basic class properties)
FLAG_USER_ID = 1 << 4
FLAG_EXPIRATION = 1 << 8
# A publish with any of these properties takes the slow path (_check_properties); others cost one test.
CHECKED_FLAGS = FLAG_REPLY_TO | FLAG_USER_ID | FLAG_EXPIRATION


def server_properties() -> dict[str, Any]:
    return {
        "product": "mailslot",
        "version": __version__,
        "platform": f"Python {platform.python_version()}",
        "copyright": "mailslot contributors",
        "information": "Licensed under the Apache License 2.0",
        "capabilities": {
            "publisher_confirms": True,
            "exchange_exchange_bindings": True,
            "basic.nack": True,
            "consumer_cancel_notify": True,
            "connection.blocked": True,
            "authentication_failure_close": True,
            "per_consumer_qos": True,
            "direct_reply_to": True,
        },
    }


class AMQPPropertiesCodec:
    """The core's PropertiesCodec for AMQP 0-9-1 property blocks (headers routing, dead-lettering)."""

    @staticmethod
    def headers(raw: bytes) -> dict[str, Any] | None:
        """A headers table that does not decode reads as no headers: the peer's bytes must never
        raise inside the core (routing, paging back in, dead-lettering)."""
        try:
            return props.headers(raw)
        except ValueError:
            return None

    @staticmethod
    def expiration(raw: bytes) -> str | None:
        value = props.decode_properties(raw).expiration
        return None if value is None else str(value)

    @staticmethod
    def priority(raw: bytes) -> int:
        """Read only for queues with x-max-priority; a malformed block reads as priority 0."""
        try:
            return props.priority(raw)
        except ValueError:
            return 0

    @staticmethod
    def header(raw: bytes, name: str) -> Any:
        try:
            return props.header(raw, name)
        except ValueError:
            return None

    @staticmethod
    def message_id(raw: bytes) -> str | None:
        try:
            return props.message_id(raw)
        except ValueError:
            return None

    @staticmethod
    def with_headers(raw: bytes, headers: dict[str, Any]) -> bytes:
        decoded = props.decode_properties(raw)
        decoded.headers = headers
        decoded.expiration = None
        return props.encode_properties(decoded)

    @staticmethod
    def with_int_header(raw: bytes, name: str, value: int) -> bytes:
        return props.with_int_header(raw, name, value)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host in ("localhost", "")


class Channel:
    """One AMQP channel: a core session plus confirms and the method table. Implements DeliverySink."""

    def __init__(self, connection: AMQPConnection, number: int) -> None:
        self.connection = connection
        self.number = number
        self.session: Session = connection.broker.open_session(
            connection.vhost, connection, self, connection.gate
        )
        self.confirming = False
        self.published = 0  # publish sequence number in confirm mode
        self.confirmed = 0
        self.rejected: list[int] = []  # publish sequence numbers a full queue refused: nacked
        self.hooked = False
        self.last_queue = ""  # "the last queue declared on this channel" (AMQP shorthand for empty names)

    # ---- DeliverySink ---------------------------------------------------------------------------

    def deliver_many(self, consumer_tag: str, first_tag: int, entries: list[Entry]) -> None:
        conn = self.connection
        send = conn.proto.send_deliver
        number = self.number
        tag = first_tag
        size = 0
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
                delivery_properties(conn.broker.codec, entry) if entry.requeues else message.properties,
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
        text = (
            f"delivery acknowledgement on channel {self.number} timed out. Timeout value used: {timeout_ms} ms. "
            "This timeout value can be configured, see consumers doc guide to learn more"
        )
        conn.fail_channel(self, proto.PRECONDITION_FAILED, proto.reply_text(proto.PRECONDITION_FAILED, text))

    # ---- publishing -----------------------------------------------------------------------------

    def publish(self, method: Any, properties: bytes, body: bytes) -> None:
        conn = self.connection
        conn.publisher = True  # resource alarms block connections that publish (docs/backpressure.md)
        if method.immediate:
            raise core_errors.NotImplementedFeature("immediate=true")
        ttl = None
        try:
            if len(properties) >= 2 and ((properties[0] << 8) | properties[1]) & CHECKED_FLAGS:
                properties, ttl = self._check_properties(properties)
            persistent = props.delivery_mode(properties) == 2
        except ValueError as error:  # the peer's bytes, not our bug: a hard syntax error, not 541
            raise ConnectionFault(
                proto.SYNTAX_ERROR, f"malformed content header properties ({error})"
            ) from None
        message = Message(
            method.exchange, method.routing_key, properties, body, persistent, AMQPPropertiesCodec.headers, ttl
        )
        if self.confirming:
            self.published += 1
        outcome = self.session.publish(method.exchange, method.routing_key, message, method.mandatory)
        if outcome == REJECTED and self.confirming:
            self.rejected.append(self.published)
        if outcome == UNROUTED and method.mandatory:
            self.send_return(method.exchange, method.routing_key, properties, body)
        if self.confirming and not self.hooked:
            self.hooked = True
            conn.broker.after_commit(_ConfirmRelease(self))

    def send_return(self, exchange: str, routing_key: str, properties: bytes, body: bytes) -> None:
        """basic.return 312 NO_ROUTE for an unroutable mandatory publish."""
        self.session.stats_returned += 1
        method = unchecked(
            spec.Basic.Return, reply_code=proto.NO_ROUTE, reply_text="NO_ROUTE", exchange=exchange, routing_key=routing_key
        )
        self.connection.proto.send_content(self.number, method, properties, body)
        self.connection.touch()

    def _check_properties(self, raw: bytes) -> tuple[bytes, int | None]:
        """Direct reply-to rewrites reply_to; user_id must be the authenticated user (RabbitMQ validates it);
        expiration is read as the message's TTL (406 when it is no count of ms, as RabbitMQ)."""
        decoded = props.decode_properties(raw)
        user_id = decoded.user_id
        if user_id is not None and user_id != self.connection.username:
            raise core_errors.PreconditionFailed(
                f"user_id property set to '{user_id}' but authenticated user was '{self.connection.username}'"
            )
        ttl = None if decoded.expiration is None else parse_expiration(str(decoded.expiration))  # after user_id, as RabbitMQ
        if decoded.reply_to == REPLY_TO:
            if self.session.reply_name is None:
                raise core_errors.PreconditionFailed("fast reply consumer does not exist")
            decoded.reply_to = self.session.reply_name
            return props.encode_properties(decoded), ttl
        return raw, ttl

    def release_confirms(self, upto: int, ok: bool) -> None:
        """After the group commit: one basic.ack (multiple) for everything its batch covers, with a
        basic.nack for each publish a full queue rejected (x-overflow reject-publish)."""
        if upto <= self.confirmed or self.session.closed:
            return
        proto, number = self.connection.proto, self.number
        cursor = self.confirmed
        if not ok:
            proto.send_nack(number, upto, upto - cursor > 1)
        else:
            nacks = [seq for seq in self.rejected if seq <= upto]
            if nacks:
                self.rejected = [seq for seq in self.rejected if seq > upto]
            for seq in nacks:
                if seq - 1 > cursor:
                    proto.send_ack(number, seq - 1, seq - 1 - cursor > 1)
                proto.send_nack(number, seq, False)
                cursor = seq
            if upto > cursor:
                proto.send_ack(number, upto, upto - cursor > 1)
            self.session.stats_confirmed += upto - self.confirmed - len(nacks)
        self.confirmed = upto
        self.connection.touch()

    # ---- methods --------------------------------------------------------------------------------

    def handle(self, method: Any) -> None:
        handler = _METHODS.get(method.name)
        if handler is None:
            raise UnexpectedMethod(method)
        handler(self, method)

    def reply(self, method: Any) -> None:
        self.connection.proto.send_method(self.number, method)
        self.connection.touch()

    def _queue_name(self, name: str) -> str:
        if name:
            return name
        if not self.last_queue:
            raise core_errors.NotFound("no previously declared queue")
        return self.last_queue

    def exchange_declare(self, m: Any) -> None:
        try:
            self.session.vhost.declare_exchange(
                m.exchange,
                m.exchange_type,
                passive=m.passive,
                durable=m.durable,
                auto_delete=m.auto_delete,
                internal=m.internal,
                arguments=m.arguments or {},
            )
        except CommandInvalid as error:
            raise ConnectionFault(proto.COMMAND_INVALID, error.text) from None
        if not m.nowait:
            self.reply(spec.Exchange.DeclareOk())

    def exchange_delete(self, m: Any) -> None:
        vhost = self.session.vhost
        if m.exchange in vhost.exchanges or not m.exchange or m.exchange.startswith("amq."):
            vhost.delete_exchange(m.exchange, if_unused=m.if_unused)
        if not m.nowait:
            self.reply(spec.Exchange.DeleteOk())

    def exchange_bind(self, m: Any) -> None:
        self.session.vhost.bind(
            m.source, ("exchange", m.destination), m.routing_key, m.arguments or {}, self.connection
        )
        if not m.nowait:
            self.reply(spec.Exchange.BindOk())

    def exchange_unbind(self, m: Any) -> None:
        self.session.vhost.unbind(m.source, ("exchange", m.destination), m.routing_key, m.arguments or {})
        if not m.nowait:
            self.reply(spec.Exchange.UnbindOk())

    def queue_declare(self, m: Any) -> None:
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
            )
            name, messages, consumers = queue.name, queue.message_count, len(queue.consumers)
        self.last_queue = name
        if not m.nowait:
            self.reply(
                unchecked(spec.Queue.DeclareOk, queue=name, message_count=messages, consumer_count=consumers)
            )

    def _queue_and_key(self, m: Any) -> tuple[str, str]:
        """Empty queue name: the last declared queue; then an empty key too: that queue's name (spec 1.7.2.3)."""
        queue = self._queue_name(m.queue)
        return queue, (m.routing_key if (m.routing_key or m.queue) else queue)

    def queue_bind(self, m: Any) -> None:
        queue, routing_key = self._queue_and_key(m)
        self.session.vhost.bind(m.exchange, ("queue", queue), routing_key, m.arguments or {}, self.connection)
        if not m.nowait:
            self.reply(spec.Queue.BindOk())

    def queue_unbind(self, m: Any) -> None:
        queue, routing_key = self._queue_and_key(m)
        self.session.vhost.unbind(m.exchange, ("queue", queue), routing_key, m.arguments or {})
        self.reply(spec.Queue.UnbindOk())

    def queue_purge(self, m: Any) -> None:
        vhost = self.session.vhost
        queue = vhost.queue(self._queue_name(m.queue))
        vhost.check_access(queue, self.connection)
        count = queue.purge()
        if not m.nowait:
            self.reply(spec.Queue.PurgeOk(message_count=count))

    def queue_delete(self, m: Any) -> None:
        vhost = self.session.vhost
        name = self._queue_name(m.queue)
        count = 0
        queue = vhost.queues.get(name)
        if queue is not None:  # deleting a missing queue is not an error in RabbitMQ
            vhost.check_access(queue, self.connection)
            if m.if_unused and queue.consumers:
                raise core_errors.PreconditionFailed(f"queue '{name}' in vhost '{vhost.name}' in use")
            if m.if_empty and queue.message_count:
                raise core_errors.PreconditionFailed(f"queue '{name}' in vhost '{vhost.name}' not empty")
            count = self.connection.broker.delete_queue(vhost, queue)
        if not m.nowait:
            self.reply(spec.Queue.DeleteOk(message_count=count))

    def basic_qos(self, m: Any) -> None:
        self.session.qos(m.prefetch_size, m.prefetch_count, m.global_)
        self.reply(spec.Basic.QosOk())

    def basic_consume(self, m: Any) -> None:
        queue = self._queue_name(m.queue)
        tag = self.session.consume(
            queue, m.consumer_tag, no_ack=m.no_ack, exclusive=m.exclusive, arguments=m.arguments or {}
        )
        if not m.nowait:
            # consume-ok must precede the first delivery: deliveries go out at the next flush.
            self.reply(unchecked(spec.Basic.ConsumeOk, consumer_tag=tag))

    def basic_cancel(self, m: Any) -> None:
        self.session.cancel(m.consumer_tag)
        if not m.nowait:
            self.reply(unchecked(spec.Basic.CancelOk, consumer_tag=m.consumer_tag))

    def basic_get(self, m: Any) -> None:
        got = self.session.get(self._queue_name(m.queue), no_ack=m.no_ack)
        if got is None:
            self.reply(spec.Basic.GetEmpty())
            return
        tag, entry, remaining = got
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
            delivery_properties(self.connection.broker.codec, entry) if entry.requeues else message.properties,
            message.body,
        )
        self.connection.touch()

    def basic_ack(self, m: Any) -> None:
        self.session.ack(m.delivery_tag, m.multiple)

    def basic_nack(self, m: Any) -> None:
        self.session.nack(m.delivery_tag, m.multiple, m.requeue)

    def basic_reject(self, m: Any) -> None:
        self.session.nack(m.delivery_tag, False, m.requeue)

    def basic_recover(self, m: Any) -> None:
        self.session.recover(m.requeue)
        self.reply(spec.Basic.RecoverOk())

    def basic_recover_async(self, m: Any) -> None:
        self.session.recover(m.requeue)

    def confirm_select(self, m: Any) -> None:
        if self.session.tx is not None:
            raise core_errors.PreconditionFailed("cannot switch from tx to confirm mode")
        self.confirming = True
        if not m.nowait:
            self.reply(spec.Confirm.SelectOk())

    def tx_select(self, m: Any) -> None:
        if self.confirming:
            raise core_errors.PreconditionFailed("cannot switch from confirm to tx mode")
        self.session.tx_select()
        self.reply(spec.Tx.SelectOk())

    def tx_commit(self, m: Any) -> None:
        for exchange, routing_key, message in self.session.tx_commit():  # unroutable mandatory ones
            self.send_return(exchange, routing_key, message.properties, message.body)

        def committed(ok: bool) -> None:  # commit-ok only once the transaction is on disk
            if self.session.closed:
                return
            if ok:
                self.reply(spec.Tx.CommitOk())
            else:
                self.connection.fail_channel(
                    self, proto.INTERNAL_ERROR, "INTERNAL_ERROR - store write failed"
                )

        self.connection.broker.after_commit(OnCommit(committed))
        self.connection.touch()

    def tx_rollback(self, m: Any) -> None:
        self.session.tx_rollback()
        self.reply(spec.Tx.RollbackOk())

    def channel_flow(self, m: Any) -> None:
        self.session.flow(m.active)

    def channel_flow_ok(self, m: Any) -> None:
        pass  # we never send channel.flow; tolerate a stray reply


class _ConfirmRelease:
    """Commit waiter of one confirm channel for one batch: acks what was published before the cut."""

    __slots__ = ("channel", "upto")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.upto = 0

    def batch_cut(self) -> None:
        self.upto = self.channel.published
        self.channel.hooked = False  # later publishes wait for the next batch

    def committed(self, ok: bool) -> None:
        self.channel.release_confirms(self.upto, ok)


_METHODS: dict[str, Callable[[Channel, Any], None]] = {
    "Exchange.Declare": Channel.exchange_declare,
    "Exchange.Delete": Channel.exchange_delete,
    "Exchange.Bind": Channel.exchange_bind,
    "Exchange.Unbind": Channel.exchange_unbind,
    "Queue.Declare": Channel.queue_declare,
    "Queue.Bind": Channel.queue_bind,
    "Queue.Unbind": Channel.queue_unbind,
    "Queue.Purge": Channel.queue_purge,
    "Queue.Delete": Channel.queue_delete,
    "Basic.Qos": Channel.basic_qos,
    "Basic.Consume": Channel.basic_consume,
    "Basic.Cancel": Channel.basic_cancel,
    "Basic.Get": Channel.basic_get,
    "Basic.Ack": Channel.basic_ack,
    "Basic.Nack": Channel.basic_nack,
    "Basic.Reject": Channel.basic_reject,
    "Basic.Recover": Channel.basic_recover,
    "Basic.RecoverAsync": Channel.basic_recover_async,
    "Confirm.Select": Channel.confirm_select,
    "Tx.Select": Channel.tx_select,
    "Tx.Commit": Channel.tx_commit,
    "Tx.Rollback": Channel.tx_rollback,
    "Channel.Flow": Channel.channel_flow,
    "Channel.FlowOk": Channel.channel_flow_ok,
}


class UnexpectedMethod(Exception):
    """A method a client may not send on a channel (a server-to-client method, or connection class)."""

    def __init__(self, method: Any) -> None:
        super().__init__(method.name)
        self.method = method


class ConnectionFault(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


class AMQPConnection:
    """One client connection. The transport calls ``receive`` with each read buffer and ``timer``
    when ``next_timer`` is due, writes ``data_to_send`` after the broker's flush, and closes the
    socket once ``terminated``."""

    def __init__(
        self,
        broker: Broker,
        *,
        peer_host: str,
        users: dict[str, str],
        loopback_users: frozenset[str],
        heartbeat: int,
        frame_max: int,
        channel_max: int,
        max_message_size: int,
        now: float,
        outbox: set[AMQPConnection],
    ) -> None:
        self.broker = broker
        self.peer_host = peer_host
        self.users = users
        self.loopback_users = loopback_users
        self.proto = proto.ServerConnection(
            server_properties=server_properties(),
            frame_max=frame_max,
            channel_max=channel_max,
            heartbeat=heartbeat,
            max_message_size=max_message_size,
            now=now,
            answer_in_order=True,
        )
        self.channels: dict[int, Channel] = {}
        self.gate = Gate()
        self.buffered = 0
        self.outbox = outbox
        self.username = ""
        self.vhost: Any = None
        self.closed = False
        self.publisher = False  # has published: a resource alarm blocks it
        # The client certificate a TLS handshake verified (set by the transport before the first byte is
        # read; None on plain TCP or when the client sent none): what SASL EXTERNAL logs in with.
        self.peer_certificate: PeerCertificate | None = None
        self._blocked_sent = False
        self.now = now
        self.touch()

    # ---- transport side -------------------------------------------------------------------------

    def touch(self) -> None:
        self.outbox.add(self)

    def receive(self, data: bytes, now: float) -> None:
        self.now = now
        proto = self.proto
        self._handle(proto.receive_data(data, now))
        while proto.more_input and not self.closed:  # replies in the order requests arrived
            self._handle(proto.receive_data(b"", now))
        self.touch()

    def timer(self, now: float) -> None:
        self._handle(self.proto.handle_timer(now))
        self.touch()

    def next_timer(self) -> float | None:
        return self.proto.next_timer()

    def data_to_send(self) -> bytes:
        self.buffered = 0
        return self.proto.data_to_send()

    @property
    def terminated(self) -> bool:
        return self.proto.terminated

    def set_writable(self, writable: bool) -> None:
        """The transport's write buffer crossed its watermarks."""
        self.gate.socket_full = not writable
        was = self.gate.open
        self.gate.open = writable and self.buffered <= OUTPUT_HIGH_WATER
        if self.gate.open and not was:
            for channel in self.channels.values():
                channel.session.wake_queues()

    def alarm_blocked(self, reason: str) -> None:
        """A resource alarm blocks this publisher: connection.blocked, only to a client that announced
        the capability (rabbit_reader does the same; others just stop being read)."""
        if self.proto.is_open and self.proto.capabilities.get("connection.blocked") is True:
            self.proto.send_blocked(reason)
            self._blocked_sent = True
            self.touch()

    def alarm_unblocked(self) -> None:
        if self._blocked_sent:
            self._blocked_sent = False
            if self.proto.is_open:
                self.proto.send_unblocked()
                self.touch()

    def force_close(self, code: int, text: str) -> None:
        """Broker shutdown: connection.close with ``code`` (320 CONNECTION_FORCED)."""
        if not self.proto.terminated and not self.proto.closing:
            self.proto.close_connection(code, text)
        self.connection_lost()
        self.touch()

    def connection_lost(self) -> None:
        """Socket gone or connection over: requeue everything unacked, drop exclusive queues."""
        if self.closed:
            return
        self.closed = True
        for channel in list(self.channels.values()):
            channel.session.close()
        self.channels.clear()
        self.broker.connection_closed(self)

    # ---- events ---------------------------------------------------------------------------------

    def _handle(self, events: list[Any]) -> None:
        for event in events:
            kind = type(event)
            if kind is proto.ContentReceived or kind is proto.MethodReceived:
                channel = self.channels.get(event.channel)
                if channel is None:
                    continue  # closing: the protocol layer already decided what this frame means
                try:
                    if kind is proto.ContentReceived:
                        channel.publish(event.method, event.properties, event.body)
                    else:
                        channel.handle(event.method)
                except core_errors.BrokerError as error:
                    code = REPLY_CODES.get(type(error), proto.INTERNAL_ERROR)
                    if error.scope == "connection":
                        self._fail_connection(code, proto.reply_text(code, error.text), event.method)
                    else:
                        self.fail_channel(channel, code, proto.reply_text(code, error.text), event.method)
                except ConnectionFault as fault:
                    self._fail_connection(fault.code, proto.reply_text(fault.code, fault.text), event.method)
                except UnexpectedMethod:
                    self._fail_connection(
                        proto.COMMAND_INVALID,
                        proto.reply_text(proto.COMMAND_INVALID, f"unexpected method {event.method.name}"),
                        event.method,
                    )
                except Exception:  # our bug, never the peer's: close this connection, keep the broker up
                    log.exception("internal error handling %s from %s", event.method.name, self.peer_host)
                    self._fail_connection(
                        proto.INTERNAL_ERROR,
                        proto.reply_text(proto.INTERNAL_ERROR, "internal error"),
                        event.method,
                    )
            elif kind is proto.ChannelOpened:
                self.channels[event.channel] = Channel(self, event.channel)
            elif kind is proto.ChannelCloseReceived:
                channel = self.channels.pop(event.channel, None)
                if channel is not None:
                    channel.session.close()
            elif kind is proto.ConnectionStartOk:
                self._login(event)
            elif kind is proto.ConnectionOpen:
                self._open(event.virtual_host)
            elif kind is proto.ConnectionCloseReceived or kind is proto.ConnectionTerminated:
                self.connection_lost()
            if self.closed:
                break

    def fail_channel(self, channel: Channel, code: int, text: str, method: Any = None) -> None:
        self.channels.pop(channel.number, None)
        channel.session.close()
        index = getattr(method, "index", 0) or 0
        self.proto.close_channel(channel.number, code, text, index >> 16, index & 0xFFFF)
        self.touch()

    def _fail_connection(self, code: int, text: str, method: Any = None) -> None:
        index = getattr(method, "index", 0) or 0
        self.proto.close_connection(code, text, index >> 16, index & 0xFFFF)
        self.connection_lost()

    def _login(self, event: Any) -> None:
        mechanism = event.mechanism
        if self.users.get(event.username) != event.password or (
            event.username in self.loopback_users and not _is_loopback(self.peer_host)
        ):
            if event.username in self.loopback_users and not _is_loopback(self.peer_host):
                log.warning(
                    "user '%s' can only connect via localhost (peer %s)", event.username, self.peer_host
                )
            else:
                log.warning("login refused for user '%s' from %s", event.username, self.peer_host)
            # 403 "Login was refused ..." when the client announced authentication_failure_close,
            # otherwise a silent close: the protocol layer does what RabbitMQ does.
            self.proto.refuse_login(mechanism)
            self.connection_lost()
            return
        self.username = event.username
        self.proto.accept_login()
        self._handle(self.proto.receive_data(b"", self.now))  # parsing paused until this decision

    def _open(self, name: str) -> None:
        vhost = self.broker.vhosts.get(name)
        if vhost is None:
            self._fail_connection(
                proto.NOT_ALLOWED, proto.reply_text(proto.NOT_ALLOWED, f"vhost {name} not found")
            )
            return
        self.vhost = vhost
        self.proto.accept_open()
        self._handle(self.proto.receive_data(b"", self.now))  # parsing paused until this decision
