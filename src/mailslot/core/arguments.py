"""Queue arguments mailslot acts on: one validator table for every front end (AMQP arguments now, the
management API later).

As RabbitMQ (rabbit_amqqueue:declare_args), a known argument with the wrong type or value gets 406
PRECONDITION_FAILED naming it, in RabbitMQ's words; arguments mailslot does not know are stored and
otherwise ignored, so declarations written for RabbitMQ keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import PreconditionFailed

OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _non_negative_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f'"expected integer, got {field_type(value)}"'
    if value < 0:
        return f"{{value_negative,{value}}}"
    return None


def _string(value: Any) -> str | None:
    if not isinstance(value, (str, bytes)):
        return f"{{unacceptable_type,{field_type(value)}}}"
    return None


def _overflow(value: Any) -> str | None:
    if not isinstance(value, (str, bytes)) or _text(value) not in OVERFLOW_MODES:
        return "invalid_overflow"
    return None


def _boolean(value: Any) -> str | None:
    if not isinstance(value, bool):
        return f"{{unacceptable_type,{field_type(value)}}}"
    return None


def _positive_int(value: Any) -> str | None:
    """x-cache-size / x-cache-ttl: an integer > 0; a decimal string too, as the dedup plugin takes."""
    if isinstance(value, (str, bytes)) and _text(value).strip().isdigit():
        value = int(_text(value))
    if isinstance(value, bool) or not isinstance(value, int):
        return f'"expected integer, got {field_type(value)}"'
    if value == 0:
        return "{value_zero,0}"
    if value < 0:
        return f"{{value_negative,{value}}}"
    return None


def _dedup_key_source(value: Any) -> str | None:
    if not isinstance(value, (str, bytes)) or _text(value) not in ("header", "message_id"):
        return 'expected "header" or "message_id"'
    return None


def field_type(value: Any) -> str:
    """The AMQP field-table type name a client most likely sent for this decoded value (RabbitMQ
    names it in its 406 texts)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "signedint" if -(2**31) <= value < 2**31 else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return "longstr"


QUEUE_ARGUMENTS: dict[str, Callable[[Any], str | None]] = {
    "x-max-length": _non_negative_int,
    "x-max-length-bytes": _non_negative_int,
    "x-overflow": _overflow,
    "x-dead-letter-exchange": _string,
    "x-dead-letter-routing-key": _string,
    # RabbitMQ's message-deduplication plugin; x-cache-size, x-cache-ttl and x-deduplication-key on a
    # queue are mailslot extensions (docs/deduplication.md).
    "x-message-deduplication": _boolean,
    "x-cache-size": _positive_int,
    "x-cache-ttl": _positive_int,
    "x-deduplication-key": _dedup_key_source,
}
_DEDUP_OPTIONS = ("x-cache-size", "x-cache-ttl", "x-deduplication-key")


def validate_queue_arguments(name: str, vhost: str, arguments: dict[str, Any]) -> None:
    for key, check in QUEUE_ARGUMENTS.items():
        if key in arguments:
            problem = check(arguments[key])
            if problem is not None:
                raise PreconditionFailed(f"invalid arg '{key}' for queue '{name}' in vhost '{vhost}': {problem}")
    if "x-dead-letter-routing-key" in arguments and "x-dead-letter-exchange" not in arguments:
        raise PreconditionFailed(
            f"invalid arg 'x-dead-letter-routing-key' for queue '{name}' in vhost '{vhost}': "
            "Routing key but no exchange defined"
        )
    for key in _DEDUP_OPTIONS:
        if key in arguments and arguments.get("x-message-deduplication") is not True:
            raise PreconditionFailed(
                f"invalid arg '{key}' for queue '{name}' in vhost '{vhost}': requires x-message-deduplication true"
            )


# Arguments of the dedup plugin's exchange type, with the plugin's 406 texts
# (rabbit_message_deduplication_exchange:validate).
_DEDUP_EXCHANGE_ARGUMENTS: dict[str, tuple[bool, Callable[[Any], str | None], str]] = {
    "x-cache-size": (True, _positive_int, "Missing or invalid argument, 'x-cache-size' must be an integer greater than 0"),
    "x-cache-ttl": (False, _positive_int, "Invalid argument, 'x-cache-ttl' must be an integer greater than 0"),
    "x-cache-persistence": (
        False,
        lambda v: None if isinstance(v, (str, bytes)) and _text(v) in ("disk", "memory") else "bad",
        "Invalid argument, 'x-cache-persistence' must be either 'disk' or 'memory'",
    ),
    "x-deduplication-key": (
        False,
        _dedup_key_source,
        "Invalid argument, 'x-deduplication-key' must be either 'header' or 'message_id'",
    ),
}
EXCHANGE_ARGUMENTS: dict[str, dict[str, tuple[bool, Callable[[Any], str | None], str]]] = {
    "x-message-deduplication": _DEDUP_EXCHANGE_ARGUMENTS,
}


def validate_exchange_arguments(type_: str, arguments: dict[str, Any]) -> None:
    """A new exchange's arguments, per type: (required, check, 406 text) for each known one."""
    for key, (required, check, text) in EXCHANGE_ARGUMENTS.get(type_, {}).items():
        if key in arguments:
            if check(arguments[key]) is not None:
                raise PreconditionFailed(text)
        elif required:
            raise PreconditionFailed(text)


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """What a queue's arguments make it do, parsed once at declaration."""

    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None

    @classmethod
    def from_arguments(cls, arguments: dict[str, Any]) -> QueuePolicy:
        dlx = arguments.get("x-dead-letter-exchange")
        dlrk = arguments.get("x-dead-letter-routing-key")
        return cls(
            max_length=arguments.get("x-max-length"),
            max_length_bytes=arguments.get("x-max-length-bytes"),
            overflow=_text(arguments.get("x-overflow", "drop-head")),
            dead_letter_exchange=None if dlx is None else _text(dlx),
            dead_letter_routing_key=None if dlrk is None else _text(dlrk),
        )

    @property
    def bounded(self) -> bool:
        return self.max_length is not None or self.max_length_bytes is not None
