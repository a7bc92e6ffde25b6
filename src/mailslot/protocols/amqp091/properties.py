"""Content-header property blocks (AMQP 0-9-1 section 4.2.6.1), kept raw on the hot path.

``raw`` everywhere is the property block of a content header: one or more 16-bit property-flag words
(bit 0 = "another flag word follows") followed by the present properties in flag order. The broker stores
and forwards it untouched; only the few fields routing and durability need are read, by walking the flags.
"""

from __future__ import annotations

import struct
from typing import Any

from pamqp import commands, decode

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

FLAG_CONTENT_TYPE = 0x8000
FLAG_CONTENT_ENCODING = 0x4000
FLAG_HEADERS = 0x2000
FLAG_DELIVERY_MODE = 0x1000
FLAG_PRIORITY = 0x0800

#: The empty property block: one flag word, nothing set.
EMPTY = b"\x00\x00"


def _skip_flag_words(raw: bytes) -> tuple[int, int]:
    """Return (first flag word, offset of the property list)."""
    flags = _U16.unpack_from(raw, 0)[0]
    p = 2
    word = flags
    while word & 1:
        word = _U16.unpack_from(raw, p)[0]
        p += 2
    return flags, p


def _offset_after_headers(raw: bytes, flags: int, p: int) -> int:
    if flags & FLAG_CONTENT_TYPE:
        p += 1 + raw[p]
    if flags & FLAG_CONTENT_ENCODING:
        p += 1 + raw[p]
    if flags & FLAG_HEADERS:
        p += 4 + _U32.unpack_from(raw, p)[0]
    return p


def delivery_mode(raw: bytes) -> int:
    """delivery-mode of a raw property block; 0 when absent (1 = transient, 2 = persistent).

    Raises ValueError (struct.error / IndexError wrapped) on a truncated block.
    """
    try:
        flags, p = _skip_flag_words(raw)
        if not flags & FLAG_DELIVERY_MODE:
            return 0
        return raw[_offset_after_headers(raw, flags, p)]
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed property block: {exc}") from exc


def priority(raw: bytes) -> int:
    """The priority of a raw property block; 0 when absent. Raises ValueError on a truncated block."""
    try:
        flags, p = _skip_flag_words(raw)
        if not flags & FLAG_PRIORITY:
            return 0
        p = _offset_after_headers(raw, flags, p)
        if flags & FLAG_DELIVERY_MODE:
            p += 1
        return raw[p]
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed property block: {exc}") from exc


def headers(raw: bytes) -> dict[str, Any] | None:
    """The headers table of a raw property block, or None when absent."""
    try:
        flags, p = _skip_flag_words(raw)
        if not flags & FLAG_HEADERS:
            return None
        if flags & FLAG_CONTENT_TYPE:
            p += 1 + raw[p]
        if flags & FLAG_CONTENT_ENCODING:
            p += 1 + raw[p]
        length = _U32.unpack_from(raw, p)[0]
        if p + 4 + length > len(raw):
            raise ValueError("headers table exceeds the property block")
        _, table = decode.field_table(bytes(raw[p:p + 4 + length]))
        return table
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed property block: {exc}") from exc


def decode_properties(raw: bytes) -> commands.Basic.Properties:
    """Full decode with pamqp (slow path: management, basic.get, dead-lettering...)."""
    try:
        props = commands.Basic.Properties()
        flags, p = 0, 0
        index = 0
        while True:
            word = _U16.unpack_from(raw, p)[0]
            p += 2
            flags |= word << (index * 16)
            if not word & 1:
                break
            index += 1
        props.unmarshal(flags, bytes(raw[p:]))
        return props
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed property block: {exc}") from exc


def encode_properties(props: commands.Basic.Properties) -> bytes:
    """Encode pamqp properties into a raw property block."""
    return props.marshal()


_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


def with_int_header(raw: bytes, name: str, value: int) -> bytes:
    """``raw`` with header ``name`` set to the integer ``value`` (signed 32-bit, ``I``, as RabbitMQ writes
    one; 64-bit beyond that). Every other byte stays as it was: a pamqp decode/encode round trip would
    change other headers' field types (a double comes back as a 32-bit float, a long as a byte)."""
    try:
        flags, p = _skip_flag_words(raw)
        if flags & FLAG_CONTENT_TYPE:
            p += 1 + raw[p]
        if flags & FLAG_CONTENT_ENCODING:
            p += 1 + raw[p]
        key = name.encode()
        entry = bytes([len(key)]) + key
        entry += b"I" + _I32.pack(value) if -(2**31) <= value < 2**31 else b"l" + _I64.pack(value)
        if not flags & FLAG_HEADERS:
            table = _U32.pack(len(entry)) + entry
            return _U16.pack(flags | FLAG_HEADERS) + bytes(raw[2:p]) + table + bytes(raw[p:])
        length = _U32.unpack_from(raw, p)[0]
        end = p + 4 + length
        if end > len(raw):
            raise ValueError("headers table exceeds the property block")
        kept = bytearray()
        i = p + 4
        while i < end:
            start = i
            key_length = raw[i]
            found = bytes(raw[i + 1 : i + 1 + key_length])
            i += 1 + key_length
            if i >= end:
                raise ValueError("headers table entry exceeds the table")
            consumed, _ = decode.embedded_value(bytes(raw[i:end]))
            i += consumed
            if i > end:
                raise ValueError("headers table entry exceeds the table")
            if found != key:
                kept += raw[start:i]
        kept += entry
        return bytes(raw[:p]) + _U32.pack(len(kept)) + bytes(kept) + bytes(raw[end:])
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed property block: {exc}") from exc
