"""Messages as JSON: AMQP properties and payloads in the shape of RabbitMQ's publish and get endpoints.

``properties`` is an object of AMQP 0-9-1 basic properties under their spec names (``content_type``,
``headers``, ``delivery_mode``, ``timestamp`` in seconds, ...), as rabbit_mgmt_format:basic_properties and
to_basic_properties read and write them. Header values map onto AMQP field types (text, integers,
doubles, booleans, arrays, tables); JSON ``null`` is refused, as RabbitMQ refuses it. A payload is text
(``payload_encoding`` "string") or base64; reading with ``encoding`` "auto" gives text when the body is
valid UTF-8.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import math
from collections.abc import Mapping
from typing import Any

from pamqp import commands

from ..core.message import Entry
from ..core.redelivery import delivery_properties
from ..frontends.amqp091 import AMQPPropertiesCodec
from ..protocols.amqp091 import properties as props
from .errors import bad_request

PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)
_TEXT = frozenset(PROPERTY_NAMES) - {"headers", "delivery_mode", "priority", "timestamp"}
ENCODINGS = ("auto", "base64")


def jsonable(value: Any) -> Any:
    """An AMQP field value as JSON: tables and arrays recursively, byte strings as text (base64 when not
    UTF-8), timestamps as seconds since the epoch, decimals as numbers."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.datetime):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
        return int(stamp.timestamp())
    return str(value)


def _field_value(path: str, value: Any) -> Any:
    """A JSON header value as an AMQP field value (rabbit_mgmt_format:to_amqp_table's types)."""
    if value is None:
        raise bad_request(f"{path}: null is not allowed in AMQP headers")
    if isinstance(value, dict):
        return {str(k): _field_value(f"{path}.{k}", v) for k, v in value.items()}
    if isinstance(value, list):
        return [_field_value(f"{path}[{i}]", v) for i, v in enumerate(value)]
    return value


def _int_property(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_request(f"properties.{name}: expected an integer from {low} to {high}, got {value!r}")
    return value


def properties_from_json(document: Any) -> bytes:
    """An encoded AMQP property block from the JSON ``properties`` of a publish."""
    if document is None or document == []:  # RabbitMQ itself answers empty properties as []
        document = {}
    if not isinstance(document, dict):
        raise bad_request(f"properties: expected a JSON object, got {document!r}")
    values: dict[str, Any] = {}
    for name, value in document.items():
        if value is None:
            continue
        if name in _TEXT:
            if not isinstance(value, str):
                raise bad_request(f"properties.{name}: expected a string, got {value!r}")
            values[name] = value
        elif name == "headers":
            if not isinstance(value, dict):
                raise bad_request(f"properties.headers: expected a JSON object, got {value!r}")
            values[name] = _field_value("properties.headers", value)
        elif name == "delivery_mode":
            values[name] = _int_property(name, value, 1, 2)
        elif name == "priority":
            values[name] = _int_property(name, value, 0, 255)
        elif name == "timestamp":
            seconds = _int_property(name, value, 0, 2**63 - 1)
            values[name] = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        else:
            raise bad_request(f"properties.{name}: not an AMQP basic property")
    try:
        return props.encode_properties(commands.Basic.Properties(**values))
    except (ValueError, TypeError, OverflowError) as error:
        raise bad_request(f"properties: {error}") from None


def properties_to_json(raw: bytes) -> dict[str, Any]:
    """The set properties of an encoded block as JSON (unreadable blocks show as ``{}``)."""
    try:
        decoded = props.decode_properties(raw)
    except ValueError:
        return {}
    out: dict[str, Any] = {}
    for name in PROPERTY_NAMES:
        value = getattr(decoded, name, None)
        if value is not None and value != {} and not (name == "cluster_id" and value == ""):  # pamqp's default
            out[name] = jsonable(value)
    return out


def decode_payload(payload: Any, encoding: Any) -> bytes:
    if not isinstance(payload, str):
        raise bad_request("payload: expected a string (payload_not_string)")
    if encoding in (None, "string"):
        return payload.encode("utf-8")
    if encoding == "base64":
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("payload: not valid base64") from None
    raise bad_request(f"payload_encoding: expected string or base64, got {encoding!r}")


def payload_part(body: bytes, encoding: str) -> tuple[str, str]:
    """(payload, payload_encoding): text when asked for "auto" and the body is UTF-8, base64 otherwise."""
    if encoding == "auto":
        try:
            return body.decode("utf-8"), "string"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), "base64"


def message_document(
    entry: Entry, codec: AMQPPropertiesCodec, encoding: str, truncate: int | None, **extra: Any
) -> dict[str, Any]:
    """One message as /api/queues/{vhost}/{name}/get returns it (``extra``: message_count, ...)."""
    message = entry.message
    body = bytes(message.body)
    raw = delivery_properties(entry, codec)
    payload, payload_encoding = payload_part(body if truncate is None else body[:truncate], encoding)
    return {
        "payload_bytes": len(body),
        "redelivered": entry.redelivered,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        **extra,
        # RabbitMQ writes a message without properties as [] (an empty Erlang proplist): so does mailslot.
        "properties": properties_to_json(raw) or [],
        "payload": payload,
        "payload_encoding": payload_encoding,
    }
