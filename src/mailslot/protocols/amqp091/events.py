"""Events returned by :class:`ServerConnection`. Plain slotted classes: cheap to build on the hot path."""

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


class ConnectionStartOk(Event):
    """connection.start-ok arrived and its SASL response decoded (PLAIN or AMQPLAIN).

    Answer with :meth:`ServerConnection.accept_login` or :meth:`ServerConnection.refuse_login`.
    """

    __slots__ = ("client_properties", "locale", "mechanism", "password", "username")

    def __init__(self, mechanism: str, username: str, password: str, client_properties: dict[str, Any],
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


class ChannelCloseReceived(Event):
    """The peer closed a channel; channel.close-ok is queued and the number is free again."""

    __slots__ = ("channel", "reply_code", "reply_text")

    def __init__(self, channel: int, reply_code: int, reply_text: str) -> None:
        self.channel = channel
        self.reply_code = reply_code
        self.reply_text = reply_text


class MethodReceived(Event):
    """Any method without content on an open channel (or connection.update-secret on channel 0)."""

    __slots__ = ("channel", "method")

    def __init__(self, channel: int, method: base.Frame) -> None:
        self.channel = channel
        self.method = method


class ContentReceived(Event):
    """basic.publish + content header + all body frames.

    ``properties`` is the raw property block (property flags + property list) of the content header;
    decode it lazily with :mod:`.properties`. ``body`` is bytes (a bytearray when it came in several frames; never changed afterwards).
    """

    __slots__ = ("body", "channel", "method", "properties")

    def __init__(self, channel: int, method: commands.Basic.Publish, properties: bytes, body: bytes) -> None:
        self.channel = channel
        self.method = method
        self.properties = properties
        self.body = body


class ConnectionCloseReceived(Event):
    """The peer sent connection.close; close-ok is queued. A ConnectionTerminated follows."""

    __slots__ = ("reply_code", "reply_text")

    def __init__(self, reply_code: int, reply_text: str) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text


class ConnectionTerminated(Event):
    """The connection is over: flush data_to_send(), then close the socket."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason
