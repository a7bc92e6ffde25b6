"""A protocol-neutral :class:`~mailslot.core.message.PropertiesCodec` for tests of the core (and a small
reference for writing a front end's codec): properties are JSON, so a test of queue semantics needs no
wire format. ``JSON_CODEC.block(headers={...}, priority=3)`` builds a property block."""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

from mailslot.core.message import Properties


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    raise TypeError(f"{type(value).__name__} has no JSON form here")


def _from_json(value: dict[str, Any]) -> Any:
    if "$datetime" in value:
        return datetime.datetime.fromisoformat(value["$datetime"])
    if "$bytes" in value:
        return bytes.fromhex(value["$bytes"])
    return value


class JsonCodec:
    """Properties as a JSON object of :class:`Properties`' fields (absent ones left out); headers may hold
    datetimes and bytes (dead-lettering writes a datetime into x-death)."""

    name = "json"

    @staticmethod
    def _load(raw: bytes) -> dict[str, Any]:
        loaded = json.loads(raw, object_hook=_from_json) if raw else {}
        if not isinstance(loaded, dict):
            raise ValueError("a property block is a JSON object")  # noqa: TRY004 - the peer's bytes: ValueError as every codec
        return loaded

    def _field(self, raw: bytes, name: str) -> Any:
        try:
            return self._load(raw).get(name)
        except ValueError:
            return None

    def headers(self, raw: bytes) -> dict[str, Any] | None:
        headers = self._field(raw, "headers")
        return headers if isinstance(headers, dict) else None

    def header(self, raw: bytes, name: str) -> Any:
        return (self.headers(raw) or {}).get(name)

    def priority(self, raw: bytes) -> int:
        priority = self._field(raw, "priority")
        return priority if isinstance(priority, int) else 0

    def expiration(self, raw: bytes) -> str | None:
        expiration = self._field(raw, "expiration")
        return None if expiration is None else str(expiration)

    def message_id(self, raw: bytes) -> str | None:
        message_id = self._field(raw, "message_id")
        return None if message_id is None else str(message_id)

    def decode(self, raw: bytes) -> Properties:
        try:
            loaded = self._load(raw)
        except ValueError:
            return Properties()
        known = {f.name for f in dataclasses.fields(Properties)}
        return Properties(**{k: v for k, v in loaded.items() if k in known})

    def encode(self, properties: Properties, persistent: bool) -> bytes:
        fields = {k: v for k, v in dataclasses.asdict(properties).items() if v not in (None, {})}
        return json.dumps(fields, default=_to_json, sort_keys=True).encode()

    def block(self, **fields: Any) -> bytes:
        """A property block with these :class:`Properties` fields."""
        return self.encode(Properties(**fields), True)

    def with_headers(self, raw: bytes, headers: dict[str, Any]) -> bytes:
        loaded = self._load(raw)
        loaded["headers"] = headers
        loaded.pop("expiration", None)
        return json.dumps(loaded, default=_to_json, sort_keys=True).encode()

    def with_int_header(self, raw: bytes, name: str, value: int) -> bytes:
        loaded = self._load(raw)
        headers = loaded.get("headers")
        loaded["headers"] = {**(headers if isinstance(headers, dict) else {}), name: value}
        return json.dumps(loaded, default=_to_json, sort_keys=True).encode()


JSON_CODEC = JsonCodec()
