"""SASL mechanisms of connection.start-ok (AMQP 0-9-1 section 1.4.2.2; RabbitMQ's rabbit_auth_mechanism_*).

A mechanism turns the client's ``response`` into :class:`Credentials`, or None when the response is
malformed (RabbitMQ closes silently then). Whether the credentials are good is not decided here: the
front end does that after :class:`~.events.ConnectionStartOk`.

To add a mechanism (EXTERNAL for TLS client certificates, say): write a class with ``name`` and
``decode`` and pass an instance in ``ServerConnection(mechanisms=...)``; its name is then offered in
connection.start. EXTERNAL's identity comes from the TLS peer certificate, not from the response, so
its ``decode`` returns ``Credentials(username="", password=None)`` and the front end fills in the name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from pamqp import decode, encode

_U32 = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a SASL response says. ``password`` is None for mechanisms that carry none (EXTERNAL)."""

    username: str
    password: str | None


class Mechanism(Protocol):
    """One SASL mechanism, server side."""

    @property
    def name(self) -> str: ...

    def decode(self, response: bytes) -> Credentials | None:
        """The credentials in ``response``, or None when it is malformed (never raises)."""


class Plain:
    """SASL PLAIN (RFC 4616) as rabbit_auth_mechanism_plain: exactly ``\\0user\\0pass``."""

    name = "PLAIN"

    def decode(self, response: bytes) -> Credentials | None:
        parts = response.split(b"\x00")
        if len(parts) != 3 or parts[0]:
            return None
        try:
            return Credentials(parts[1].decode(), parts[2].decode())
        except UnicodeDecodeError:
            return None


class AMQPlain:
    """AMQPLAIN (rabbit_auth_mechanism_amqplain): a field table without its length prefix holding
    LOGIN and PASSWORD long strings."""

    name = "AMQPLAIN"

    def decode(self, response: bytes) -> Credentials | None:
        try:
            _, table = decode.field_table(_U32.pack(len(response)) + response)
        except Exception:  # noqa: BLE001 - peer input must never raise out of receive_data
            return None
        login, password = table.get("LOGIN"), table.get("PASSWORD")
        if isinstance(login, bytes):
            login = login.decode(errors="replace")
        if isinstance(password, bytes):
            password = password.decode(errors="replace")
        if not isinstance(login, str) or not isinstance(password, str):
            return None
        return Credentials(login, password)


#: What a server offers unless told otherwise: RabbitMQ 3.10's default auth_mechanisms.
DEFAULT_MECHANISMS: tuple[Mechanism, ...] = (Plain(), AMQPlain())


def plain_response(username: str, password: str) -> str:
    """The client's PLAIN response for connection.start-ok."""
    return f"\0{username}\0{password}"


def amqplain_response(username: str, password: str) -> str:
    """The client's AMQPLAIN response: the encoded table without its length prefix."""
    return encode.field_table({"LOGIN": username, "PASSWORD": password})[4:].decode()
