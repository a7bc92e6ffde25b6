"""Errors the core raises, named for what went wrong, not for a protocol.

Each front end maps these onto its own wire form (AMQP 0-9-1: ``REPLY_CODES`` in
``frontends/amqp091/connection.py``). ``scope`` says what the failure closes: the session (a channel) or the
whole connection, as RabbitMQ decides it.
"""

from __future__ import annotations


class BrokerError(Exception):
    scope = "session"

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class NotFound(BrokerError):
    """An exchange or queue named by the peer does not exist (AMQP 404)."""


class ResourceLocked(BrokerError):
    """Exclusive access held by another connection or consumer (AMQP 405)."""


class PreconditionFailed(BrokerError):
    """Inequivalent redeclaration, if-unused/if-empty, unknown delivery tag ... (AMQP 406)."""


class AccessRefused(BrokerError):
    """Reserved names, the default exchange (AMQP 403)."""


class NotAllowed(BrokerError):
    """Closes the connection (AMQP 530)."""

    scope = "connection"


class NotImplementedFeature(BrokerError):
    """A valid request mailslot (like RabbitMQ) does not implement (AMQP 540, closes the connection)."""

    scope = "connection"


class CommandInvalid(BrokerError):
    """A request no broker could carry out, e.g. an unknown exchange type (AMQP 503, closes the connection
    as RabbitMQ does)."""

    scope = "connection"


class StoreFailure(BrokerError):
    """The store refused a write: publishes are nacked, nothing is confirmed (AMQP 541)."""

    scope = "connection"
