"""AMQP 0-9-1 reply codes and the exceptions that carry them.

Reply texts follow RabbitMQ: ``"<NAME> - <detail>"`` (rabbit_binary_generator:map_exception), e.g.
``"NOT_FOUND - no queue 'x' in vhost '/'"``. Which codes are "hard" (close the connection) and which are
"soft" (close the channel) is fixed by the 0-9-1 spec (section 1.3, "Constants").
"""

from __future__ import annotations

from enum import IntEnum


class ReplyCode(IntEnum):
    """The reply codes of the 0-9-1 spec (section 1.3); the member name is the name in the reply text."""

    REPLY_SUCCESS = 200
    CONTENT_TOO_LARGE = 311
    NO_ROUTE = 312
    NO_CONSUMERS = 313
    CONNECTION_FORCED = 320
    INVALID_PATH = 402
    ACCESS_REFUSED = 403
    NOT_FOUND = 404
    RESOURCE_LOCKED = 405
    PRECONDITION_FAILED = 406
    FRAME_ERROR = 501
    SYNTAX_ERROR = 502
    COMMAND_INVALID = 503
    CHANNEL_ERROR = 504
    UNEXPECTED_FRAME = 505
    RESOURCE_ERROR = 506
    NOT_ALLOWED = 530
    NOT_IMPLEMENTED = 540
    INTERNAL_ERROR = 541

    @property
    def is_hard(self) -> bool:
        """A connection ("hard") error in the spec; soft codes close only the channel."""
        return self not in _SOFT

    def text(self, detail: str) -> str:
        """``ReplyCode.NOT_FOUND.text("no queue 'x'") -> "NOT_FOUND - no queue 'x'"`` (RabbitMQ's format)."""
        return f"{self.name} - {detail}"


#: Codes the spec marks as channel ("soft") errors; every other error code closes the connection.
_SOFT = frozenset({ReplyCode.CONTENT_TOO_LARGE, ReplyCode.NO_ROUTE, ReplyCode.NO_CONSUMERS,
                   ReplyCode.ACCESS_REFUSED, ReplyCode.NOT_FOUND, ReplyCode.RESOURCE_LOCKED,
                   ReplyCode.PRECONDITION_FAILED})


def is_hard(code: int) -> bool:
    """True when ``code`` is a connection-level error in the 0-9-1 spec (any unknown code is)."""
    return code not in _SOFT


def reply_text(code: int, detail: str) -> str:
    """``reply_text(404, "no queue 'x'") -> "NOT_FOUND - no queue 'x'"`` (RabbitMQ's format); a code
    outside the spec is written as its number."""
    try:
        return ReplyCode(code).text(detail)
    except ValueError:
        return f"{code} - {detail}"


class AMQPError(Exception):
    """An AMQP exception: a reply code, the full reply text and the failing method's ids."""

    def __init__(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        super().__init__(code, text, class_id, method_id)
        self.code = code
        self.text = text
        self.class_id = class_id
        self.method_id = method_id

    @classmethod
    def of(cls, code: int, detail: str, class_id: int = 0, method_id: int = 0) -> AMQPError:
        """Build the error with RabbitMQ's text format from a bare detail."""
        return cls(code, reply_text(code, detail), class_id, method_id)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ChannelError(AMQPError):
    """Soft error: closes the channel (channel.close)."""


class AMQPConnectionError(AMQPError):
    """Hard error: closes the connection (connection.close)."""
