"""The broker's table of open client connections, whatever their protocol.

A front end adds a :class:`ConnectionInfo` once a connection is open on a vhost (AMQP: after
``connection.open-ok``) and removes it when the connection ends. The table answers what limits and
administrators ask: how many connections a user or vhost has, how many channels a user holds, and closes
connections when their user or vhost is deleted or the user's password changes (RabbitMQ's
rabbit_connection_tracking). The management API lists it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .session import Session


@dataclass(eq=False)
class ConnectionInfo:
    """One open connection. ``channels`` counts its open channels now; ``close(text)`` closes it from the
    broker's side (AMQP: 320 CONNECTION_FORCED with ``text``)."""

    user: str
    vhost: str
    peer_host: str
    peer_port: int
    channels: Callable[[], int]
    close: Callable[[str], None]
    protocol: str = "AMQP 0-9-1"
    tls: bool = False
    client_properties: dict[str, Any] = field(default_factory=dict)
    connected_at: float = field(default_factory=time.time)
    name: str = ""  # RabbitMQ's "peer:port -> host:port"; the front end fills it in


class ConnectionRegistry:
    def __init__(self) -> None:
        self._all: dict[ConnectionInfo, None] = {}  # insertion-ordered set
        self._by_user: dict[str, set[ConnectionInfo]] = {}
        self._by_vhost: dict[str, set[ConnectionInfo]] = {}

    def __iter__(self) -> Iterator[ConnectionInfo]:
        return iter(list(self._all))

    def __len__(self) -> int:
        return len(self._all)

    def add(self, info: ConnectionInfo) -> None:
        self._all[info] = None
        self._by_user.setdefault(info.user, set()).add(info)
        self._by_vhost.setdefault(info.vhost, set()).add(info)

    def remove(self, info: ConnectionInfo) -> None:
        if info not in self._all:
            return  # never registered, or already removed
        del self._all[info]
        _discard(self._by_user, info.user, info)
        _discard(self._by_vhost, info.vhost, info)

    def count_user(self, user: str) -> int:
        return len(self._by_user.get(user, ()))

    def count_vhost(self, vhost: str) -> int:
        return len(self._by_vhost.get(vhost, ()))

    def channels_of_user(self, user: str) -> int:
        return sum(info.channels() for info in self._by_user.get(user, ()))

    def close_user(self, user: str, text: str) -> int:
        """Close every connection of ``user``; returns how many."""
        return self._close(list(self._by_user.get(user, ())), text)

    def close_vhost(self, vhost: str, text: str) -> int:
        return self._close(list(self._by_vhost.get(vhost, ())), text)

    def _close(self, infos: list[ConnectionInfo], text: str) -> int:
        for info in infos:
            self.remove(info)  # first: a close that re-enters (connection_lost) finds it gone
            info.close(text)
        return len(infos)


def _discard(index: dict[str, set[ConnectionInfo]], key: str, info: ConnectionInfo) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(info)
        if not members:
            del index[key]


# -- what operators see of a connection (the management API, metrics, the dashboard) ---------------------
# Built when asked from a front end's live connections (ConnectionSource) rather than kept in the table
# above, because they carry counters and channels that change with every batch.


@dataclass
class ChannelView:
    """One channel (session) of a connection, as the API shows it."""

    connection: ConnectionView
    number: int
    session: Session
    confirm: bool = False
    unconfirmed: int = 0  # published on a confirm channel, not yet confirmed

    @property
    def name(self) -> str:
        return f"{self.connection.name} ({self.number})"


@dataclass(eq=False)
class ConnectionView:
    """One client connection of a front end, as the API shows it (RabbitMQ's connection fields)."""

    key: object  # stable identity across ticks (rates)
    name: str  # "peer_host:peer_port -> host:port", RabbitMQ's form
    protocol: str  # "AMQP 0-9-1"
    user: str
    vhost: str
    peer_host: str
    peer_port: int
    host: str
    port: int
    connected_at: int  # ms since the epoch
    client_properties: dict[str, Any] = field(default_factory=dict)
    auth_mechanism: str = "PLAIN"
    frame_max: int = 0
    channel_max: int = 0
    timeout: int = 0  # negotiated heartbeat, seconds
    state: str = "running"  # running | blocked | closing
    recv_oct: int = 0
    recv_cnt: int = 0
    send_oct: int = 0
    send_cnt: int = 0
    channels: list[ChannelView] = field(default_factory=list)


class ConnectionSource(Protocol):
    """A front end's live connections."""

    def connections(self) -> list[ConnectionView]: ...

    def close(self, connection: ConnectionView, reason: str) -> None:
        """Close it from the broker's side (AMQP: connection.close 320 CONNECTION_FORCED, ``reason``)."""

    def churn(self) -> tuple[int, int]:
        """Connections (opened, closed) since start."""


class NoConnections:
    """A source with no connections (an API served without a front end, in tests)."""

    def connections(self) -> list[ConnectionView]:
        return []

    def close(self, connection: ConnectionView, reason: str) -> None:
        pass

    def churn(self) -> tuple[int, int]:
        return (0, 0)
