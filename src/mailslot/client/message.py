"""Messages received (:class:`Message`) and property blocks for publishing (:func:`build_properties`)."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from pamqp import commands

from mailslot.protocols.amqp091.properties import decode_properties, encode_properties
from mailslot.protocols.amqp091.properties import headers as raw_headers

if TYPE_CHECKING:
    from .channel import Channel

#: flag word 0x1000 (delivery-mode present) + delivery-mode 2: the common case needs no encoding at all.
PERSISTENT = b"\x10\x00\x02"
TRANSIENT = b"\x00\x00"


def build_properties(persistent: bool = True, headers: dict[str, Any] | None = None,
                     message_id: str | None = None, content_type: str | None = None,
                     correlation_id: str | None = None, reply_to: str | None = None,
                     expiration: str | None = None, priority: int | None = None,
                     timestamp: datetime.datetime | None = None, type: str | None = None,
                     app_id: str | None = None, content_encoding: str | None = None) -> bytes:
    """The raw content-header property block (AMQP 0-9-1 section 4.2.6.1) for these properties."""
    if (headers is None and message_id is None and content_type is None and correlation_id is None
            and reply_to is None and expiration is None and priority is None and timestamp is None
            and type is None and app_id is None and content_encoding is None):
        return PERSISTENT if persistent else TRANSIENT
    props = commands.Basic.Properties(
        content_type=content_type, content_encoding=content_encoding, headers=headers,
        delivery_mode=2 if persistent else None, priority=priority, correlation_id=correlation_id,
        reply_to=reply_to, expiration=expiration, message_id=message_id, timestamp=timestamp,
        message_type=type, app_id=app_id)
    return encode_properties(props)


class Message:
    """A delivered message (basic.deliver or basic.get-ok). ``properties`` is decoded on first use.

    Settle it once with :meth:`ack`, :meth:`nack` or :meth:`reject` (unless consumed with ``no_ack``).
    A message delivered on a connection that has since been replaced by a reconnect cannot be settled
    any more (its delivery tag died with the old connection): the broker requeues it and delivers it
    again with ``redelivered=True``; the settle methods then do nothing and return False.
    """

    __slots__ = ("_channel", "_generation", "_props", "body", "consumer_tag", "delivery_tag", "exchange",
                 "message_count", "raw_properties", "redelivered", "routing_key")

    def __init__(self, channel: Channel, generation: int, delivery_tag: int, redelivered: bool, exchange: str,
                 routing_key: str, raw_properties: bytes, body: bytes, consumer_tag: str = "",
                 message_count: int | None = None) -> None:
        self._channel = channel
        self._generation = generation
        self._props: commands.Basic.Properties | None = None
        self.body = body
        self.raw_properties = raw_properties
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.consumer_tag = consumer_tag
        self.message_count = message_count  # basic.get only: messages left in the queue

    @property
    def properties(self) -> commands.Basic.Properties:
        if self._props is None:
            self._props = decode_properties(self.raw_properties)
        return self._props

    @property
    def headers(self) -> dict[str, Any] | None:
        return raw_headers(self.raw_properties)

    @property
    def message_id(self) -> str | None:
        value = self.properties.message_id
        return None if value is None else str(value)

    @property
    def persistent(self) -> bool:
        return self.properties.delivery_mode == 2

    async def ack(self, multiple: bool = False) -> bool:
        """basic.ack this delivery (``multiple``: and every earlier one on the channel)."""
        return self._channel._settle(self._generation, self.delivery_tag, 0, multiple, False)

    async def nack(self, requeue: bool = True, multiple: bool = False) -> bool:
        return self._channel._settle(self._generation, self.delivery_tag, 1, multiple, requeue)

    async def reject(self, requeue: bool = True) -> bool:
        return self._channel._settle(self._generation, self.delivery_tag, 2, False, requeue)

    def __repr__(self) -> str:
        return (f"Message(delivery_tag={self.delivery_tag}, redelivered={self.redelivered}, "
                f"exchange={self.exchange!r}, routing_key={self.routing_key!r}, body={self.body[:32]!r})")
