"""AMQP 0-9-1 reply codes and the exceptions that carry them.

Reply texts follow RabbitMQ: ``"<NAME> - <detail>"`` (rabbit_binary_generator:map_exception), e.g.
``"NOT_FOUND - no queue 'x' in vhost '/'"``. Which codes are "hard" (close the connection) and which are
"soft" (close the channel) is fixed by the 0-9-1 spec (section 1.3, "Constants").
"""

from __future__ import annotations

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

REPLY_NAMES: dict[int, str] = {
    REPLY_SUCCESS: "REPLY_SUCCESS",
    CONTENT_TOO_LARGE: "CONTENT_TOO_LARGE",
    NO_ROUTE: "NO_ROUTE",
    NO_CONSUMERS: "NO_CONSUMERS",
    CONNECTION_FORCED: "CONNECTION_FORCED",
    INVALID_PATH: "INVALID_PATH",
    ACCESS_REFUSED: "ACCESS_REFUSED",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED",
    FRAME_ERROR: "FRAME_ERROR",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID",
    CHANNEL_ERROR: "CHANNEL_ERROR",
    UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    RESOURCE_ERROR: "RESOURCE_ERROR",
    NOT_ALLOWED: "NOT_ALLOWED",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    INTERNAL_ERROR: "INTERNAL_ERROR",
}

#: Codes the spec marks as channel ("soft") errors; every other error code closes the connection.
SOFT_ERRORS = frozenset({CONTENT_TOO_LARGE, NO_ROUTE, NO_CONSUMERS, ACCESS_REFUSED, NOT_FOUND,
                         RESOURCE_LOCKED, PRECONDITION_FAILED})


def is_hard(code: int) -> bool:
    """True when ``code`` is a connection-level error in the 0-9-1 spec."""
    return code not in SOFT_ERRORS


def reply_text(code: int, detail: str) -> str:
    """``reply_text(404, "no queue 'x'") -> "NOT_FOUND - no queue 'x'"`` (RabbitMQ's format)."""
    return f"{REPLY_NAMES.get(code, str(code))} - {detail}"


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


#: Alias for the name used in early drafts of the API.
ConnectionError_ = AMQPConnectionError
