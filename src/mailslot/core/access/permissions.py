"""Per-user, per-vhost permissions (configure / write / read patterns) and topic permissions.

As RabbitMQ's internal backend (rabbit_auth_backend_internal:check_resource_access/check_topic_access):

* a user with no permission record on a vhost may not open it, and has no right on anything in it;
* ``check`` searches the name with the pattern of the asked permission (empty pattern: ``^$``);
* topic permissions are per exchange; a user with none on an exchange may use every routing key on it;
  ``{username}`` and ``{vhost}`` in a topic pattern are replaced by the record's user and vhost, escaped
  (patterns.py), once when the record is set.

Patterns are compiled once, when set or loaded; a stored pattern that no longer compiles (a store written
by another version) leaves the user without that permission and is logged, never a crash at start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from ...storage.api import MetadataStore
from .patterns import InvalidPattern, Pattern, expand_variables
from .records import PERMISSION, TOPIC_PERMISSION, PermissionRecord, TopicPermissionRecord, split_key

log = logging.getLogger("mailslot.access")


class Grant:
    """One user's compiled permissions on one vhost."""

    __slots__ = ("configure", "read", "record", "write")

    def __init__(self, record: PermissionRecord) -> None:
        self.record = record
        self.configure = Pattern(record.configure)
        self.write = Pattern(record.write)
        self.read = Pattern(record.read)

    def allows(self, permission: str, name: str) -> bool:
        pattern: Pattern = getattr(self, permission)
        return pattern.matches(name)


class TopicGrant:
    """One user's compiled topic permission on one exchange of one vhost."""

    __slots__ = ("read", "record", "write")

    def __init__(self, record: TopicPermissionRecord) -> None:
        self.record = record
        variables = {"username": record.user, "vhost": record.vhost}
        self.write = Pattern(expand_variables(record.write, variables))
        self.read = Pattern(expand_variables(record.read, variables))

    def allows(self, permission: str, routing_key: str) -> bool:
        pattern: Pattern = getattr(self, permission)
        return pattern.matches(routing_key)


class Permissions:
    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata
        self._grants: dict[tuple[str, str], Grant] = {}  # (vhost, user) -> grant
        for key, value in metadata.load_records(PERMISSION).items():
            vhost, user = split_key(key)
            record = PermissionRecord(user, vhost, value["configure"], value["write"], value["read"])
            try:
                self._grants[(vhost, user)] = Grant(record)
            except InvalidPattern as error:
                log.error("permissions of user '%s' on vhost '%s' not loaded: %s", user, vhost, error.text)

    def get(self, user: str, vhost: str) -> Grant | None:
        return self._grants.get((vhost, user))

    def set(self, user: str, vhost: str, configure: str, write: str, read: str) -> Grant:
        grant = Grant(PermissionRecord(user, vhost, configure, write, read))  # InvalidPattern: nothing changes
        self._metadata.save_record(PERMISSION, grant.record.key(), grant.record.value())
        self._grants[(vhost, user)] = grant
        return grant

    def clear(self, user: str, vhost: str) -> bool:
        grant = self._grants.pop((vhost, user), None)
        if grant is not None:
            self._metadata.delete_record(PERMISSION, grant.record.key())
        return grant is not None

    def records(self, *, user: str | None = None, vhost: str | None = None) -> Iterator[PermissionRecord]:
        for (v, u), grant in list(self._grants.items()):
            if (user is None or u == user) and (vhost is None or v == vhost):
                yield grant.record

    def forget(self, *, user: str | None = None, vhost: str | None = None) -> None:
        """Drop every record of a deleted user or vhost."""
        for record in list(self.records(user=user, vhost=vhost)):
            self.clear(record.user, record.vhost)


class TopicPermissions:
    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata
        self._grants: dict[tuple[str, str], dict[str, TopicGrant]] = {}  # (vhost, user) -> exchange -> grant
        for key, value in metadata.load_records(TOPIC_PERMISSION).items():
            vhost, user, exchange = split_key(key)
            record = TopicPermissionRecord(user, vhost, exchange, value["write"], value["read"])
            try:
                self._grants.setdefault((vhost, user), {})[exchange] = TopicGrant(record)
            except InvalidPattern as error:
                log.error("topic permissions of user '%s' on exchange '%s' in vhost '%s' not loaded: %s",
                          user, exchange, vhost, error.text)

    def for_user(self, user: str, vhost: str) -> dict[str, TopicGrant]:
        """Exchange -> grant for one user in one vhost (empty: no topic restriction at all)."""
        return self._grants.get((vhost, user), {})

    def set(self, user: str, vhost: str, exchange: str, write: str, read: str) -> TopicGrant:
        grant = TopicGrant(TopicPermissionRecord(user, vhost, exchange, write, read))
        self._metadata.save_record(TOPIC_PERMISSION, grant.record.key(), grant.record.value())
        self._grants.setdefault((vhost, user), {})[exchange] = grant
        return grant

    def clear(self, user: str, vhost: str, exchange: str | None = None) -> int:
        """Clear one exchange's topic permission, or all of the user's on the vhost; returns how many."""
        grants = self._grants.get((vhost, user), {})
        names = [exchange] if exchange is not None else list(grants)
        cleared = 0
        for name in names:
            grant = grants.pop(name, None)
            if grant is not None:
                self._metadata.delete_record(TOPIC_PERMISSION, grant.record.key())
                cleared += 1
        if not grants:
            self._grants.pop((vhost, user), None)
        return cleared

    def records(self, *, user: str | None = None, vhost: str | None = None) -> Iterator[TopicPermissionRecord]:
        for (v, u), grants in list(self._grants.items()):
            if (user is None or u == user) and (vhost is None or v == vhost):
                for grant in list(grants.values()):
                    yield grant.record

    def forget(self, *, user: str | None = None, vhost: str | None = None) -> None:
        for record in list(self.records(user=user, vhost=vhost)):
            self.clear(record.user, record.vhost, record.exchange)
