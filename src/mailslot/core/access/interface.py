"""Who may do what: the one interface every front end (AMQP, the HTTP API, later SQS and MQTT) asks.

Rules of this module:

* Front ends authenticate through :meth:`AccessControl.authenticate` and check each operation with
  :meth:`AccessControl.check`; they never look at users, passwords or permissions themselves.
* A refusal is an exception of the core's error hierarchy (:class:`~mailslot.core.errors.AccessRefused`
  with RabbitMQ's text), which each front end maps onto its own reply (AMQP 403, HTTP 401/403).
* Nothing here knows a protocol: a peer is described by its address, a user by its name and tags.

The implementation is :class:`~mailslot.core.access.control.InternalAccessControl` (users, vhosts,
permissions and limits kept in the metadata store); :class:`~mailslot.core.access.admin.AccessAdmin`
changes them at runtime.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal, Protocol

Permission = Literal["configure", "write", "read"]
ResourceKind = Literal["queue", "exchange", "topic"]

# RabbitMQ's user tags (rabbit_auth_backend_internal); the management API decides what each may see.
KNOWN_TAGS = frozenset({"administrator", "monitoring", "policymaker", "management", "impersonator"})


@dataclass(frozen=True, slots=True)
class User:
    """An authenticated user: its name and its tags (``administrator``, ``management``, ...)."""

    name: str
    tags: frozenset[str] = field(default_factory=frozenset)


class AccessControl(Protocol):
    def authenticate(self, username: str, password: str, peer_host: str) -> User:
        """The user, or :class:`AccessRefused` (the same refusal whether or not the user exists)."""

    def vhost_allowed(self, user: User, vhost: str) -> bool:
        """True when ``user`` has any permission on ``vhost`` (``connection.open`` needs it)."""

    def check(self, user: User, vhost: str, permission: Permission, kind: ResourceKind, name: str) -> None:
        """Raise :class:`AccessRefused` with RabbitMQ's text when ``user`` lacks ``permission`` on
        the ``kind`` named ``name`` in ``vhost``."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (RabbitMQ's ``loopback_users`` rule)."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))
