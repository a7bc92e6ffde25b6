"""Events returned by :class:`~.connection.ServerConnection` and :class:`~.client.ClientConnection`.

Plain slotted classes: cheap to build on the hot path (the frame reader builds the hottest ones with
``object.__new__`` and attribute stores, skipping ``__init__``). Events both sides can see (a method, a
content, a close from the peer, the end of the connection) are one class each; the rest belong to one side.
"""

from __future__ import annotations

from typing import Any

from pamqp import base, commands


class Event:
    __slots__: tuple[str, ...] = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_eq(getattr(self, k), getattr(other, k)) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, base.Frame) and isinstance(b, base.Frame):
        return type(a) is type(b) and all(getattr(a, k, None) == getattr(b, k, None) for k in a.__slots__)
    return bool(a == b)


# ---------------------------------------------------------------------------------------------- both sides
class MethodReceived(Event):
    """Any method without content on an open channel (or connection.update-secret, connection.blocked /
    unblocked on channel 0)."""

    __slots__ = ("channel", "method")

    def __init__(self, channel: int, method: base.Frame) -> None:
        self.channel = channel
        self.method = method


class ContentReceived(Event):
    """A content-bearing method + content header + all body frames (server side: basic.publish; client
    side: basic.get-ok and basic.return, deliveries are :class:`Delivery`).

    ``properties`` is the raw property block (property flags + property list) of the content header;
    decode it lazily with :mod:`.properties`. ``body`` is bytes. ``method`` may be shared between events
    (the publish memo, see codec.PUBLISH_CACHE): never mutate it.
    """

    __slots__ = ("body", "channel", "method", "properties")

    def __init__(self, channel: int, method: Any, properties: bytes, body: bytes) -> None:
        self.channel = channel
        self.method = method
        self.properties = properties
        self.body = body


class ChannelCloseReceived(Event):
    """The peer closed a channel; channel.close-ok is queued and the number is free again."""

    __slots__ = ("channel", "class_id", "method_id", "reply_code", "reply_text")

    def __init__(self, channel: int, reply_code: int, reply_text: str, class_id: int = 0,
                 method_id: int = 0) -> None:
        self.channel = channel
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id


class ConnectionCloseReceived(Event):
    """The peer sent connection.close; close-ok is queued. A ConnectionTerminated follows."""

    __slots__ = ("class_id", "method_id", "reply_code", "reply_text")

    def __init__(self, reply_code: int, reply_text: str, class_id: int = 0, method_id: int = 0) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id

    @classmethod
    def of(cls, m: commands.Connection.Close) -> ConnectionCloseReceived:
        """The event for a decoded connection.close (pamqp types its fields optional; decoded, they are set)."""
        return cls(m.reply_code or 0, m.reply_text or "", m.class_id or 0, m.method_id or 0)


class ConnectionTerminated(Event):
    """The connection is over: flush data_to_send(), then close the socket."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


# ---------------------------------------------------------------------------------------------- server side
class ConnectionStartOk(Event):
    """connection.start-ok arrived and its SASL response decoded (see :mod:`.sasl`); ``password`` is None
    for a mechanism without one.

    Answer with :meth:`ServerConnection.accept_login` or :meth:`ServerConnection.refuse_login`.
    """

    __slots__ = ("client_properties", "locale", "mechanism", "password", "username")

    def __init__(self, mechanism: str, username: str, password: str | None, client_properties: dict[str, Any],
                 locale: str) -> None:
        self.mechanism = mechanism
        self.username = username
        self.password = password
        self.client_properties = client_properties
        self.locale = locale


class ConnectionOpen(Event):
    """connection.open arrived; answer with accept_open() or close_connection()."""

    __slots__ = ("virtual_host",)

    def __init__(self, virtual_host: str) -> None:
        self.virtual_host = virtual_host


class ChannelOpened(Event):
    """The peer opened a channel; channel.open-ok has already been queued."""

    __slots__ = ("channel",)

    def __init__(self, channel: int) -> None:
        self.channel = channel


class AckReceived(Event):
    """basic.ack from a consumer, decoded by the hot path without a pamqp object (one per settled batch
    or message). ``method`` builds the pamqp form for the rare reader that wants it (error replies)."""

    __slots__ = ("channel", "delivery_tag", "multiple")

    def __init__(self, channel: int, delivery_tag: int, multiple: bool) -> None:
        self.channel = channel
        self.delivery_tag = delivery_tag
        self.multiple = multiple

    @property
    def method(self) -> commands.Basic.Ack:
        return commands.Basic.Ack(delivery_tag=self.delivery_tag, multiple=self.multiple)


# ---------------------------------------------------------------------------------------------- client side
class Connected(Event):
    """connection.open-ok arrived: channels can be opened. Holds the negotiated values."""

    __slots__ = ("channel_max", "frame_max", "heartbeat", "server_properties")

    def __init__(self, server_properties: dict[str, Any], frame_max: int, channel_max: int,
                 heartbeat: int) -> None:
        self.server_properties = server_properties
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = heartbeat


class Confirm(Event):
    """A publisher confirm: basic.ack (``ack=True``) or basic.nack from the server."""

    __slots__ = ("ack", "channel", "delivery_tag", "multiple")

    def __init__(self, channel: int, delivery_tag: int, multiple: bool, ack: bool) -> None:
        self.channel = channel
        self.delivery_tag = delivery_tag
        self.multiple = multiple
        self.ack = ack


class Delivery(Event):
    """basic.deliver + content header + body. ``properties`` is the raw property block
    (decode with :func:`.properties.decode_properties` if needed); ``body`` is bytes."""

    __slots__ = ("body", "channel", "consumer_tag", "delivery_tag", "exchange", "properties", "redelivered",
                 "routing_key")

    def __init__(self, channel: int, consumer_tag: str, delivery_tag: int, redelivered: bool, exchange: str,
                 routing_key: str, properties: bytes, body: bytes) -> None:
        self.channel = channel
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
