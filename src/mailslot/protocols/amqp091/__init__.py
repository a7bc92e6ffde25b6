"""AMQP 0-9-1 protocol layer, sans-IO (no sockets, no asyncio, no clock). See docs/amqp091.md.

Modules: ``frames`` (the frame reader and content assembler both sides share), ``connection`` (the server
side: handshake table, channels, output, timers), ``client`` (the client side), ``codec`` (frame encoding
and the hot-path fast paths), ``sasl`` (PLAIN, AMQPLAIN), ``properties`` (raw content-header property
blocks), ``errors`` (reply codes), ``events``, ``peer`` (a minimal pamqp-only client for tests).
"""

from . import properties
from .connection import CLOSING_TIMEOUT, HANDSHAKE_TIMEOUT, PROTOCOL_HEADER, ServerConnection, State
from .errors import AMQPConnectionError, AMQPError, ChannelError, ReplyCode, is_hard, reply_text
from .events import (
    AckReceived,
    ChannelCloseReceived,
    ChannelOpened,
    ConnectionCloseReceived,
    ConnectionOpen,
    ConnectionStartOk,
    ConnectionTerminated,
    ContentReceived,
    Event,
    MethodReceived,
)
from .properties import decode_properties, delivery_mode, encode_properties, headers

__all__ = [
    "CLOSING_TIMEOUT", "HANDSHAKE_TIMEOUT", "PROTOCOL_HEADER",
    "AMQPConnectionError", "AMQPError", "AckReceived", "ChannelCloseReceived", "ChannelError", "ChannelOpened",
    "ConnectionCloseReceived", "ConnectionOpen", "ConnectionStartOk", "ConnectionTerminated",
    "ContentReceived", "Event", "MethodReceived", "ReplyCode", "ServerConnection", "State", "decode_properties",
    "delivery_mode", "encode_properties", "headers", "is_hard", "properties", "reply_text",
]
