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


def _headers_at(raw: bytes, flags: int, p: int) -> int:
    """Offset of the headers table (its length field), or of where it would go: after content-type and
    content-encoding, the two shortstrs before it."""
    if flags & FLAG_CONTENT_TYPE:
        p += 1 + raw[p]
    if flags & FLAG_CONTENT_ENCODING:
        p += 1 + raw[p]
    return p


def _table_end(raw: bytes, p: int) -> int:
    """End offset of the headers table whose length field is at ``p``."""
    end = p + 4 + _U32.unpack_from(raw, p)[0]
    if end > len(raw):
        raise ValueError("headers table exceeds the property block")
    return end


def _offset_after_headers(raw: bytes, flags: int, p: int) -> int:
    # _headers_at written out: delivery_mode() runs on every publish, and a call costs more than these lines.
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
        p = _headers_at(raw, flags, p)
        _, table = decode.field_table(bytes(raw[p : _table_end(raw, p)]))
        return table
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed property block: {exc}") from exc


# Field-table values (RabbitMQ's dialect, as pamqp reads them): fixed sizes by type tag; S, A, F and x
# carry a 4-octet length instead.
_FIXED_SIZES = {b"t"[0]: 1, b"b"[0]: 1, b"B"[0]: 1, b"s"[0]: 2, b"u"[0]: 2, b"I"[0]: 4, b"i"[0]: 4, b"l"[0]: 8,
                b"L"[0]: 8, b"f"[0]: 4, b"d"[0]: 8, b"D"[0]: 5, b"T"[0]: 8, b"V"[0]: 0, 0: 0}
_LENGTH_PREFIXED = frozenset(b"SAFx")
_INTEGERS = {b"b"[0]: struct.Struct(">b"), b"B"[0]: struct.Struct(">B"), b"s"[0]: struct.Struct(">h"),
             b"u"[0]: struct.Struct(">H"), b"I"[0]: struct.Struct(">i"), b"i"[0]: struct.Struct(">I"),
             b"l"[0]: struct.Struct(">q"), b"L"[0]: struct.Struct(">q")}


def header(raw: bytes, name: str) -> Any:
    """One header's value (as pamqp would decode it), or None when absent: walks the table without
    building it (deduplication reads its key on every publish; a dict per message costs GC time)."""
    try:
        flags, p = _skip_flag_words(raw)
        if not flags & FLAG_HEADERS:
            return None
        p = _headers_at(raw, flags, p)
        end = _table_end(raw, p)
        p += 4
        wanted = name.encode()
        while p < end:
            key_end = p + 1 + raw[p]
            key = raw[p + 1 : key_end]
            tag = raw[key_end]
            p = key_end + 1
            size = 4 + _U32.unpack_from(raw, p)[0] if tag in _LENGTH_PREFIXED else _FIXED_SIZES.get(tag)
            if size is None or p + size > end:
                raise ValueError(f"bad field in headers table (type {tag})")
            if key == wanted:
                if tag == 83:  # S
                    value = bytes(raw[p + 4 : p + size])
                    try:
                        return value.decode("utf-8")
                    except UnicodeDecodeError:
                        return value
                if tag in _INTEGERS:
                    return _INTEGERS[tag].unpack_from(raw, p)[0]
                if tag == 120:  # x
                    return bytes(raw[p + 4 : p + size])
                if tag == 116:  # t
                    return bool(raw[p])
                if tag in (86, 0):  # V
                    return None
                table = headers(raw)  # floats, decimals, timestamps, tables, arrays: rare, let pamqp say
                return None if table is None else table.get(name)
            p += size
        return None
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed property block: {exc}") from exc


def without_header(raw: bytes, name: str) -> bytes:
    """The same property block without header ``name`` (every other byte as it was; the table may be
    left empty, as RabbitMQ's strip_header leaves it). ``raw`` itself when the header is absent."""
    try:
        flags, p = _skip_flag_words(raw)
        if not flags & FLAG_HEADERS:
            return raw
        table_at = _headers_at(raw, flags, p)
        end = _table_end(raw, table_at)
        p = table_at + 4
        wanted = name.encode()
        while p < end:
            start = p
            key_end = p + 1 + raw[p]
            tag = raw[key_end]
            p = key_end + 1
            size = 4 + _U32.unpack_from(raw, p)[0] if tag in _LENGTH_PREFIXED else _FIXED_SIZES.get(tag)
            if size is None or p + size > end:
                raise ValueError(f"bad field in headers table (type {tag})")
            p += size
            if raw[start + 1 : key_end] == wanted:
                length = _U32.pack(end - table_at - 4 - (p - start))
                return bytes(raw[:table_at]) + length + bytes(raw[table_at + 4 : start]) + bytes(raw[p:])
        return raw
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed property block: {exc}") from exc


# After the headers table: delivery-mode and priority (octets), then correlation-id, reply-to and
# expiration (shortstrs) come before message-id.
_BEFORE_MESSAGE_ID = ((0x1000, 1), (0x0800, 1), (0x0400, 0), (0x0200, 0), (0x0100, 0))
FLAG_MESSAGE_ID = 0x0080


def message_id(raw: bytes) -> str | None:
    """message-id of a raw property block (deduplication keys), walking the flags; None when absent."""
    try:
        flags, p = _skip_flag_words(raw)
        if not flags & FLAG_MESSAGE_ID:
            return None
        p = _offset_after_headers(raw, flags, p)
        for flag, octets in _BEFORE_MESSAGE_ID:
            if flags & flag:
                p += octets or 1 + raw[p]
        length = raw[p]
        if p + 1 + length > len(raw):
            raise ValueError("message-id exceeds the property block")
        return bytes(raw[p + 1 : p + 1 + length]).decode("utf-8", errors="surrogateescape")
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
        p = _headers_at(raw, flags, p)
        key = name.encode()
        entry = bytes([len(key)]) + key
        entry += b"I" + _I32.pack(value) if -(2**31) <= value < 2**31 else b"l" + _I64.pack(value)
        if not flags & FLAG_HEADERS:
            table = _U32.pack(len(entry)) + entry
            return _U16.pack(flags | FLAG_HEADERS) + bytes(raw[2:p]) + table + bytes(raw[p:])
        end = _table_end(raw, p)
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
