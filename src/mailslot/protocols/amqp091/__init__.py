"""AMQP 0-9-1 protocol layer, sans-IO (no sockets, no asyncio, no clock). See docs/amqp091.md."""

from . import properties
from .connection import CLOSING_TIMEOUT, HANDSHAKE_TIMEOUT, PROTOCOL_HEADER, ServerConnection
from .errors import (
    ACCESS_REFUSED,
    CHANNEL_ERROR,
    COMMAND_INVALID,
    CONNECTION_FORCED,
    CONTENT_TOO_LARGE,
    FRAME_ERROR,
    INTERNAL_ERROR,
    INVALID_PATH,
    NO_CONSUMERS,
    NO_ROUTE,
    NOT_ALLOWED,
    NOT_FOUND,
    NOT_IMPLEMENTED,
    PRECONDITION_FAILED,
    REPLY_SUCCESS,
    RESOURCE_ERROR,
    RESOURCE_LOCKED,
    SYNTAX_ERROR,
    UNEXPECTED_FRAME,
    AMQPConnectionError,
    AMQPError,
    ChannelError,
    ConnectionError_,
    is_hard,
    reply_text,
)
from .events import (
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
    "ACCESS_REFUSED", "CHANNEL_ERROR", "CLOSING_TIMEOUT", "COMMAND_INVALID", "CONNECTION_FORCED",
    "CONTENT_TOO_LARGE", "FRAME_ERROR", "HANDSHAKE_TIMEOUT", "INTERNAL_ERROR", "INVALID_PATH", "NOT_ALLOWED",
    "NOT_FOUND", "NOT_IMPLEMENTED", "NO_CONSUMERS", "NO_ROUTE", "PRECONDITION_FAILED", "PROTOCOL_HEADER",
    "REPLY_SUCCESS", "RESOURCE_ERROR", "RESOURCE_LOCKED", "SYNTAX_ERROR", "UNEXPECTED_FRAME",
    "AMQPConnectionError", "AMQPError", "ChannelCloseReceived", "ChannelError", "ChannelOpened",
    "ConnectionCloseReceived", "ConnectionError_", "ConnectionOpen", "ConnectionStartOk", "ConnectionTerminated",
    "ContentReceived", "Event", "MethodReceived", "ServerConnection", "decode_properties", "delivery_mode",
    "encode_properties", "headers", "is_hard", "properties", "reply_text",
]
