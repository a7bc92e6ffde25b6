"""Sender-selected distribution (https://www.rabbitmq.com/docs/sender-selected), as RabbitMQ 3.10 does it:
the ``CC`` and ``BCC`` headers of a publish, each an array of longstr, add routing keys to the publish's
own; ``BCC`` is removed from the message before it is stored or delivered, ``CC`` stays. A header of any
other type is refused: 406 "invalid message: {unacceptable_type_in_header,"CC",longstr}" (rabbit_basic's
header_routes); array elements that are no string are skipped.

The publish path pays nothing for this unless the property block has headers (one bit test); then it
looks for a ``C`` byte (a memchr) and, if there is one, for ``CC``; only a block where both appear has its
table decoded (``read``). ``bytes.find`` is used, not ``in``: on 3.11 it is about 40% faster.
"""

from __future__ import annotations

from typing import Any

from ...core.arguments import field_type
from ...core.errors import PreconditionFailed
from ...protocols.amqp091 import properties as props

MARKER = b"CC"  # in the encoded key of both headers ("\x02CC", "\x03BCC"): the cheap pre-test
NONE: tuple[str, ...] = ()


def read(properties: bytes) -> tuple[tuple[str, ...], bytes]:
    """(the routing keys CC and BCC add, the property block to keep: without BCC). Raises
    PreconditionFailed for a header that is not an array, ValueError for a block that does not parse."""
    headers = props.headers(properties) or {}
    keys: list[str] = []
    for name in ("CC", "BCC"):  # RabbitMQ's ?ROUTING_HEADERS order: CC is checked (and refused) first
        if name in headers:
            keys += _keys(name, headers[name])
    if "BCC" in headers:
        properties = props.without_header(properties, "BCC")
    return tuple(keys), properties


def _keys(name: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        kind = "void" if value is None else field_type(value)
        raise PreconditionFailed(f'invalid message: {{unacceptable_type_in_header,"{name}",{kind}}}')
    keys = []
    for item in value:
        if isinstance(item, str):
            keys.append(item)
        elif isinstance(item, bytes):  # a longstr that is not UTF-8 (pamqp hands it over as bytes)
            keys.append(item.decode("utf-8", errors="surrogateescape"))
    return keys
