"""What the access model keeps, as records of the metadata store (``MetadataStore.save_record``).

One record kind per thing, a key that names it, and a JSON value shaped like RabbitMQ's definitions
export, so the store, the HTTP API and ``export_definitions`` all speak the same shape:

===================  ============================  ==================================================
kind                 key                           value
===================  ============================  ==================================================
``user``             name                          ``{"password_hash", "hashing_algorithm", "tags"}``
``vhost``            name                          ``{"description", "tags", "default_queue_type"}``
``permission``       ``["vhost", "user"]`` (JSON)  ``{"configure", "write", "read"}``
``topic_permission`` ``["vhost", "user", "x"]``    ``{"write", "read"}``
``vhost_limits``     vhost name                    ``{"max-connections": 10, "max-queues": 5}``
``user_limits``      user name                     ``{"max-connections": 2, "max-channels": 20}``
===================  ============================  ==================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import NotFound, PreconditionFailed
from .passwords import DEFAULT_ALGORITHM

USER, VHOST, PERMISSION, TOPIC_PERMISSION = "user", "vhost", "permission", "topic_permission"
VHOST_LIMITS, USER_LIMITS = "vhost_limits", "user_limits"


class NoSuchUser(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"user '{name}' does not exist")


class NoSuchVhost(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"vhost '{name}' does not exist")


class AlreadyExists(PreconditionFailed):
    """``add_user`` / ``add_vhost`` of a name that is taken (rabbitmqctl: user_already_exists)."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    password_hash: str = ""  # base64 salt + digest; "" = no password (EXTERNAL only)
    hashing_algorithm: str = DEFAULT_ALGORITHM
    tags: tuple[str, ...] = ()

    def value(self) -> dict[str, Any]:
        return {"password_hash": self.password_hash, "hashing_algorithm": self.hashing_algorithm,
                "tags": list(self.tags)}

    @classmethod
    def from_value(cls, name: str, value: dict[str, Any]) -> UserRecord:
        return cls(name, value.get("password_hash", ""), value.get("hashing_algorithm", DEFAULT_ALGORITHM),
                   tuple(value.get("tags", ())))


@dataclass(frozen=True, slots=True)
class VhostRecord:
    name: str
    description: str = ""
    tags: tuple[str, ...] = ()
    default_queue_type: str | None = None  # RabbitMQ 3.10's vhost metadata; kept and exported

    def value(self) -> dict[str, Any]:
        return {"description": self.description, "tags": list(self.tags),
                "default_queue_type": self.default_queue_type}

    @classmethod
    def from_value(cls, name: str, value: dict[str, Any]) -> VhostRecord:
        return cls(name, value.get("description", ""), tuple(value.get("tags", ())), value.get("default_queue_type"))


@dataclass(frozen=True, slots=True)
class PermissionRecord:
    user: str
    vhost: str
    configure: str
    write: str
    read: str

    def key(self) -> str:
        return permission_key(self.vhost, self.user)

    def value(self) -> dict[str, Any]:
        return {"configure": self.configure, "write": self.write, "read": self.read}


@dataclass(frozen=True, slots=True)
class TopicPermissionRecord:
    user: str
    vhost: str
    exchange: str
    write: str
    read: str

    def key(self) -> str:
        return topic_permission_key(self.vhost, self.user, self.exchange)

    def value(self) -> dict[str, Any]:
        return {"write": self.write, "read": self.read}


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user as listings show it (never its password)."""

    name: str
    tags: tuple[str, ...]
    has_password: bool
    limits: dict[str, int] = field(default_factory=dict)


def permission_key(vhost: str, user: str) -> str:
    return json.dumps([vhost, user])


def topic_permission_key(vhost: str, user: str, exchange: str) -> str:
    return json.dumps([vhost, user, exchange])


def split_key(key: str) -> list[str]:
    parts = json.loads(key)
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise ValueError(f"bad record key {key!r}")
    return parts
