"""Composition root: builds config, store, core, front ends and listeners. Only the CLI and
``mailslot.testing`` import it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .core.access import StaticAccessControl
from .core.alarms import DEFAULT_DISK_FREE_LIMIT, DEFAULT_MEMORY_HIGH_WATERMARK, Limits, ResourceMonitor
from .core.broker import Broker as CoreBroker
from .frontends.amqp091 import AMQPConnection, AMQPPropertiesCodec
from .http.amqp_connections import AMQPConnections
from .http.context import Listener, ManagementContext, ManagementSettings, NodeInfo, default_node_name
from .http.server import HTTPServer, process_rss
from .storage.api import MessageLog, MetadataStore
from .storage.memory import MemoryMessageLog, MemoryMetadataStore
from .storage.segments import open_segment_store
from .storage.sqlite import open_sqlite_store
from .transport.amqp_listener import AMQPListener, is_address_in_use
from .transport.resources import ResourceAlarms, system_reader, total_memory

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
    http_port: int = 15672  # RabbitMQ management's port (docs/management-api.md); 0 = ephemeral
    http_host: str | None = None  # the management API's interface; None: the same as ``host``
    prometheus_port: int = 15692  # rabbitmq_prometheus' port (docs/metrics.md); 0 = ephemeral
    prometheus_host: str | None = None  # None: the same as ``http_host``
    # Health checks (/api/health/checks/*) answer callers without credentials (load balancers, probes).
    http_open_health_checks: bool = False
    node_name: str | None = None  # None: mailslot@<short host name>, as RabbitMQ's rabbit@<host>
    store: str = "segments"  # "segments" (embedded default), "sqlite" (embedded, one file) or "memory"
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
        read = config.resource_reader or system_reader(Path(config.data_dir))
        monitor = ResourceMonitor(read, limits)
        node = NodeInfo(
            name=config.node_name or default_node_name(),
            data_dir=None if config.store == "memory" else Path(config.data_dir).resolve(),
            storage=self.storage_description,
            monitor=monitor,
        )
        node.listeners.append(Listener("amqp", *listener.address))
        ctx = ManagementContext(
            core,
            StaticAccessControl(config.users, config.loopback_users),
            AMQPConnections(listener),
            node,
            ManagementSettings(open_health_checks=config.http_open_health_checks),
            rss=process_rss,
        )
        http = HTTPServer(ctx, commit_stats=listener.scheduler.commit_stats)
        http_host = config.http_host if config.http_host is not None else config.host
        prometheus_host = config.prometheus_host if config.prometheus_host is not None else http_host
        for start, host, port, flag, protocol in (
            (http.start_api, http_host, config.http_port, "--http-port", "http"),
            (http.start_metrics, prometheus_host, config.prometheus_port, "--prometheus-port", "http/prometheus"),
        ):
            try:
                node.listeners.append(Listener(protocol, *(await start(host, port))))
            except OSError as error:
                await http.stop()
                await listener.stop()
                core.close()
                if is_address_in_use(error):
                    raise PortInUseError(host, port, flag) from None
                raise
        self._core, self._listener, self._http = core, listener, http
        # The addresses really bound (a wildcard host stays a wildcard: say so, and how to reach it).
        log.info("AMQP listening on %s:%d", *listener.address)
        log.info("HTTP API listening on %s:%d (%s/api/)", *http.api_address, self.http_url)  # type: ignore[misc]
        log.info("Prometheus metrics listening on %s:%d (%s/metrics)", *http.metrics_address, self.prometheus_url)  # type: ignore[misc]
        log.info("storing messages %s", self.storage_description)
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
        raise ValueError(f"unknown store {self.config.store!r}; expected sqlite, segments or memory")

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
        address = self._http.api_address if self._http is not None else None
        return address[1] if address is not None else 0

    @property
    def http_url(self) -> str:
        """Base URL of the management API; a wildcard bind address is reached through loopback."""
        address = self._http.api_address if self._http is not None else None
        return _url(address or (self.config.http_host or self.config.host, 0))

    @property
    def prometheus_port(self) -> int:
        address = self._http.metrics_address if self._http is not None else None
        return address[1] if address is not None else 0

    @property
    def prometheus_url(self) -> str:
        address = self._http.metrics_address if self._http is not None else None
        return _url(address or ("127.0.0.1", 0))

    @property
    def storage_description(self) -> str:
        """Where messages are stored, for the start-up log line."""
        if self.config.store == "memory":
            return "in memory (nothing survives a restart)"
        kind = "SQLite, WAL mode" if self.config.store == "sqlite" else "segment log + SQLite metadata"
        return f"in {Path(self.config.data_dir).resolve()} ({kind})"


def _url(address: tuple[str, int]) -> str:
    host, port = address
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
