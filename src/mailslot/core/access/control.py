"""The access control front ends ask: logins, vhost admission, permission checks (RabbitMQ's internal
auth backend, rabbit_auth_backend_internal, with its refusal texts).

Rules of this module:

* A refused login is the same :class:`AccessRefused` whether the user is unknown, the password wrong, or
  the user limited to loopback; the reason goes to the log (with the peer's address and the user name,
  made printable and cut to :data:`LOGGED_NAME_CHARS`), never to the peer and never with the password.
* Each failure counts against its source address (throttle.py); front ends ask :meth:`login_delay` first.
* ``open_vhost`` admits a connection as RabbitMQ's reader does on ``connection.open``: vhost connection
  limit (or ``vhost X not found``), user connection limit, then a permission on the vhost; each refusal
  is 530 NOT_ALLOWED.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from weakref import WeakSet

from ...storage.api import MetadataStore
from ..connections import ConnectionRegistry
from ..errors import AccessRefused, NotAllowed
from .authorizer import Authorizer
from .interface import Permission, ResourceKind, User, is_loopback
from .limits import Limits
from .permissions import Grant, Permissions, TopicGrant, TopicPermissions
from .throttle import LoginThrottle
from .users import Users
from .vhosts import Vhosts

log = logging.getLogger("mailslot.access")

LOGGED_NAME_CHARS = 128  # a user name in a log line is cut here: the peer chooses it


def printable(name: str) -> str:
    """A peer-chosen name made safe for one log line (no control characters, bounded)."""
    cut = name[:LOGGED_NAME_CHARS]
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in cut)
    return shown + ("..." if len(name) > LOGGED_NAME_CHARS else "")


class InternalAccessControl:
    """Users, vhosts, permissions and limits from the metadata store, and who is connected."""

    def __init__(
        self,
        metadata: MetadataStore,
        *,
        loopback_users: frozenset[str] = frozenset({"guest"}),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = Users(metadata)
        self.vhosts = Vhosts(metadata)
        self.permissions = Permissions(metadata)
        self.topic_permissions = TopicPermissions(metadata)
        self.limits = Limits(metadata)
        self.connections = ConnectionRegistry()
        self.throttle = LoginThrottle()
        self.loopback_users = loopback_users
        self._clock = clock
        self._authorizers: WeakSet[Authorizer] = WeakSet()

    # ---- GrantSource (what authorizers read) -------------------------------------------------------

    def grant(self, user: str, vhost: str) -> Grant | None:
        return self.permissions.get(user, vhost)

    def topic_grants(self, user: str, vhost: str) -> dict[str, TopicGrant]:
        return self.topic_permissions.for_user(user, vhost)

    # ---- logins -----------------------------------------------------------------------------------

    def login_delay(self, peer_host: str) -> float:
        """Seconds to wait before deciding a login from ``peer_host`` (repeated failures slow it down)."""
        return self.throttle.delay(peer_host, self._clock())

    def authenticate(self, username: str, password: str, peer_host: str, mechanism: str = "PLAIN") -> User:
        record = self.users.verify(username, password)
        if record is None:
            reason = "blank password" if not password else "invalid credentials"
            raise self._refuse(username, peer_host, mechanism, reason)
        return self._admit(username, peer_host, mechanism, record.tags)

    def authenticate_external(self, username: str, peer_host: str) -> User:
        """SASL EXTERNAL: the name comes from the client certificate, which TLS verified; the user must
        exist (any password or none), as rabbit_auth_mechanism_ssl + the internal backend."""
        record = self.users.get(username)
        if record is None:
            raise self._refuse(username, peer_host, "EXTERNAL", "invalid credentials")
        return self._admit(username, peer_host, "EXTERNAL", record.tags)

    def _admit(self, username: str, peer_host: str, mechanism: str, tags: tuple[str, ...]) -> User:
        if username in self.loopback_users and not is_loopback(peer_host):
            raise self._refuse(username, peer_host, mechanism, "user can only connect via localhost")
        return User(username, frozenset(tags))

    def _refuse(self, username: str, peer_host: str, mechanism: str, reason: str) -> AccessRefused:
        self.throttle.failed(peer_host, self._clock())
        log.warning("%s login refused for user '%s' from %s: %s", mechanism, printable(username), peer_host, reason)
        return AccessRefused(f"{mechanism} login refused: user '{username}' - {reason}")

    # ---- the AccessControl interface ----------------------------------------------------------------

    def vhost_allowed(self, user: User, vhost: str) -> bool:
        return vhost in self.vhosts and self.permissions.get(user.name, vhost) is not None

    def check(self, user: User, vhost: str, permission: Permission, kind: ResourceKind, name: str) -> None:
        Authorizer(user, vhost, self).check(permission, kind, name)

    # ---- connections ------------------------------------------------------------------------------

    def open_vhost(self, user: User, vhost: str) -> Authorizer:
        """Admit a connection of ``user`` to ``vhost`` (rabbit_reader, connection.open) and return the
        authorizer its sessions check with. The caller registers the connection in ``connections``."""
        if vhost not in self.vhosts:
            raise NotAllowed(f"vhost {vhost} not found")
        self.limits.check_vhost_connections(vhost, user.name, self.connections.count_vhost(vhost))
        self.limits.check_user_connections(user.name, self.connections.count_user(user.name))
        if not self.vhost_allowed(user, vhost):
            raise NotAllowed(f"access to vhost '{vhost}' refused for user '{user.name}'")
        return self.authorizer(user, vhost)

    def authorizer(self, user: User, vhost: str) -> Authorizer:
        authorizer = Authorizer(user, vhost, self)
        self._authorizers.add(authorizer)
        return authorizer

    def check_channel_open(self, user: User) -> None:
        """530 when the user already holds its ``max-channels`` (counted over all its connections)."""
        self.limits.check_user_channels(user.name, self.connections.channels_of_user(user.name))

    def permissions_changed(self) -> None:
        """Every open connection forgets its cached answers (admin.py calls it after each change)."""
        for authorizer in list(self._authorizers):
            authorizer.reset()
