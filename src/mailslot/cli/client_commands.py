"""``mailslot publish`` and ``mailslot consume``: small AMQP clients for trying a broker by hand
(mailslot or RabbitMQ). They use pika's BlockingConnection, the most common Python client.

Every failure the user can act on (refused connection, bad credentials, a 404 channel close)
becomes one ``error: ...`` line on stderr and exit code 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from rich.console import Console
from rich.markup import escape

from mailslot.client.url import ConnectParams

_PERSISTENT = 2  # AMQP 0-9-1 basic.properties delivery-mode: 1 non-persistent, 2 persistent
_TRANSIENT = 1


_R = TypeVar("_R")


class CommandError(Exception):
    """Ends a command with one line on stderr and exit code 1."""


@dataclass(frozen=True)
class PublishRequest:
    url: str
    exchange: str
    routing_key: str
    body: bytes
    persistent: bool = True
    count: int = 1
    confirm: bool = False
    declare: bool = False


@dataclass(frozen=True)
class ConsumeRequest:
    url: str
    queue: str
    count: int = 0  # 0 = until interrupted
    no_ack: bool = False
    prefetch: int = 100
    declare: bool = False


def run_publish(request: PublishRequest) -> int:
    """Publish; returns the exit code."""
    return _reporting_errors(_publish, request)


def run_consume(request: ConsumeRequest) -> int:
    """Consume until ``count`` messages or Ctrl-C; returns the exit code."""
    return _reporting_errors(_consume, request)


def _publish(request: PublishRequest) -> None:
    if request.declare and request.exchange:
        raise CommandError("--declare only applies to the default exchange (--exchange '')")
    with _channel(request.url) as channel:
        if request.declare:
            channel.queue_declare(request.routing_key, durable=True)
        elif request.exchange:
            # Fail now with the broker's 404 rather than losing messages to a channel that the
            # broker closed asynchronously after the first basic.publish.
            channel.exchange_declare(request.exchange, passive=True)
        if request.confirm:
            channel.confirm_delivery()
        properties = pika.BasicProperties(delivery_mode=_PERSISTENT if request.persistent else _TRANSIENT)
        for _ in range(request.count):
            channel.basic_publish(request.exchange, request.routing_key, request.body, properties)
        if not request.confirm:
            # A synchronous round trip: an error the broker raised about our publishes (a channel
            # close) arrives before its reply, so we report it instead of exiting 0.
            channel.basic_qos(prefetch_count=0)
    what = "confirmed" if request.confirm else "sent"
    noun = "message" if request.count == 1 else "messages"
    Console(stderr=True, highlight=False).print(f"{what} {request.count} {noun}")


def _consume(request: ConsumeRequest) -> None:
    out = Console(highlight=False, soft_wrap=True, emoji=False)
    received = 0
    with _channel(request.url) as channel:
        if request.declare:
            channel.queue_declare(request.queue, durable=True)
        # With --count N, ask for at most N so no extra messages are held (and requeued) for nothing.
        prefetch = min(request.prefetch, request.count) if request.count else request.prefetch
        channel.basic_qos(prefetch_count=prefetch)
        try:
            for method, _properties, body in channel.consume(request.queue, auto_ack=request.no_ack):
                _show(out, method.routing_key or "", body)
                if not request.no_ack:
                    channel.basic_ack(method.delivery_tag)
                received += 1
                if request.count and received >= request.count:
                    break
        except KeyboardInterrupt:
            pass  # unacked messages go back to the queue when the channel closes
        channel.cancel()


def _show(out: Console, routing_key: str, body: bytes) -> None:
    """``routing-key<TAB>body`` per message: dimmed key on a terminal, plain tab-separated in a pipe."""
    text = body.decode("utf-8", errors="backslashreplace")
    if out.is_terminal:
        out.print(f"[dim]{escape(routing_key)}[/dim]  {escape(text)}")
    else:  # rich would expand the tab; scripts want it (cut -f2)
        out.file.write(f"{routing_key}\t{text}\n")
        out.file.flush()


def _reporting_errors(command: Callable[[_R], None], request: _R) -> int:
    try:
        command(request)
    except (CommandError, pika.exceptions.AMQPError, OSError) as exc:
        print(f"error: {describe_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130  # interrupted while connecting: the shell's convention for SIGINT
    return 0


def describe_error(exc: BaseException) -> str:
    """One line for a pika exception, without pika's nested tuple reprs."""
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        return f"the broker closed the channel: {exc.reply_code} {exc.reply_text}"
    if isinstance(exc, pika.exceptions.ConnectionClosedByBroker):
        return f"the broker closed the connection: {exc.reply_code} {exc.reply_text}"
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return "login refused: check the user and password in --url"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return "access refused: check the vhost in --url and the user's permissions"
    if isinstance(exc, pika.exceptions.UnroutableError):
        return "the broker returned a message as unroutable"
    if isinstance(exc, pika.exceptions.NackError):
        return "the broker refused (nacked) a message"
    if isinstance(exc, pika.exceptions.AMQPConnectionError):
        inner: Any = exc.args[0] if exc.args else exc
        reason = getattr(inner, "exception", None) or inner  # AMQPConnectorSocketConnectError wraps it
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror
        return f"cannot connect to the broker: {reason}"
    if isinstance(exc, OSError):  # e.g. socket.gaierror for an unknown host
        return f"cannot connect to the broker: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


@contextmanager
def _channel(url: str) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika_parameters(url))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def pika_parameters(url: str) -> pika.ConnectionParameters:
    """pika's parameters for a URL read by the one parser of mailslot's clients (amqp:// or amqps:// with
    RabbitMQ's query parameters: cacertfile, certfile, keyfile, server_name_indication, verify)."""
    if not url.startswith(("amqp://", "amqps://")):
        raise CommandError(f"invalid --url {_redact(url)!r}: expected amqp[s]://user:password@host:port/vhost")
    try:
        params = ConnectParams.parse(url)
    except ValueError as exc:
        raise CommandError(f"invalid --url {_redact(url)!r}: {exc}") from None
    try:
        context = params.ssl_context()
    except OSError as exc:  # ssl.SSLError too: an unreadable or unusable CA, certificate or key file
        raise CommandError(f"cannot set up TLS for --url {_redact(url)!r}: {exc.strerror or exc}") from None
    return pika.ConnectionParameters(
        params.host,
        params.port,
        params.vhost,
        pika.PlainCredentials(params.username, params.password),
        heartbeat=params.heartbeat,
        frame_max=params.frame_max,
        socket_timeout=params.connect_timeout,
        ssl_options=pika.SSLOptions(context, params.server_hostname) if context is not None else None,
    )


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{hostpart}"
