"""Drive a ServerConnection with a ClientPeer over an in-memory wire."""

from __future__ import annotations

from typing import Any

from pamqp import commands

from mailslot.protocols.amqp091 import (
    ConnectionOpen,
    ConnectionStartOk,
    Event,
    ServerConnection,
)
from mailslot.protocols.amqp091.peer import ClientPeer, parse_frames

SERVER_PROPS = {"product": "mailslot", "capabilities": {"publisher_confirms": True}}


def new_server(**kw: Any) -> ServerConnection:
    kw.setdefault("server_properties", SERVER_PROPS)
    return ServerConnection(**kw)


def handshake(server: ServerConnection | None = None, client: ClientPeer | None = None,
              now: float = 0.0) -> tuple[ServerConnection, ClientPeer, list[Event]]:
    """Full handshake up to connection.open-ok; returns all server events."""
    server = server or new_server(now=now)
    client = client or ClientPeer()
    events = list(server.receive_data(client.start(), now))
    _, reply = client.receive_data(server.data_to_send())
    events += server.receive_data(reply, now)
    assert isinstance(events[-1], ConnectionStartOk), events
    server.accept_login()
    _, reply = client.receive_data(server.data_to_send())
    events += server.receive_data(reply, now)
    assert isinstance(events[-1], ConnectionOpen), events
    server.accept_open()
    client.receive_data(server.data_to_send())
    return server, client, events


def frames(server: ServerConnection) -> list[tuple[int, Any]]:
    out, tail = parse_frames(server.data_to_send())
    assert tail == b""
    return out


def close_of(server: ServerConnection) -> commands.Connection.Close:
    """The connection.close the server queued (asserting there is exactly one)."""
    closes = [f for _, f in frames(server) if isinstance(f, commands.Connection.Close)]
    assert len(closes) == 1, closes
    return closes[0]


def channel_close_of(server: ServerConnection) -> tuple[int, commands.Channel.Close]:
    closes = [(ch, f) for ch, f in frames(server) if isinstance(f, commands.Channel.Close)]
    assert len(closes) == 1, closes
    return closes[0]
