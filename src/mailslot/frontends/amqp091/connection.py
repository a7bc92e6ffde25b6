"""One AMQP client connection as the broker sees it: protocol events onto channels and core sessions,
core errors onto reply codes, and the connection's life (login, vhost, resource alarms, shutdown).

Nothing here does I/O: the transport feeds bytes in (``receive``), fires timers (``timer``), writes
``data_to_send()`` after the broker's flush and closes the socket once ``terminated``.
"""

from __future__ import annotations

import logging
import platform
from typing import Any

from pamqp import base, commands

from ... import __version__
from ...core import errors as core_errors
from ...core.access import User
from ...core.access.authorizer import UNRESTRICTED, Authorizer
from ...core.access.control import InternalAccessControl
from ...core.broker import Broker
from ...core.connections import ConnectionInfo
from ...core.peer import PeerCertificate
from ...core.session import Gate
from ...core.vhost import VirtualHost
from ...protocols.amqp091 import (
    HANDSHAKE_TIMEOUT,
    AckReceived,
    ChannelCloseReceived,
    ChannelOpened,
    ConnectionCloseReceived,
    ConnectionOpen,
    ConnectionStartOk,
    ConnectionTerminated,
    ContentReceived,
    Event,
    MethodReceived,
    ReplyCode,
    ServerConnection,
)
from ...protocols.amqp091.sasl import DEFAULT_MECHANISMS, External
from .auth import CertLoginFrom, DeferredLogin, authenticate, connection_info
from .channel import OUTPUT_HIGH_WATER, Channel, ConnectionFault, UnexpectedMethod

log = logging.getLogger("mailslot.amqp")

# Core errors onto AMQP reply codes (AMQP 0-9-1 spec section 1.9; RabbitMQ's choice of code for each case).
REPLY_CODES: dict[type[core_errors.BrokerError], ReplyCode] = {
    core_errors.NotFound: ReplyCode.NOT_FOUND,
    core_errors.ResourceLocked: ReplyCode.RESOURCE_LOCKED,
    core_errors.PreconditionFailed: ReplyCode.PRECONDITION_FAILED,
    core_errors.AccessRefused: ReplyCode.ACCESS_REFUSED,
    core_errors.NotAllowed: ReplyCode.NOT_ALLOWED,
    core_errors.NotImplementedFeature: ReplyCode.NOT_IMPLEMENTED,
    core_errors.CommandInvalid: ReplyCode.COMMAND_INVALID,
    core_errors.StoreFailure: ReplyCode.INTERNAL_ERROR,
}

#: How a broker shutdown closes a connection (RabbitMQ's words: rabbit_networking:close_connections).
SHUTDOWN_REASON = "broker forced connection closure with reason 'shutdown'"  # 320, as RabbitMQ


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


