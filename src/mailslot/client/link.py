"""The seam between a :class:`~.channel.Channel` and its :class:`~.connection.Connection`.

A channel asks its connection for exactly what :class:`ConnectionLink` lists (Connection implements it);
a connection drives its channels the way asyncio drives a protocol, through the three calls listed in
:class:`LinkedChannel` (Channel implements it). Neither touches the other's private state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from mailslot.protocols.amqp091.client import ClientConnection
from mailslot.protocols.amqp091.events import Event

if TYPE_CHECKING:
    from .errors import ClientError

#: One request, replayable after a reconnect: ``send(wire, channel_number)`` queues its frames.
Send = Callable[[ClientConnection, int], None]
#: What a declaration is remembered under (repeated after a reconnect): ("queue", name), ...
TopologyKey = tuple[str, ...]


class ConnectionLink(Protocol):
    """What a channel needs from its connection."""

    @property
    def is_open(self) -> bool:
        """Connected and not reconnecting: what a channel queues now goes out on the current connection."""

    async def wait_ready(self) -> None:
        """Wait until the connection is (re-)established; raises once it is closed for good."""

    @property
    def wire(self) -> ClientConnection:
        """The sans-IO connection a channel queues its frames on (a reconnect replaces it)."""

    def flush(self) -> None:
        """Write what is queued, now (one ``transport.write``)."""

    def flush_soon(self) -> None:
        """Write what is queued at the end of this loop turn: small writes of one turn are coalesced."""

    @property
    def blocked(self) -> bool:
        """The broker sent connection.blocked (a resource alarm): publishers should ``await wait_unblocked()``."""

    async def wait_unblocked(self) -> None:
        """Wait until the broker unblocks the connection (or it is lost or closed)."""

    @property
    def write_paused(self) -> bool:
        """The socket's write buffer is full: a publisher should ``await drain()``."""

    async def drain(self) -> None:
        """Wait until the socket takes writes again."""

    def remember(self, key: TopologyKey, send: Send, reply: type) -> None:
        """Declare ``send`` again (expecting ``reply``) after a reconnect."""

    def forget(self, key: TopologyKey) -> None:
        """Stop repeating ``key`` (deleted; a queue takes its bindings with it)."""

    def attach(self, number: int, channel: LinkedChannel) -> None:
        """Route the events of channel ``number`` to ``channel`` (again, after a server close)."""

    def detach(self, number: int) -> None:
        """Stop routing events to channel ``number``."""


class LinkedChannel(Protocol):
    """What a connection asks of each of its channels."""

    @property
    def failed(self) -> ClientError | None:
        """Why the channel is unusable (it is not restored after a reconnect), or None."""

    def event_received(self, event: Event) -> None:
        """An event for this channel (delivery, confirm, method, content, channel.close from the server).
        What it queues on the wire is written once the events of the read are handled."""

    def connection_lost(self, error: ClientError, reconnecting: bool) -> None:
        """The connection dropped; with ``reconnecting`` the channel will be restored."""

    async def restore(self) -> None:
        """channel.open on the current connection, then the modes and consumers the channel had."""
