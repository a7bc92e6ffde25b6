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
MAX_PRIORITY = 255  # RabbitMQ's ?MAX_SUPPORTED_PRIORITY


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _non_negative_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f'"expected integer, got {field_type(value)}"'
    if value < 0:
        return f"{{value_negative,{value}}}"
    return None


def _int_at_most(maximum: int, tag: str) -> Callable[[Any], str | None]:
    """A non-negative integer up to ``maximum``; above it, RabbitMQ's ``{tag,Value}``."""

    def check(value: Any) -> str | None:
        problem = _non_negative_int(value)
        if problem is None and value > maximum:
            return f"{{{tag},{value}}}"
        return problem

    return check


def _bool(value: Any) -> str | None:
    if not isinstance(value, bool):
        return f"{{unacceptable_type,{field_type(value)}}}"
    return None


def _string(value: Any) -> str | None:
    if not isinstance(value, (str, bytes)):
        return f"{{unacceptable_type,{field_type(value)}}}"
    return None


def _overflow(value: Any) -> str | None:
    if not isinstance(value, (str, bytes)) or _text(value) not in OVERFLOW_MODES:
        return "invalid_overflow"
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


# The longest x-message-ttl, x-expires and expiration RabbitMQ 3.10 accepts: ten years in ms.
MAX_TTL = 315_360_000_000
QUEUE_TYPES = ("classic", "quorum")  # quorum: a durable classic queue here (docs/lifecycle-ttl.md); no streams
QUEUE_MODES = ("default", "lazy")  # both page beyond the memory window: lazy is a no-op
QUEUE_VERSIONS = (1, 2)
MASTER_LOCATORS = ("min-masters", "client-local", "random")
LEADER_LOCATORS = ("client-local", "balanced")
DEAD_LETTER_STRATEGIES = ("at-most-once", "at-least-once")


_ttl = _int_at_most(MAX_TTL, "value_too_large")  # x-message-ttl: 0 (TTL 0: deliver now or expire) .. ten years
_max_priority = _int_at_most(MAX_PRIORITY, "max_value_exceeded")


def _expires(value: Any) -> str | None:
    """x-expires: 1 .. ten years (a queue cannot expire the moment it is unused)."""
    problem = _ttl(value)
    if problem is None and value == 0:
        return "{value_zero,0}"
    return problem


def _one_of(choices: tuple[str, ...], problem: str) -> Callable[[Any], str | None]:
    """A string argument with a fixed set of values; RabbitMQ's text for a wrong one is ``problem``."""

    def check(value: Any) -> str | None:
        type_problem = _string(value)
        if type_problem is not None:
            return type_problem
        return None if _text(value) in choices else problem.format(_text(value))

    return check


def _queue_version(value: Any) -> str | None:
    problem = _non_negative_int(value)
    if problem is None and value not in QUEUE_VERSIONS:
        return f"\"unsupported queue version '{value}'\""
    return problem


def _retry_delays(value: Any) -> str | None:
    """A non-empty array of non-negative integers (milliseconds); a mailslot extension."""
    if not isinstance(value, list):
        return f"{{unacceptable_type,{field_type(value)}}}"
    if not value:
        return '"expected a non-empty array of milliseconds"'
    for item in value:
        problem = _non_negative_int(item)
        if problem is not None:
            return problem
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
    "x-message-ttl": _ttl,
    "x-expires": _expires,
    # Accepted as RabbitMQ does and otherwise ignored (docs/lifecycle-ttl.md, "No-op arguments").
    "x-queue-type": _one_of(QUEUE_TYPES, "\"unsupported queue type '{}'\""),
    "x-queue-mode": _one_of(QUEUE_MODES, "\"unsupported queue mode '{}'\""),
    "x-queue-version": _queue_version,
    "x-queue-master-locator": _one_of(MASTER_LOCATORS, "invalid_queue_master_locator"),
    "x-queue-leader-locator": _one_of(LEADER_LOCATORS, "invalid_queue_locator_arg"),
    "x-max-in-memory-length": _non_negative_int,
    "x-max-in-memory-bytes": _non_negative_int,
    "x-quorum-initial-group-size": _non_negative_int,
    "x-dead-letter-strategy": _one_of(DEAD_LETTER_STRATEGIES, "invalid_dlx_strategy"),
    "x-max-priority": _max_priority,
    "x-single-active-consumer": _bool,
    "x-delivery-limit": _non_negative_int,
    "x-consumer-timeout": _non_negative_int,
    "x-retry-delays": _retry_delays,
    # RabbitMQ's message-deduplication plugin; x-cache-size, x-cache-ttl and x-deduplication-key on a
    # queue are mailslot extensions (docs/deduplication.md).
    "x-message-deduplication": _bool,
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


def validate_queue_properties(
    name: str, vhost: str, arguments: dict[str, Any], *, durable: bool, exclusive: bool, auto_delete: bool
) -> None:
    """A quorum queue must be durable, not exclusive, not auto-delete: RabbitMQ refuses the declaration
    in these words (rabbit_quorum_queue:declare), so mailslot does too, though it keeps it as a classic queue."""
    if _text(arguments.get("x-queue-type", "classic")) != "quorum":
        return
    for bad, prop in ((auto_delete, "auto-delete"), (exclusive, "exclusive-owner"), (not durable, "non-durable")):
        if bad:
            raise PreconditionFailed(f"invalid property '{prop}' for queue '{name}' in vhost '{vhost}'")


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """What a queue's arguments make it do, parsed once at declaration."""

    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    message_ttl: int | None = None  # x-message-ttl, ms
    expires: int | None = None  # x-expires, ms
    max_priority: int = 0  # x-max-priority: 0 is an ordinary FIFO queue, as in RabbitMQ (one level)
    single_active_consumer: bool = False
    # Redelivery (core/redelivery.py, docs/lifecycle-redelivery.md).
    delivery_limit: int | None = None  # x-delivery-limit: failed deliveries before dead-lettering
    consumer_timeout: int | None = None  # x-consumer-timeout, ms (0: none); None: the broker-wide setting
    retry_delays: tuple[int, ...] = ()  # x-retry-delays, ms: a requeued message waits before it is ready

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
            message_ttl=arguments.get("x-message-ttl"),
            expires=arguments.get("x-expires"),
            max_priority=arguments.get("x-max-priority", 0),
            single_active_consumer=arguments.get("x-single-active-consumer") is True,
            delivery_limit=arguments.get("x-delivery-limit"),
            consumer_timeout=arguments.get("x-consumer-timeout"),
            retry_delays=tuple(arguments.get("x-retry-delays") or ()),
        )

    @property
    def bounded(self) -> bool:
        return self.max_length is not None or self.max_length_bytes is not None