class AMQPConnection:
    """One client connection. The transport calls ``receive`` with each read buffer and ``timer``
    when ``next_timer`` is due, writes ``data_to_send`` after the broker's flush, and closes the
    socket once ``terminated``."""

    def __init__(
        self,
        broker: Broker,
        *,
        peer_host: str,
        access: InternalAccessControl,
        heartbeat: int,
        frame_max: int,
        channel_max: int,
        max_message_size: int,
        now: float,
        outbox: set[AMQPConnection],
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        cert_login_from: CertLoginFrom = "distinguished_name",
    ) -> None:
        self.broker = broker
        self.peer_host = peer_host
        self.access = access
        self.cert_login_from = cert_login_from
        self.proto = ServerConnection(
            server_properties=server_properties(),
            frame_max=frame_max,
            channel_max=channel_max,
            heartbeat=heartbeat,
            max_message_size=max_message_size,
            now=now,
            answer_in_order=True,
            handshake_timeout=handshake_timeout,
        )
        self.proto.channel_refusal = self._channel_refusal
        # Set by the transport when it knows them (the connection table names connections by them).
        self.peer_port = 0
        self.local: tuple[str, int] = ("", 0)
        self.tls = False
        self.user: User | None = None
        self.authz: Authorizer = UNRESTRICTED  # replaced by the user's rights once the vhost is open
        self._info: ConnectionInfo | None = None
        self._deferred: DeferredLogin | None = None
        self.channels: dict[int, Channel] = {}
        self.gate = Gate()
        self.buffered = 0
        self.outbox = outbox
        self.vhost: VirtualHost | None = None
        self.closed = False
        self.publisher = False  # has published: a resource alarm blocks it
        self._peer_certificate: PeerCertificate | None = None
        self._blocked_sent = False
        self.now = now
        self.touch()

    @property
    def connection_info(self) -> ConnectionInfo | None:
        """Its entry in the connection table (name, user): tracing names connections by it (core/tracing.py)."""
        return self._info

    @property
    def peer_certificate(self) -> PeerCertificate | None:
        """The client certificate a TLS handshake verified (set by the transport before the first byte is
        read; None on plain TCP or when the client sent none): what SASL EXTERNAL logs in with, and only
        then is EXTERNAL offered."""
        return self._peer_certificate

    @peer_certificate.setter
    def peer_certificate(self, certificate: PeerCertificate | None) -> None:
        self._peer_certificate = certificate
        extra = (External(),) if certificate is not None else ()
        self.proto.set_mechanisms((*DEFAULT_MECHANISMS, *extra))

    @property
    def username(self) -> str:
        return self.user.name if self.user is not None else ""

    @property
    def impersonator(self) -> bool:
        """The user may publish with another user_id (RabbitMQ's impersonator tag)."""
        return self.user is not None and "impersonator" in self.user.tags

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
        self.now = now
        deferred = self._deferred
        if deferred is not None and now >= deferred.due and not self.closed:
            self._deferred = None
            deferred.decide()
        self._handle(self.proto.handle_timer(now))
        self.touch()

    def next_timer(self) -> float | None:
        due = self.proto.next_timer()
        if self._deferred is not None and not self.closed:
            due = self._deferred.due if due is None else min(due, self._deferred.due)
        return due

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

    def reading_paused(self) -> None:
        """The transport stopped reading the socket on purpose (credit flow, a resource alarm, a peer
        that does not read): the peer's heartbeats now wait unread, so its silence is not its fault."""
        self.proto.suspend_receive_check()

    def reading_resumed(self, now: float) -> None:
        self.proto.resume_receive_check(now)

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

    def shutdown(self) -> None:
        """The broker is stopping: connection.close 320 CONNECTION_FORCED (as RabbitMQ), then the
        connection is over for the core (unacked deliveries requeued, exclusive queues dropped)."""
        self._force_close(SHUTDOWN_REASON)

    def close_by_operator(self, reason: str) -> None:
        """Closed from the management API (``DELETE /api/connections/{name}``, the ``X-Reason`` header):
        connection.close 320 CONNECTION_FORCED with the reason, as RabbitMQ's API closes one. The host
        writes the close at its next flush."""
        self._force_close(reason)

    def _force_close(self, detail: str) -> None:
        if not self.proto.terminated and not self.proto.closing:
            code = ReplyCode.CONNECTION_FORCED
            self.proto.close_connection(code, code.text(detail))
        self.connection_lost()
        self.touch()

    def connection_lost(self) -> None:
        """Socket gone or connection over: requeue everything unacked, drop exclusive queues."""
        if self.closed:
            return
        self.closed = True
        self._deferred = None
        if self._info is not None:
            self.access.connections.remove(self._info)
            self._info = None
        for channel in list(self.channels.values()):
            channel.session.close()
        self.channels.clear()
        self.broker.connection_closed(self)

    # ---- events ---------------------------------------------------------------------------------

    def _handle(self, events: list[Event]) -> None:
        # Dispatch on the exact type, hottest first (one ``is`` test per event for publishes and acks).
        handled: list[Any] = events
        for event in handled:
            kind = type(event)
            if kind is ContentReceived or kind is AckReceived or kind is MethodReceived:
                channel = self.channels.get(event.channel)
                if channel is not None:  # None: closing, the protocol layer already decided what it means
                    self._channel_event(channel, event)
                elif event.channel == 0 and kind is MethodReceived:
                    self._method0(event.method)
            elif kind is ChannelOpened:
                self.channels[event.channel] = Channel(self, event.channel, self._open_vhost())
            elif kind is ChannelCloseReceived:
                closed = self.channels.pop(event.channel, None)
                if closed is not None:
                    closed.session.close()
            elif kind is ConnectionStartOk:
                self._login(event)
            elif kind is ConnectionOpen:
                self._open(event.virtual_host)
            elif kind is ConnectionCloseReceived or kind is ConnectionTerminated:
                self.connection_lost()
            if self.closed:
                break

    def _channel_event(self, channel: Channel, event: Any) -> None:
        """A method or content on an open channel; the failure it raises becomes the reply RabbitMQ sends."""
        try:
            kind = type(event)
            if kind is ContentReceived:
                channel.publish(event.method, event.properties, event.body)
            elif kind is AckReceived:
                channel.session.ack(event.delivery_tag, event.multiple)
            else:
                channel.handle(event.method)
        except core_errors.BrokerError as error:
            code = REPLY_CODES.get(type(error), ReplyCode.INTERNAL_ERROR)
            if error.scope == "connection":
                self._fail_connection(code, code.text(error.text), event.method)
            else:
                self.fail_channel(channel, code, code.text(error.text), event.method)
        except ConnectionFault as fault:
            self._fail_connection(fault.code, fault.code.text(fault.text), event.method)
        except UnexpectedMethod:
            code = ReplyCode.COMMAND_INVALID
            self._fail_connection(code, code.text(f"unexpected method {event.method.name}"), event.method)
        except Exception:  # our bug, never the peer's: close this connection, keep the broker up
            log.exception("internal error handling %s from %s", event.method.name, self.peer_host)
            code = ReplyCode.INTERNAL_ERROR
            self._fail_connection(code, code.text("internal error"), event.method)

    def fail_channel(self, channel: Channel, code: int, text: str, method: base.Frame | None = None) -> None:
        self.channels.pop(channel.number, None)
        channel.session.close()
        index = method.index if method is not None else 0
        self.proto.close_channel(channel.number, code, text, index >> 16, index & 0xFFFF)
        self.touch()

    def _fail_connection(self, code: int, text: str, method: base.Frame | None = None) -> None:
        index = method.index if method is not None else 0
        self.proto.close_connection(code, text, index >> 16, index & 0xFFFF)
        self.connection_lost()

    def _login(self, event: ConnectionStartOk) -> None:
        """Decide the login now, or once the throttle's delay for this source is over (parsing stays
        paused meanwhile; the handshake timeout still runs)."""
        delay = self.access.login_delay(self.peer_host)
        if delay <= 0:
            self._decide_login(event)
            return
        self._deferred = DeferredLogin(self.now + delay, lambda: self._decide_login(event))

    def _decide_login(self, event: ConnectionStartOk) -> None:
        try:
            self.user = authenticate(self.access, event.mechanism, event.username, event.password, self.peer_host,
                                     self.peer_certificate, self.cert_login_from)
        except core_errors.AccessRefused:
            # 403 "Login was refused ..." when the client announced authentication_failure_close,
            # otherwise a silent close: the protocol layer does what RabbitMQ does. The reason is logged
            # by the access control (with the source and the user), never sent.
            self.proto.refuse_login(event.mechanism)
            self.connection_lost()
            return
        self.proto.accept_login()
        self._handle(self.proto.receive_data(b"", self.now))  # parsing paused until this decision

    def _open_vhost(self) -> VirtualHost:
        if self.vhost is None:  # the protocol layer opens no channel before connection.open-ok
            raise RuntimeError("channel opened before the connection was")
        return self.vhost

    def _open(self, name: str) -> None:
        assert self.user is not None
        try:
            self.authz = self.access.open_vhost(self.user, name)
        except core_errors.NotAllowed as error:
            log.warning("connection from %s (user '%s') refused: %s", self.peer_host, self.user.name, error.text)
            code = ReplyCode.NOT_ALLOWED
            self._fail_connection(code, code.text(error.text))
            return
        self.vhost = self.broker.vhosts[name]
        self._info = connection_info(
            self.user, name, (self.peer_host, self.peer_port), self.local, lambda: len(self.channels),
            self._closed_by_broker, tls=self.tls, client_properties=self.proto.client_properties,
        )
        self.access.connections.add(self._info)
        self.proto.accept_open()
        self._handle(self.proto.receive_data(b"", self.now))  # parsing paused until this decision

    def _closed_by_broker(self, text: str) -> None:
        """Its user or vhost was deleted, or its user's password changed (core/access/admin.py)."""
        self._info = None  # the table already dropped it
        self._force_close(text)
        self.broker.request_flush()  # write the close now

    def _channel_refusal(self) -> str | None:
        """A user's max-channels limit, over all its connections (rabbit_reader:create_channel)."""
        if self.user is None:
            return None
        try:
            self.access.check_channel_open(self.user)
        except core_errors.NotAllowed as error:
            return error.text
        return None

    def _method0(self, method: Any) -> None:
        """connection.update-secret, as RabbitMQ's reader with its internal backend: the new secret is
        accepted (internal users' state never expires) and answered with update-secret-ok."""
        if method.name == "Connection.UpdateSecret":
            log.info("connection from %s (user '%s') updated its secret, reason: %s", self.peer_host,
                     self.username, method.reason)
            self.proto.send_method(0, commands.Connection.UpdateSecretOk())
            self.touch()
