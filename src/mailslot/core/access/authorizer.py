"""The rights of one user in one vhost, as the core asks for them before each operation.

The core (``VirtualHost``, ``Session``) calls ``configure`` / ``write`` / ``read`` / ``topic`` at the
points where RabbitMQ's rabbit_channel calls ``check_configure_permitted`` and its siblings (see
docs/access-control.md for the table); each raises :class:`AccessRefused` with RabbitMQ's text. The HTTP
API declares through the same core calls, so it is checked the same way.

Positive answers are cached per connection (RabbitMQ caches the last 12 per channel): a publisher pays one
set lookup per message (``write_ok``), not a regex match. The caches are cleared whenever a permission,
a topic permission or a user changes (``reset``), so a change applies to open connections at once.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import AccessRefused
from .interface import Permission, ResourceKind, User
from .permissions import Grant, TopicGrant

#: Entries cached per connection before the cache is dropped and rebuilt: bounds memory against a peer
#: that names endless distinct resources (each miss then costs one regex match, linear in the name).
CACHE_SIZE = 1024


class GrantSource(Protocol):
    def grant(self, user: str, vhost: str) -> Grant | None: ...

    def topic_grants(self, user: str, vhost: str) -> dict[str, TopicGrant]: ...


def resource_text(kind: str, name: str, vhost: str) -> str:
    """rabbit_misc:rs/1: ``queue 'q' in vhost '/'``."""
    return f"{kind} '{name}' in vhost '{vhost}'"


def refused(kind: str, name: str, vhost: str, user: str) -> AccessRefused:
    """rabbit_access_control:check_resource_access's refusal (the default exchange is named amq.default)."""
    if kind == "exchange" and not name:
        name = "amq.default"
    return AccessRefused(f"access to {resource_text(kind, name, vhost)} refused for user '{user}'")


class Authorizer:
    __slots__ = ("__weakref__", "_checked", "_source", "user", "vhost", "write_ok")

    def __init__(self, user: User, vhost: str, source: GrantSource) -> None:
        self.user = user
        self.vhost = vhost
        self._source = source
        self._checked: set[tuple[str, str, str]] = set()
        # Exchanges this connection may publish to (checked once): Session.publish tests membership only.
        self.write_ok: set[str] = set()

    def reset(self) -> None:
        """Permissions changed: forget every cached answer (in place; sessions hold ``write_ok``)."""
        self._checked.clear()
        self.write_ok.clear()

    def configure(self, kind: ResourceKind, name: str) -> None:
        self.check("configure", kind, name)

    def write(self, kind: ResourceKind, name: str) -> None:
        self.check("write", kind, name)

    def read(self, kind: ResourceKind, name: str) -> None:
        self.check("read", kind, name)

    def check(self, permission: Permission, kind: ResourceKind, name: str) -> None:
        key = (permission, kind, name)
        if key in self._checked:
            return
        target = "amq.default" if kind == "exchange" and not name else name
        grant = self._source.grant(self.user.name, self.vhost)
        if grant is None or not grant.allows(permission, target):
            raise refused(kind, name, self.vhost, self.user.name)
        if len(self._checked) >= CACHE_SIZE:
            self._checked.clear()
        self._checked.add(key)

    def may_publish(self, exchange: str) -> None:
        """``write`` on the exchange, remembered in ``write_ok`` for the publish hot path."""
        self.check("write", "exchange", exchange)
        if len(self.write_ok) >= CACHE_SIZE:
            self.write_ok.clear()
        self.write_ok.add(exchange)

    def topic(self, permission: Permission, exchange: str, routing_key: str) -> None:
        """Topic permission on a topic exchange (rabbit_channel:check_topic_authorisation): allowed unless the
        user has a topic permission for this exchange whose pattern does not match the routing key."""
        key = ("topic " + permission, exchange, routing_key)
        if key in self._checked:
            return
        grants = self._source.topic_grants(self.user.name, self.vhost)
        grant = grants.get(exchange) if grants else None
        if grant is None or grant.allows(permission, routing_key):
            if len(self._checked) >= CACHE_SIZE:
                self._checked.clear()
            self._checked.add(key)
            return
        raise AccessRefused(
            f"access to topic '{routing_key}' in exchange {resource_text('topic', exchange, self.vhost)} "
            f"refused for user '{self.user.name}'"
        )


class Unrestricted(Authorizer):
    """Every right: the broker's own work (recovery, definitions import, dead-lettering), and the sessions
    of code that embeds the core without access control."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(User("", frozenset()), "", _NoGrants())

    def check(self, permission: Permission, kind: ResourceKind, name: str) -> None:
        return None

    def topic(self, permission: Permission, exchange: str, routing_key: str) -> None:
        return None


class _NoGrants:
    def grant(self, user: str, vhost: str) -> Grant | None:
        return None

    def topic_grants(self, user: str, vhost: str) -> dict[str, TopicGrant]:
        return {}


UNRESTRICTED = Unrestricted()
