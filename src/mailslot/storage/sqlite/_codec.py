"""AMQP field tables <-> JSON text, losslessly.

JSON alone cannot hold every field-table value type (AMQP 0-9-1 section 4.2.5.5: byte arrays,
decimals, timestamps), so those are written as one-key tagged objects: ``{"$bytes": base64}``,
``{"$decimal": "1.50"}``, ``{"$datetime": iso-8601}``. A table that itself has a key starting with
``$`` is wrapped as ``{"$table": {...}}`` so it is never mistaken for a tag. Key order is kept.
Arrays come back as lists (tuples go in as lists).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

_SEPARATORS = (",", ":")


def _enc(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, dict):
        out = {str(k): _enc(x) for k, x in v.items()}
        if any(k.startswith("$") for k in out):
            return {"$table": out}
        return out
    if isinstance(v, (list, tuple)):
        return [_enc(x) for x in v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, Decimal):
        return {"$decimal": str(v)}
    if isinstance(v, datetime):
        return {"$datetime": v.isoformat()}
    raise TypeError(f"cannot store a {type(v).__name__} in a field table")


def _dec(v: Any) -> Any:
    if isinstance(v, dict):
        if len(v) == 1:
            ((k, x),) = v.items()
            if k == "$table":
                return {k2: _dec(x2) for k2, x2 in x.items()}
            if k == "$bytes":
                return base64.b64decode(x)
            if k == "$decimal":
                return Decimal(x)
            if k == "$datetime":
                return datetime.fromisoformat(x)
        return {k: _dec(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_dec(x) for x in v]
    return v


def encode_table(table: dict[str, Any]) -> str:
    return json.dumps(_enc(table), separators=_SEPARATORS, ensure_ascii=False)


def decode_table(text: str) -> dict[str, Any]:
    value = _dec(json.loads(text))
    if not isinstance(value, dict):
        raise TypeError("stored arguments are not a table")
    return value
