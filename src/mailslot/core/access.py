"""Who may do what: the one interface every front end (AMQP, the HTTP API, later SQS and MQTT) asks.

Rules of this module:

* Front ends authenticate through :meth:`AccessControl.authenticate` and check each operation with
  :meth:`AccessControl.check`; they never look at users, passwords or permissions themselves.
* A refusal is an exception of the core's error hierarchy (:class:`~mailslot.core.errors.AccessRefused`
  with RabbitMQ's text), which each front end maps onto its own reply (AMQP 403, HTTP 401/403).
* Nothing here knows a protocol: a peer is described by its address, a user by its name and tags.

This first version holds the static users of the broker's configuration (``guest`` on loopback); the
access-control issue replaces :class:`StaticAccessControl` with users, vhosts, permissions and limits kept
in the metadata store, behind the same interface.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .errors import AccessRefused

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


class StaticAccessControl:
    """Users fixed at start (name -> password), each with every permission on every vhost."""

    def __init__(
        self,
        users: dict[str, str],
        loopback_users: frozenset[str] = frozenset({"guest"}),
        tags: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self._users = dict(users)
        self._loopback_users = loopback_users
        self._tags = tags if tags is not None else {name: frozenset({"administrator"}) for name in users}

    def authenticate(self, username: str, password: str, peer_host: str) -> User:
        expected = self._users.get(username)
        # compare_digest even for an unknown user, so timing does not tell whether the user exists.
        ok = hmac.compare_digest((expected or "\0").encode(), password.encode()) and expected is not None
        if not ok:
            raise AccessRefused("Login was refused using authentication mechanism PLAIN. For details see the broker logfile.")
        if username in self._loopback_users and not is_loopback(peer_host):
            raise AccessRefused(f"user '{username}' can only connect via localhost")
        return User(username, self._tags.get(username, frozenset()))

    def vhost_allowed(self, user: User, vhost: str) -> bool:
        return user.name in self._users

    def check(self, user: User, vhost: str, permission: Permission, kind: ResourceKind, name: str) -> None:
        if user.name not in self._users:
            raise AccessRefused(
                f"access to {kind} '{name}' in vhost '{vhost}' refused for user '{user.name}'"
            )
