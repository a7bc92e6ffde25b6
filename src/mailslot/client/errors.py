"""The client's exceptions. ``except ConnectionLost`` catches every "the outcome is unknown" case."""

from __future__ import annotations

from dataclasses import dataclass


class ClientError(Exception):
    """Base class of every mailslot.client error."""


class ConnectionLost(ClientError):
    """The connection dropped (or was closed) while an operation was in flight.

    A publish that raises this may or may not have reached the queue: retrying it can create a duplicate
    unless the queue deduplicates (``x-deduplication-header`` / ``message_id``). ``confirmed`` is, for
    :meth:`Channel.publish_many`, how many leading messages were confirmed before the drop (retry
    ``messages[confirmed:]``); 0 otherwise.
    """

    def __init__(self, message: str = "connection lost", confirmed: int = 0) -> None:
        super().__init__(message)
        self.confirmed = confirmed


class ConnectionClosed(ConnectionLost):
    """The server closed the connection (connection.close) or it was closed by :meth:`Connection.close`."""

    def __init__(self, code: int, text: str, confirmed: int = 0) -> None:
        super().__init__(f"connection closed: {code} {text}", confirmed)
        self.code = code
        self.text = text


class ChannelClosed(ClientError):
    """The server closed the channel (channel.close: 404 NOT_FOUND, 406 PRECONDITION_FAILED, ...).

    The channel is unusable until :meth:`Channel.reopen`; other channels are unaffected.
    """

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"channel closed: {code} {text}")
        self.code = code
        self.text = text


class PublishNacked(ClientError):
    """The broker refused one or more publishes (basic.nack), e.g. a full queue with
    ``x-overflow: reject-publish``. ``indexes`` are the positions of the refused messages in the
    batch (``[0]`` for :meth:`Channel.publish`); every other message of the batch was confirmed."""

    def __init__(self, indexes: list[int]) -> None:
        super().__init__(f"{len(indexes)} message(s) nacked by the broker")
        self.indexes = indexes


@dataclass(frozen=True)
class ReturnedMessage:
    """A mandatory publish the broker could not route, sent back with basic.return (AMQP 0-9-1 section
    1.8.3.10): ``reply_code`` 312 NO_ROUTE; ``properties`` is the raw property block."""

    reply_code: int
    reply_text: str
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes


class MessageReturned(ClientError):
    """A ``mandatory=True`` publish on a confirm-mode channel was returned as unroutable (the broker
    then confirms it: it was not enqueued anywhere). ``returned`` is what came back."""

    def __init__(self, returned: ReturnedMessage) -> None:
        super().__init__(
            f"message returned: {returned.reply_code} {returned.reply_text} "
            f"(exchange {returned.exchange!r}, routing key {returned.routing_key!r})"
        )
        self.returned = returned
