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


def _max_priority(value: Any) -> str | None:
    problem = _non_negative_int(value)
    if problem is None and value > MAX_PRIORITY:
        return f"{{max_value_exceeded,{value}}}"
    return problem


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


# The longest x-message-ttl, x-expires and expiration RabbitMQ 3.10 accepts: ten years in ms.
MAX_TTL = 315_360_000_000
QUEUE_TYPES = ("classic", "quorum")  # quorum: a durable classic queue here (docs/lifecycle-ttl.md); no streams
QUEUE_MODES = ("default", "lazy")  # both page beyond the memory window: lazy is a no-op
QUEUE_VERSIONS = (1, 2)
MASTER_LOCATORS = ("min-masters", "client-local", "random")
LEADER_LOCATORS = ("client-local", "balanced")
DEAD_LETTER_STRATEGIES = ("at-most-once", "at-least-once")


def _ttl(value: Any) -> str | None:
    """x-message-ttl: 0 .. ten years (0 is TTL 0: deliver now or expire)."""
    problem = _non_negative_int(value)
    if problem is None and value > MAX_TTL:
        return f"{{value_too_large,{value}}}"
    return problem


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
}


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
