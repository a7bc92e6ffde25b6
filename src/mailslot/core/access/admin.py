"""Changing users, vhosts, permissions and limits at runtime, with every consequence RabbitMQ gives
them (and, where the issue asks for more, more):

* deleting a user closes its connections (320 CONNECTION_FORCED "user 'x' is deleted", as RabbitMQ's
  connection tracking) and drops its permissions and limits; changing or clearing its password closes its
  connections too (RabbitMQ 3.10 leaves them open; a changed password is most often a revoked one);
* deleting a vhost closes its connections ("vhost 'x' is deleted"), then deletes its queues (with their
  messages, from the store), exchanges and bindings, then its permissions and limits;
* any permission change reaches open connections at once (their cached answers are dropped).

The management API, ``mailslot ctl`` and the definitions import call these; every call is durable when it
returns (the metadata store writes through).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from .control import InternalAccessControl
from .records import PermissionRecord, TopicPermissionRecord, UserInfo, UserRecord, VhostRecord

log = logging.getLogger("mailslot.access")

# RabbitMQ's defaults for the seeded user (rabbit.app: default_user_tags, default_permissions).
DEFAULT_USER_TAGS = ("administrator",)
FULL_PERMISSIONS = (".*", ".*", ".*")


class VhostHost(Protocol):
    """The broker core as the access model needs it: vhosts to create and delete, and their queue limit."""

    def add_vhost(self, name: str) -> Any: ...

    def delete_vhost(self, name: str) -> None: ...

    def set_queue_limit(self, name: str, limit: int | None) -> None: ...


def seed_defaults(access: InternalAccessControl, user: str, password: str, vhost: str = "/") -> bool:
    """On a store with no user and no vhost (a fresh data directory, as rabbit:maybe_insert_default_data
    decides it): the default vhost, the default user as administrator with every permission on it.
    Writes records only (the core is built from them afterwards). Returns whether it seeded."""
    if len(access.users) or len(access.vhosts):
        return False
    access.vhosts.add(vhost, "Default virtual host")
    access.users.add(user, password, DEFAULT_USER_TAGS)
    access.permissions.set(user, vhost, *FULL_PERMISSIONS)
    return True


def ensure_configured(admin: AccessAdmin, users: dict[str, str], vhosts: Iterable[str], vhost: str = "/") -> None:
    """Users and vhosts named in the broker's configuration exist, at every start: each vhost (created
    when missing), each user with its configured password, administrator with every permission on
    ``vhost`` (the configuration wins over a password changed at runtime)."""
    access = admin.access
    for name in vhosts:
        if name not in access.vhosts:
            admin.add_vhost(name)
    for name, password in users.items():
        if access.users.verify(name, password) is None:
            admin.put_user(name, password=password, tags=DEFAULT_USER_TAGS)
        if vhost in access.vhosts and access.permissions.get(name, vhost) is None:
            admin.set_permissions(name, vhost, *FULL_PERMISSIONS)


class AccessAdmin:
    def __init__(self, access: InternalAccessControl, host: VhostHost) -> None:
        self.access = access
        self.host = host

    def attach(self) -> None:
        """At start: every vhost record exists in the core, with its queue limit."""
        for record in self.access.vhosts:
            self.host.add_vhost(record.name)
            self.host.set_queue_limit(record.name, self.access.limits.vhost_limit(record.name, "max-queues"))

    # ---- users ------------------------------------------------------------------------------------

    def add_user(self, name: str, password: str | None, tags: Iterable[str] | str = ()) -> UserRecord:
        return self.access.users.add(name, password, tags)

    def put_user(self, name: str, *, password: str | None = None, password_hash: str | None = None,
                 hashing_algorithm: str | None = None, tags: Iterable[str] | str = (),
                 rabbitmq_version: str | None = None) -> UserRecord:
        """Create or replace (the HTTP API's PUT, a definitions import). A changed hash closes the user's
        connections."""
        before = self.access.users.get(name)
        record = self.access.users.put(name, password=password, password_hash=password_hash,
                                       hashing_algorithm=hashing_algorithm, tags=tags,
                                       rabbitmq_version=rabbitmq_version)
        if before is not None and before.password_hash != record.password_hash:
            self.close_user(name, f"user '{name}' password changed")
        self.access.permissions_changed()
        return record

    def change_password(self, name: str, password: str | None) -> None:
        """A new password (None: clear it, as ``rabbitmqctl clear_password``); closes the user's connections."""
        self.access.users.change_password(name, password)
        self.close_user(name, f"user '{name}' password changed")

    def set_user_tags(self, name: str, tags: Iterable[str] | str) -> UserRecord:
        return self.access.users.set_tags(name, tags)

    def delete_user(self, name: str) -> None:
        self.access.users.delete(name)
        self.close_user(name, f"user '{name}' is deleted")
        self.access.permissions.forget(user=name)
        self.access.topic_permissions.forget(user=name)
        self.access.limits.clear_user(name)
        self.access.permissions_changed()

    def list_users(self) -> list[UserInfo]:
        return [UserInfo(u.name, u.tags, bool(u.password_hash), self.access.limits.of_user(u.name))
                for u in self.access.users]

    def close_user(self, name: str, text: str) -> None:
        """Close every connection of the user (a deleted user, a changed password: RabbitMQ's reasons)."""
        closed = self.access.connections.close_user(name, text)
        if closed:
            log.info("closed %d connection(s) of user '%s': %s", closed, name, text)

    # ---- vhosts -----------------------------------------------------------------------------------

    def add_vhost(self, name: str, description: str = "", tags: Iterable[str] | str = (),
                  default_queue_type: str | None = None, *, exist_ok: bool = False) -> VhostRecord:
        record = self.access.vhosts.add(name, description, tags, default_queue_type, exist_ok=exist_ok)
        self.host.add_vhost(name)
        return record

    def delete_vhost(self, name: str) -> None:
        self.access.vhosts.require(name)
        closed = self.access.connections.close_vhost(name, f"vhost '{name}' is deleted")
        self.host.delete_vhost(name)  # queues with their messages, exchanges, bindings
        self.access.vhosts.delete(name)
        self.access.permissions.forget(vhost=name)
        self.access.topic_permissions.forget(vhost=name)
        self.access.limits.clear_vhost(name)
        self.access.permissions_changed()
        log.info("deleted vhost '%s' (%d connection(s) closed)", name, closed)

    def list_vhosts(self) -> list[VhostRecord]:
        return list(self.access.vhosts)

    # ---- permissions ------------------------------------------------------------------------------

    def set_permissions(self, user: str, vhost: str, configure: str, write: str, read: str) -> PermissionRecord:
        """Patterns are checked first (patterns.py): a refused one changes nothing."""
        self.access.users.require(user)
        self.access.vhosts.require(vhost)
        grant = self.access.permissions.set(user, vhost, configure, write, read)
        self.access.permissions_changed()
        return grant.record

    def clear_permissions(self, user: str, vhost: str) -> None:
        self.access.users.require(user)
        self.access.vhosts.require(vhost)
        self.access.permissions.clear(user, vhost)
        self.access.permissions_changed()

    def list_permissions(self, *, user: str | None = None, vhost: str | None = None) -> list[PermissionRecord]:
        return list(self.access.permissions.records(user=user, vhost=vhost))

    def set_topic_permissions(self, user: str, vhost: str, exchange: str, write: str,
                              read: str) -> TopicPermissionRecord:
        self.access.users.require(user)
        self.access.vhosts.require(vhost)
        grant = self.access.topic_permissions.set(user, vhost, exchange, write, read)
        self.access.permissions_changed()
        return grant.record

    def clear_topic_permissions(self, user: str, vhost: str, exchange: str | None = None) -> None:
        self.access.users.require(user)
        self.access.vhosts.require(vhost)
        self.access.topic_permissions.clear(user, vhost, exchange)
        self.access.permissions_changed()

    def list_topic_permissions(self, *, user: str | None = None,
                               vhost: str | None = None) -> list[TopicPermissionRecord]:
        return list(self.access.topic_permissions.records(user=user, vhost=vhost))

    # ---- limits -----------------------------------------------------------------------------------

    def set_vhost_limits(self, vhost: str, limits: dict[str, Any]) -> dict[str, int]:
        self.access.vhosts.require(vhost)
        result = self.access.limits.set_vhost(vhost, limits)
        self.host.set_queue_limit(vhost, result.get("max-queues"))
        return result

    def clear_vhost_limits(self, vhost: str, name: str | None = None) -> None:
        self.access.vhosts.require(vhost)
        self.access.limits.clear_vhost(vhost, name)
        self.host.set_queue_limit(vhost, self.access.limits.vhost_limit(vhost, "max-queues"))

    def set_user_limits(self, user: str, limits: dict[str, Any]) -> dict[str, int]:
        self.access.users.require(user)
        return self.access.limits.set_user(user, limits)

    def clear_user_limits(self, user: str, name: str | None = None) -> None:
        self.access.users.require(user)
        self.access.limits.clear_user(user, name)

