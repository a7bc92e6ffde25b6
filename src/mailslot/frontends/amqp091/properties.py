"""AMQP 0-9-1's :class:`~mailslot.core.message.PropertiesCodec` (RabbitMQ 3.13's ``mc_amqpl``): a message
published over AMQP 0-9-1 keeps its content-header property block as it arrived, and the core reads and
rewrites it only through this codec. Also the property flags the publish path checks."""

from __future__ import annotations

import datetime
from typing import Any

from pamqp import commands

from ...core.message import Properties
from ...protocols.amqp091 import properties as props

FLAG_REPLY_TO = 1 << 9  # property-flag bits (AMQP 0-9-1 spec 4.2.6.1, basic class properties)
FLAG_USER_ID = 1 << 4
FLAG_EXPIRATION = 1 << 8
FLAG_HEADERS = 1 << 13  # a publish with headers may carry CC/BCC (sender_selected.py)
#: A publish with any of these properties takes the slow path (Channel.check_properties); others cost one test.
CHECKED_FLAGS = FLAG_REPLY_TO | FLAG_USER_ID | FLAG_EXPIRATION


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class AMQPPropertiesCodec:
    """Reads and rewrites AMQP 0-9-1 property blocks for the core. Readers never raise on the peer's bytes
    (routing, paging back in, dead-lettering must not fail on them): what does not decode reads as absent."""

    __slots__ = ()  # no instance dict: ``codec.name`` is read for every stored message
    name = "amqp091"  # stored with each durable message: never change it (storage/api.py DEFAULT_CODEC)

    @staticmethod
    def headers(raw: bytes) -> dict[str, Any] | None:
        try:
            return props.headers(raw)
        except ValueError:
            return None

    @staticmethod
    def header(raw: bytes, name: str) -> Any:
        try:
            return props.header(raw, name)
        except ValueError:
            return None

    @staticmethod
    def priority(raw: bytes) -> int:
        """Read only for queues with x-max-priority; a malformed block reads as priority 0."""
        try:
            return props.priority(raw)
        except ValueError:
            return 0

    @staticmethod
    def expiration(raw: bytes) -> str | None:
        try:
            return _text(props.decode_properties(raw).expiration)
        except ValueError:
            return None

    @staticmethod
    def message_id(raw: bytes) -> str | None:
        try:
            return props.message_id(raw)
        except ValueError:
            return None

    @staticmethod
    def decode(raw: bytes) -> Properties:
        try:
            p = props.decode_properties(raw)
        except ValueError:
            return Properties()
        timestamp = p.timestamp
        if isinstance(timestamp, datetime.datetime) and timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=datetime.UTC)  # AMQP timestamps are seconds since the epoch
        return Properties(
            content_type=_text(p.content_type), content_encoding=_text(p.content_encoding),
            headers=dict(p.headers or {}), priority=p.priority, correlation_id=_text(p.correlation_id),
            reply_to=_text(p.reply_to), expiration=_text(p.expiration), message_id=_text(p.message_id),
            timestamp=timestamp, type=_text(p.message_type), user_id=_text(p.user_id), app_id=_text(p.app_id),
        )

    @staticmethod
    def encode(properties: Properties, persistent: bool) -> bytes:
        """A property block for a message published in another protocol (RabbitMQ's mc_amqpl writes
        delivery-mode 2 for a durable message and 1 otherwise)."""
        p = properties
        return props.encode_properties(commands.Basic.Properties(
            content_type=p.content_type, content_encoding=p.content_encoding, headers=p.headers or None,
            delivery_mode=2 if persistent else 1, priority=p.priority, correlation_id=p.correlation_id,
            reply_to=p.reply_to, expiration=p.expiration, message_id=p.message_id, timestamp=p.timestamp,
            message_type=p.type, user_id=p.user_id, app_id=p.app_id,
        ))

    @staticmethod
    def headers_only(headers: dict[str, Any]) -> bytes:
        """A block with these headers and no other property (a firehose trace message, core/tracing.py:
        RabbitMQ's rabbit_trace sets nothing else, not even a delivery mode)."""
        return props.encode_properties(commands.Basic.Properties(headers=headers))

    @staticmethod
    def with_headers(raw: bytes, headers: dict[str, Any]) -> bytes:
        decoded = props.decode_properties(raw)
        decoded.headers = headers
        decoded.expiration = None
        return props.encode_properties(decoded)

    @staticmethod
    def with_int_header(raw: bytes, name: str, value: int) -> bytes:
        return props.with_int_header(raw, name, value)


#: The one instance the front end stamps on every message it builds (``message.codec is AMQP_CODEC``
#: tells the delivery path that the property block goes out as it came in).
AMQP_CODEC = AMQPPropertiesCodec()
