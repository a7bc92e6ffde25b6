"""Composition root: builds config, store, core, front ends and listeners. Only the CLI and
``mailslot.testing`` import it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .core.alarms import DEFAULT_DISK_FREE_LIMIT, DEFAULT_MEMORY_HIGH_WATERMARK, Limits, ResourceMonitor
from .core.broker import Broker as CoreBroker
from .frontends.amqp091 import AMQPConnection, AMQPPropertiesCodec
from .http.server import HTTPServer
from .storage.api import MessageLog, MetadataStore
from .storage.memory import MemoryMessageLog, MemoryMetadataStore
from .storage.postgres import PostgresSettings, open_postgres_store
from .storage.postgres import StoreFormatError as PostgresFormatError
from .storage.segments import open_segment_store
from .storage.sqlite import open_sqlite_store
from .transport.amqp_listener import AMQPListener, is_address_in_use
from .transport.resources import ResourceAlarms, system_reader, total_memory

log = logging.getLogger("mailslot")


class ConfigError(ValueError):
    """The configuration cannot work (a missing setting, a store written by a newer mailslot): one line."""


class PortInUseError(OSError):
    """A listener could not bind. ``flag`` names the CLI option that changes the port."""

    def __init__(self, host: str, port: int, flag: str) -> None:
        super().__init__(f"port {port} on {host} is already in use; choose another with {flag}")
        self.host, self.port, self.flag = host, port, flag


@dataclass
class BrokerConfig:
    host: str = "0.0.0.0"  # RabbitMQ listens on every interface by default
    amqp_port: int = 5672  # IANA port for AMQP; 0 = ephemeral (tests)
    http_port: int = 15672  # RabbitMQ management's port (read-only stats API, docs/http.md); 0 = ephemeral
    store: str = "segments"  # "segments" (embedded default), "sqlite" (embedded, one file), "postgres" or "memory"
    data_dir: Path = field(default_factory=lambda: Path("mailslot-data"))
    heartbeat: int = 60  # seconds, RabbitMQ's default
    frame_max: int = 131072  # RabbitMQ's default
    channel_max: int = 2047  # RabbitMQ's default
    max_message_size: int = 16 * 1024 * 1024  # 16 MiB, refused when the content header arrives
    users: dict[str, str] = field(default_factory=lambda: {"guest": "guest"})
    loopback_users: frozenset[str] = frozenset({"guest"})  # as RabbitMQ's loopback_users
    vhosts: frozenset[str] = frozenset({"/"})
    # Resource alarms (docs/backpressure.md), RabbitMQ's defaults: memory above 0.4 of RAM (or a size,
    # "512MB"), free disk below 50MB (or relative to RAM, "mem_relative:1.0" / "1.0x").
    memory_high_watermark: str | float = DEFAULT_MEMORY_HIGH_WATERMARK
    disk_free_limit: str | int = DEFAULT_DISK_FREE_LIMIT
    resource_check_interval: float = 1.0  # seconds between readings
    resource_reader: Callable[[], tuple[int, int]] | None = None  # (rss, free disk) for tests; None: real
    # Seconds an unacknowledged delivery may be held before its channel is closed with 406 (0 or None:
    # never); RabbitMQ's consumer_timeout, 30 minutes by default. Queues override it with x-consumer-timeout.
    consumer_timeout: float | None = 1800.0
    # store = "postgres" (docs/postgres.md): the server (a libpq URL or key=value string; the CLI also reads
    # MAILSLOT_POSTGRES_DSN), the schema holding this install's tables (created and migrated at start),
    # this broker's name among the nodes sharing the schema ("": mailslot@<hostname>, as RabbitMQ's
    # rabbit@<hostname>), and how long a batch commit retries while the server is unreachable before its
    # publishers are nacked (a restart or failover usually completes within 10 s).
    postgres_dsn: str = ""
    postgres_schema: str = "mailslot"
    node_name: str = ""
    postgres_commit_timeout: float = 10.0


class Broker:
    """A whole broker: ``await start()``, then ``amqp_port`` / ``amqp_url``; ``await stop()``."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._core: CoreBroker | None = None
        self._listener: AMQPListener | None = None
        self._alarms: ResourceAlarms | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port = 0
        self._http: HTTPServer | None = None

    async def start(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        limits = self._limits(config.memory_high_watermark, config.disk_free_limit)  # LimitError: before binding
        message_log, metadata = self._open_store()
        core = CoreBroker(
            message_log,
            metadata,
            AMQPPropertiesCodec(),
            vhosts=config.vhosts,
            consumer_timeout_ms=round(config.consumer_timeout * 1000) if config.consumer_timeout else None,
        )
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
        http = HTTPServer(core)
        try:
            await http.start(config.host, config.http_port)
        except OSError as error:
            await listener.stop()
            core.close()
            if is_address_in_use(error):
                raise PortInUseError(config.host, config.http_port, "--http-port") from None
            raise
        self._core, self._listener, self._http = core, listener, http
        log.info("AMQP listening on %s:%d", config.host, self._port)
        log.info("HTTP API on %s", self.http_url)
        log.info("storing messages %s", self.storage_description)
        read = config.resource_reader or system_reader(Path(config.data_dir))
        monitor = ResourceMonitor(read, limits)
        self._alarms = ResourceAlarms(loop, listener, monitor, config.resource_check_interval)
        self._alarms.start()
        self._loop = loop

    def _open_store(self) -> tuple[MessageLog, MetadataStore]:
        if self.config.store == "memory":
            return MemoryMessageLog(), MemoryMetadataStore()
        if self.config.store == "sqlite":
            return open_sqlite_store(Path(self.config.data_dir))
        if self.config.store == "segments":
            return open_segment_store(Path(self.config.data_dir))
        if self.config.store == "postgres":
            try:
                return open_postgres_store(self.postgres_settings, self.config.postgres_commit_timeout)
            except PostgresFormatError as exc:
                raise ConfigError(str(exc)) from None
        raise ConfigError(f"unknown store {self.config.store!r}; expected segments, sqlite, postgres or memory")

    @property
    def postgres_settings(self) -> PostgresSettings:
        """Where ``store = "postgres"`` lives; ConfigError when the DSN or schema is unusable."""
        config = self.config
        if not config.postgres_dsn:
            raise ConfigError("--store postgres needs --postgres-dsn (or MAILSLOT_POSTGRES_DSN)")
        try:
            return PostgresSettings(config.postgres_dsn, config.postgres_schema, config.node_name)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    async def stop(self) -> None:
        """Close every connection with 320 CONNECTION_FORCED, then flush and close the store."""
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._alarms is not None:
            self._alarms.stop()
            self._alarms = None
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._core is not None:
            self._core.close()
            self._core = None
        log.info("broker stopped")

    @staticmethod
    def _limits(memory_high_watermark: str | float, disk_free_limit: str | int) -> Limits:
        return Limits.parse(memory_high_watermark, disk_free_limit, total_memory())

    def set_resource_limits(
        self, memory_high_watermark: str | float | None = None, disk_free_limit: str | int | None = None
    ) -> None:
        """Change the limits of a running broker, checked at once (like ``rabbitmqctl
        set_vm_memory_high_watermark`` / ``set_disk_free_limit``). Safe to call from any thread."""
        config = self.config
        memory = config.memory_high_watermark if memory_high_watermark is None else memory_high_watermark
        disk = config.disk_free_limit if disk_free_limit is None else disk_free_limit
        limits = self._limits(memory, disk)  # raises LimitError, leaving the limits as they were
        config.memory_high_watermark, config.disk_free_limit = memory, disk
        alarms, loop = self._alarms, self._loop
        if alarms is None or loop is None:
            return  # not started: start() reads the config
        if _running_loop() is loop:
            alarms.set_limits(limits)
        else:
            loop.call_soon_threadsafe(alarms.set_limits, limits)

    @property
    def alarms(self) -> frozenset[str]:
        """Resource alarms in effect: a subset of {"memory", "disk"}."""
        return self._alarms.active if self._alarms is not None else frozenset()

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
    def http_port(self) -> int:
        return self._http.port if self._http is not None else 0

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP API; a wildcard bind address is reached through loopback."""
        host = self.config.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}"

    @property
    def storage_description(self) -> str:
        """Where messages are stored, for the start-up log line."""
        if self.config.store == "memory":
            return "in memory (nothing survives a restart)"
        if self.config.store == "postgres":
            settings = self.postgres_settings
            return f"in PostgreSQL, schema {settings.schema!r}, as node {settings.node_name!r}"
        kind = "SQLite, WAL mode" if self.config.store == "sqlite" else "segment log + SQLite metadata"
        return f"in {Path(self.config.data_dir).resolve()} ({kind})"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
