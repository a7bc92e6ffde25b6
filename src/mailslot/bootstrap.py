"""Composition root: builds config, store, core, front ends and listeners. Only the CLI and
``mailslot.testing`` import it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .core.broker import Broker as CoreBroker
from .frontends.amqp091 import AMQPConnection
from .protocols.amqp091 import properties
from .storage.api import MessageLog, MetadataStore
from .storage.memory import MemoryMessageLog, MemoryMetadataStore
from .storage.segments import open_segment_store
from .storage.sqlite import open_sqlite_store
from .transport.amqp_listener import AMQPListener, is_address_in_use

log = logging.getLogger("mailslot")


class PortInUseError(OSError):
    """A listener could not bind. ``flag`` names the CLI option that changes the port."""

    def __init__(self, host: str, port: int, flag: str) -> None:
        super().__init__(f"port {port} on {host} is already in use; choose another with {flag}")
        self.host, self.port, self.flag = host, port, flag


@dataclass
class BrokerConfig:
    host: str = "0.0.0.0"  # RabbitMQ listens on every interface by default
    amqp_port: int = 5672  # IANA port for AMQP; 0 = ephemeral (tests)
    store: str = "segments"  # "segments" (embedded default), "sqlite" (embedded, one file) or "memory"
    data_dir: Path = field(default_factory=lambda: Path("mailslot-data"))
    heartbeat: int = 60  # seconds, RabbitMQ's default
    frame_max: int = 131072  # RabbitMQ's default
    channel_max: int = 2047  # RabbitMQ's default
    max_message_size: int = 16 * 1024 * 1024  # 16 MiB, refused when the content header arrives
    users: dict[str, str] = field(default_factory=lambda: {"guest": "guest"})
    loopback_users: frozenset[str] = frozenset({"guest"})  # as RabbitMQ's loopback_users
    vhosts: frozenset[str] = frozenset({"/"})


class Broker:
    """A whole broker: ``await start()``, then ``amqp_port`` / ``amqp_url``; ``await stop()``."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._core: CoreBroker | None = None
        self._listener: AMQPListener | None = None
        self._port = 0

    async def start(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        message_log, metadata = self._open_store()
        core = CoreBroker(message_log, metadata, properties.headers, vhosts=config.vhosts)
        core.recover()

        def make_connection(peer_host: str, outbox: set[AMQPConnection]) -> AMQPConnection:
            return AMQPConnection(
                core,
                peer_host=peer_host,
                users=config.users,
                loopback_users=config.loopback_users,
                heartbeat=config.heartbeat,
                frame_max=config.frame_max,
                channel_max=config.channel_max,
                max_message_size=config.max_message_size,
                now=loop.time(),
                outbox=outbox,
            )

        listener = AMQPListener(loop, core, make_connection)
        try:
            self._port = await listener.start(config.host, config.amqp_port)
        except OSError as error:
            core.close()
            if is_address_in_use(error):
                raise PortInUseError(config.host, config.amqp_port, "--port") from None
            raise
        self._core, self._listener = core, listener
        log.info("AMQP listening on %s:%d", config.host, self._port)
        log.info("storing messages %s", self.storage_description)

    def _open_store(self) -> tuple[MessageLog, MetadataStore]:
        if self.config.store == "memory":
            return MemoryMessageLog(), MemoryMetadataStore()
        if self.config.store == "sqlite":
            return open_sqlite_store(Path(self.config.data_dir))
        if self.config.store == "segments":
            return open_segment_store(Path(self.config.data_dir))
        raise ValueError(f"unknown store {self.config.store!r}; expected sqlite, segments or memory")

    async def stop(self) -> None:
        """Close every connection with 320 CONNECTION_FORCED, then flush and close the store."""
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._core is not None:
            self._core.close()
            self._core = None
        log.info("broker stopped")

    @property
    def core(self) -> CoreBroker:
        assert self._core is not None, "broker not started"
        return self._core

    @property
    def amqp_port(self) -> int:
        return self._port

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def storage_description(self) -> str:
        """Where messages are stored, for the start-up log line."""
        if self.config.store == "memory":
            return "in memory (nothing survives a restart)"
        kind = "SQLite, WAL mode" if self.config.store == "sqlite" else "segment log + SQLite metadata"
        return f"in {Path(self.config.data_dir).resolve()} ({kind})"
