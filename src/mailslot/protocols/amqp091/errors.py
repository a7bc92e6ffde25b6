"""AMQP 0-9-1 reply codes.

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
