"""mailslot.client: an asyncio AMQP 0-9-1 client on mailslot's own sans-IO codec, for mailslot and
RabbitMQ alike. See docs/client.md.

    async with await mailslot.client.connect("amqp://guest:guest@localhost:5672/%2F") as conn:
        ch = await conn.channel()
        await ch.declare_queue("q")
        await ch.confirm_select()
        await ch.publish("", "q", b"hello")
"""

from __future__ import annotations

from .channel import Channel
from .connection import Connection, connect
from .consumer import Consumer
from .errors import (
    ChannelClosed,
    ClientError,
    ConnectionClosed,
    ConnectionLost,
    MessageReturned,
    PublishNacked,
    ReturnedMessage,
)
from .message import Message, build_properties
from .url import ConnectParams

__all__ = [
    "Channel",
    "ChannelClosed",
    "ClientError",
    "ConnectParams",
    "Connection",
    "ConnectionClosed",
    "ConnectionLost",
    "Consumer",
    "Message",
    "MessageReturned",
    "PublishNacked",
    "ReturnedMessage",
    "build_properties",
    "connect",
]
