"""The core's ``PropertiesCodec`` for AMQP 0-9-1 property blocks (headers routing, dead-lettering,
priorities, deduplication, delays, delivery counts), and the property flags the publish path checks."""

from __future__ import annotations

from typing import Any

from ...protocols.amqp091 import properties as props

FLAG_REPLY_TO = 1 << 9  # property-flag bits (AMQP 0-9-1 spec 4.2.6.1, basic class properties)
FLAG_USER_ID = 1 << 4
FLAG_EXPIRATION = 1 << 8
#: A publish with any of these properties takes the slow path (Channel.check_properties); others cost one test.
CHECKED_FLAGS = FLAG_REPLY_TO | FLAG_USER_ID | FLAG_EXPIRATION


class AMQPPropertiesCodec:
    """The core's PropertiesCodec for AMQP 0-9-1 property blocks (headers routing, dead-lettering)."""

    @staticmethod
    def headers(raw: bytes) -> dict[str, Any] | None:
        """A headers table that does not decode reads as no headers: the peer's bytes must never
        raise inside the core (routing, paging back in, dead-lettering)."""
        try:
            return props.headers(raw)
        except ValueError:
            return None

    @staticmethod
    def expiration(raw: bytes) -> str | None:
        value = props.decode_properties(raw).expiration
        return None if value is None else str(value)

    @staticmethod
    def priority(raw: bytes) -> int:
        """Read only for queues with x-max-priority; a malformed block reads as priority 0."""
        try:
            return props.priority(raw)
        except ValueError:
            return 0

    @staticmethod
    def header(raw: bytes, name: str) -> Any:
        try:
            return props.header(raw, name)
        except ValueError:
            return None

    @staticmethod
    def message_id(raw: bytes) -> str | None:
        try:
            return props.message_id(raw)
        except ValueError:
            return None

    @staticmethod
    def with_headers(raw: bytes, headers: dict[str, Any]) -> bytes:
        decoded = props.decode_properties(raw)
        decoded.headers = headers
        decoded.expiration = None
        return props.encode_properties(decoded)

    @staticmethod
    def with_int_header(raw: bytes, name: str, value: int) -> bytes:
        return props.with_int_header(raw, name, value)
