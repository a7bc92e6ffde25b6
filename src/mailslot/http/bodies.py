"""Request bodies and query parameters: JSON decoded as RabbitMQ decodes it, each field checked by name.

RabbitMQ's ``rabbit_mgmt_util:decode`` takes an empty body, ``null`` and ``undefined`` as ``{}``, refuses a
body that is not JSON with ``not_json`` and one that decodes to a string as doubly encoded; those texts are
kept. Where RabbitMQ answers a bad field with an Erlang term (``["not_boolean","maybe"]``), mailslot names
the field instead (``durable: expected true or false, got "maybe"``): same status and error type, a reason
a person can act on (docs/management-api.md lists this difference).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .errors import bad_request

DOUBLY_ENCODED = (
    "invalid payload: the request body JSON-decoded to a string. Is the input doubly-JSON-encoded?"
)


def decode_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object (RabbitMQ's rules for the empty and non-object cases)."""
    text = raw.strip()
    if text in (b"", b"null", b"undefined"):
        return {}
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("not_json") from None
    if isinstance(value, dict):
        return value
    if value is None or isinstance(value, bool):
        return {}
    if isinstance(value, str):
        raise bad_request(DOUBLY_ENCODED)
    raise bad_request("not_json")


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object the request carries; the app's ``client_max_size`` bounds what is read (a larger
    body is refused with 400 before it is buffered: see errors.error_middleware)."""
    return decode_body(await request.read())


def _shown(value: Any) -> str:
    return json.dumps(value)[:100]


def parse_bool(name: str, value: Any) -> bool:
    """true/false, or the strings "true"/"false" (rabbitmqadmin sends ``"durable": "true"``)."""
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise bad_request(f"{name}: expected true or false, got {_shown(value)}")


def parse_int(name: str, value: Any, minimum: int | None = None) -> int:
    """An integer or its decimal string (rabbitmqadmin sends ``"count": "1"``)."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value.strip())
    if number is None:
        raise bad_request(f"{name}: expected an integer, got {_shown(value)}")
    if minimum is not None and number < minimum:
        raise bad_request(f"{name}: expected an integer of at least {minimum}, got {number}")
    return number


def parse_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise bad_request(f"{name}: expected a string, got {_shown(value)}")
    return value


def parse_object(name: str, value: Any) -> dict[str, Any]:
    """A JSON object; ``[]`` too, as the empty one (RabbitMQ reads JSON into Erlang terms, where an empty
    list is the empty property list: clients such as pyrabbit2 send ``"arguments": []``)."""
    if value == []:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"{name}: expected a JSON object, got {_shown(value)}")
    return value


def field(body: Mapping[str, Any], name: str, kind: str, default: Any = None, *, required: bool = False) -> Any:
    """``body[name]`` checked as ``kind`` ("bool", "int", "str", "object", "any"); ``default`` when it
    is absent or null, or a 400 naming it when ``required``."""
    value = body.get(name)
    if value is None:
        if required:
            raise bad_request(f"{name}: missing (required)")
        return default
    if kind == "bool":
        return parse_bool(name, value)
    if kind == "int":
        return parse_int(name, value)
    if kind == "str":
        return parse_str(name, value)
    if kind == "object":
        return parse_object(name, value)
    return value


def query_flag(request: web.Request, name: str) -> bool:
    """A query-string switch that is on only when it says ``true`` (RabbitMQ's ``if-unused=true``)."""
    return request.query.get(name) == "true"
