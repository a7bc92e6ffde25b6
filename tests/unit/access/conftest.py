from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from mailslot.core.access.admin import AccessAdmin, seed_defaults
from mailslot.core.access.control import InternalAccessControl
from mailslot.core.broker import Broker
from mailslot.core.connections import ConnectionInfo
from mailslot.core.session import Gate, Session
from mailslot.frontends.amqp091 import AMQPPropertiesCodec
from mailslot.storage.memory import MemoryMessageLog, MemoryMetadataStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NullSink:
    def deliver_many(self, consumer_tag: str, first_tag: int, entries: list[Any]) -> None:
        pass

    def consumer_cancelled(self, consumer_tag: str) -> None:
        pass

    def acknowledgement_timed_out(self, timeout_ms: int) -> None:
        pass


@dataclass
class FakeConnection:
    """What a front end registers: counts channels, records the broker's close."""

    channels: int = 0
    closed_with: list[str] = field(default_factory=list)


class World:
    """A core broker with the access model over one (memory) metadata store, as bootstrap builds it."""

    def __init__(self, metadata: MemoryMetadataStore | None = None, log: MemoryMessageLog | None = None) -> None:
        self.metadata = metadata or MemoryMetadataStore()
        self.log = log or MemoryMessageLog()
        self.clock = Clock()
        self.access = InternalAccessControl(self.metadata, clock=self.clock)
        seed_defaults(self.access, "guest", "guest")
        self.core = Broker(self.log, self.metadata, AMQPPropertiesCodec(), vhosts=())
        self.admin = AccessAdmin(self.access, self.core)
        self.admin.attach()
        self.core.recover()

    def login(self, user: str, password: str, vhost: str = "/", host: str = "127.0.0.1") -> tuple[Session, FakeConnection]:
        """Authenticate, open the vhost, register the connection: a session checked with its rights."""
        who = self.access.authenticate(user, password, host)
        authz = self.access.open_vhost(who, vhost)
        fake = FakeConnection()
        info = ConnectionInfo(who.name, vhost, host, 5000, lambda: fake.channels, fake.closed_with.append)
        self.access.connections.add(info)
        session = self.core.open_session(self.core.vhosts[vhost], fake, NullSink(), Gate(), authz)
        return session, fake

    def add_user(self, name: str, vhost: str = "/", perms: tuple[str, str, str] | None = (".*", ".*", ".*")) -> None:
        self.admin.add_user(name, "pw-" + name)
        if perms is not None:
            self.admin.set_permissions(name, vhost, *perms)


@pytest.fixture
def world() -> World:
    return World()
