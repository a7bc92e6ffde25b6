"""Composition root: builds config, store, core, front ends and listeners. Only the CLI and
``mailslot.testing`` import it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from .cluster import (
    DEFAULT_LEASE_TTL,
    ClusterMessageLog,
    ClusterMetadataStore,
    ClusterNode,
    open_cluster_store,
    start_cluster_node,
)
from .cluster.link import LinkTLS
from .cluster.link import link_tls as cluster_link_tls
from .cluster.link import parse_address as parse_link_address
from .config import ConfigError
from .core.access.admin import AccessAdmin, ensure_configured, seed_defaults
from .core.access.control import InternalAccessControl
from .core.alarms import (
    DEFAULT_DISK_FREE_LIMIT,
    DEFAULT_MEMORY_HIGH_WATERMARK,
    LimitError,
    Limits,
    ResourceMonitor,
)
from .core.alarms import disk_free_limit as parse_disk_free_limit
from .core.alarms import memory_limit as parse_memory_limit
from .core.broker import Broker as CoreBroker
from .core.definitions import (
    DefinitionsError,
    ImportReport,
    export_definitions,
    import_definitions,
    read_definitions_file,
)
from .core.policies import PolicyEngine, use_policies
from .frontends.amqp091 import AMQP_CODEC, AMQPConnection
from .http.context import Listener, ManagementContext, ManagementSettings, NodeInfo, default_node_name
from .http.server import HTTPServer, process_rss
from .storage.api import MessageLog, MetadataStore
from .storage.memory import MemoryMessageLog, MemoryMetadataStore
from .storage.postgres import DEFAULT_COMMIT_TIMEOUT, PostgresSettings, open_postgres_store
from .storage.postgres import DEFAULT_SCHEMA as DEFAULT_POSTGRES_SCHEMA
from .storage.postgres import SCHEMA_NAME as POSTGRES_SCHEMA_NAME
from .storage.postgres import StoreFormatError as PostgresFormatError
from .storage.segments import open_segment_store
from .storage.sqlite import open_sqlite_store
from .transport.admission import Admission, connection_cap, raise_fd_limit
from .transport.amqp_connections import AMQPConnections
from .transport.amqp_listener import AMQPListener, is_address_in_use
from .transport.resources import ResourceAlarms, system_reader, total_memory
from .transport.tls import ReloadableTLS, TLSFiles

log = logging.getLogger("mailslot")
_T = TypeVar("_T")


class PolicyAwareHost:
    """The core as the access model sees it, with a vhost's policies deleted along with the vhost."""

    def __init__(self, core: CoreBroker, policies: PolicyEngine) -> None:
        self.core, self.policies = core, policies

    def add_vhost(self, name: str) -> object:
        return self.core.add_vhost(name)

    def delete_vhost(self, name: str) -> None:
        self.core.delete_vhost(name)
        self.policies.forget_vhost(name)

    def set_queue_limit(self, name: str, limit: int | None) -> None:
        self.core.set_queue_limit(name, limit)


class PortInUseError(OSError):
    """A listener could not bind. ``flag`` names the CLI option that changes the port."""

    def __init__(self, host: str, port: int, flag: str) -> None:
        super().__init__(f"port {port} on {host} is already in use; choose another with {flag}")
        self.host, self.port, self.flag = host, port, flag


# The cluster link's shared secret: at least this long (a guessable secret lets anyone publish as a node).
MIN_CLUSTER_SECRET = 16
# RabbitMQ's hard cap on max_message_size (rabbit_channel ?MAX_MSG_SIZE, 512 MiB); the setting may not exceed it.
MAX_MESSAGE_SIZE_CAP = 512 * 1024 * 1024


@dataclass
class BrokerConfig:
    """Everything ``mailslot serve`` can be told. Each field is also a key of the config file and an
    environment variable ``MAILSLOT_<FIELD>`` (mailslot/config.py derives both from this class;
    docs/configuration.md lists them). ``None`` for a port: that listener is off."""

    host: str = "0.0.0.0"  # RabbitMQ listens on every interface by default
    amqp_port: int | None = 5672  # IANA port for AMQP; 0 = ephemeral (tests); None = no plain AMQP listener
    http_port: int | None = 15672  # RabbitMQ management's port (docs/management-api.md); 0 = ephemeral; None = off
    http_host: str | None = None  # the management API's interface (HTTP and HTTPS); None: the same as ``host``
    prometheus_port: int | None = 15692  # rabbitmq_prometheus' port (docs/metrics.md); 0 = ephemeral; None = off
    prometheus_host: str | None = None  # None: the same as ``http_host``
    # Health checks (/api/health/checks/*) answer callers without credentials (load balancers, probes).
    http_open_health_checks: bool = False
    # The largest request body the management API reads (RabbitMQ's management.http.max_body_size).
    http_max_body_size: int = 20_000_000
    # TLS (docs/tls.md): AMQPS and HTTPS listeners, off unless a port is given (RabbitMQ: 5671 and 15671).
    tls_port: int | None = None
    http_tls_port: int | None = None
    tls_cert: Path | None = None  # PEM: the server certificate (and its chain)
    tls_key: Path | None = None  # PEM: its private key
    tls_key_password: str | None = None  # when the key is encrypted (or tls_key_password_file)
    tls_ca: Path | None = None  # PEM: the CAs client certificates are verified against
    tls_verify_peer: bool = False  # ask AMQPS clients for a certificate (RabbitMQ's verify_peer)
    tls_fail_if_no_peer_cert: bool = False  # and refuse those without one (fail_if_no_peer_cert)
    store: str = "segments"  # "segments" (embedded default), "sqlite" (embedded, one file), "postgres" or "memory"
    data_dir: Path = field(default_factory=lambda: Path("mailslot-data"))
    heartbeat: int = 60  # seconds, RabbitMQ's default
    frame_max: int = 131072  # RabbitMQ's default
    channel_max: int = 2047  # RabbitMQ's default
    # Refused when the content header arrives (406). 16 MiB: RabbitMQ 4.x's default (3.x: 128 MiB); up to
    # MAX_MESSAGE_SIZE_CAP. Bodies are held in memory while they arrive and are routed.
    max_message_size: int = 16 * 1024 * 1024
    loopback_users: frozenset[str] = frozenset({"guest"})  # as RabbitMQ's loopback_users
    # Users (name -> password) and vhosts that exist at every start, whatever the data directory holds:
    # each user administrator with every permission on default_vhost (the config wins at each start).
    users: dict[str, str] = field(default_factory=dict)
    vhosts: frozenset[str] = frozenset()
    # Access control (docs/access-control.md). A fresh data directory starts with this user (administrator,
    # every permission on default_vhost), as RabbitMQ's default_user / default_pass / default_vhost; not when
    # definitions are loaded at boot (RabbitMQ seeds nothing then either).
    default_user: str = "guest"
    default_pass: str = "guest"  # or default_pass_file / MAILSLOT_DEFAULT_PASS_FILE (a container secret)
    default_vhost: str = "/"
    definitions: Path | None = None  # RabbitMQ definitions JSON imported at every boot (load_definitions)
    # SASL EXTERNAL (TLS client certificates): the username is the certificate's subject DN, or its CN
    # (RabbitMQ's ssl_cert_login_from, distinguished_name by default).
    ssl_cert_login_from: Literal["distinguished_name", "common_name"] = "distinguished_name"
    # The handshake (protocol header to connection.open-ok) must finish within this many seconds, or the
    # socket is closed: RabbitMQ's handshake_timeout, 10 s.
    handshake_timeout: float = 10.0
    # Most client connections at once (None: as many as the process's file descriptors allow, keeping
    # FD_RESERVE for the store and the HTTP API). RabbitMQ's connection_max; see transport/admission.py.
    max_connections: int | None = None
    # Resource alarms (docs/backpressure.md), RabbitMQ's defaults: memory above 0.4 of RAM (or a size,
    # "512MB"), free disk below 50MB (or relative to RAM, "mem_relative:1.0" / "1.0x").
    memory_high_watermark: str | float = DEFAULT_MEMORY_HIGH_WATERMARK
    disk_free_limit: str | int = DEFAULT_DISK_FREE_LIMIT
    resource_check_interval: float = 1.0  # seconds between readings
    # (rss, free disk) for tests; None: the real readings. Not a config file key.
    resource_reader: Callable[[], tuple[int, int]] | None = field(default=None, metadata={"config": False})
    # Seconds an unacknowledged delivery may be held before its channel is closed with 406 (0 or None:
    # never); RabbitMQ's consumer_timeout, 30 minutes by default. Queues override it with x-consumer-timeout.
    consumer_timeout: float | None = 1800.0
    log_level: str = "info"  # mailslot serve's log verbosity: debug, info, warning or error
    # store = "postgres" (docs/postgres.md): the server (a libpq URL or key=value string; a password may
    # also come from postgres_dsn_file or ~/.pgpass), the schema holding this install's tables (created
    # and migrated at start), this broker's name among the nodes sharing the schema ("": mailslot@<host>,
    # as RabbitMQ's rabbit@<host>), and how long a batch commit retries while the server is unreachable
    # before its publishers are nacked (a restart or a failover usually completes within 10 s).
    postgres_dsn: str = ""
    postgres_schema: str = DEFAULT_POSTGRES_SCHEMA
    node_name: str = ""
    postgres_commit_timeout: float = DEFAULT_COMMIT_TIMEOUT
    # Several nodes sharing queues over one PostgreSQL schema (docs/cluster.md); needs store postgres. A
    # node that has not renewed its lease of a queue for lease_ttl seconds loses the queue to another node.
    cluster: bool = False
    lease_ttl: float = DEFAULT_LEASE_TTL
    # The cluster link (docs/cluster.md): where this node listens for the other nodes (HOST:PORT or
    # unix:/path; "" none: publishes to queues other nodes own are nacked here), and the secret every node
    # of the cluster shares to authenticate the link (prefer MAILSLOT_CLUSTER_SECRET to the command line).
    cluster_link: str = ""
    cluster_secret: str = ""
    # Mutual TLS on the cluster link, with tls_cert / tls_key (this node's, for serverAuth and clientAuth)
    # and tls_ca (the cluster's CA, which signed every node's certificate).
    cluster_link_tls: bool = False

    def __post_init__(self) -> None:
        """Refuse what the broker cannot use, naming the setting (mailslot/config.py adds the source)."""
        for name in ("amqp_port", "http_port", "tls_port", "http_tls_port", "prometheus_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(name, f"{port} is not a port number (0-65535, 0 picks a free one)")
        if not 1 <= self.max_message_size <= MAX_MESSAGE_SIZE_CAP:
            raise ConfigError(
                "max_message_size",
                f"{self.max_message_size} is out of range: at most {MAX_MESSAGE_SIZE_CAP} (512 MiB, "
                "RabbitMQ's cap), at least 1",
            )
        if self.tls_port is not None or self.http_tls_port is not None:
            for name in ("tls_cert", "tls_key"):
                if getattr(self, name) is None:
                    raise ConfigError(name, "is required for the TLS listeners (tls_port, http_tls_port)")
        if self.tls_fail_if_no_peer_cert and not self.tls_verify_peer:
            raise ConfigError("tls_fail_if_no_peer_cert", "needs tls_verify_peer (nothing asks for a certificate)")
        if self.tls_verify_peer and self.tls_ca is None:
            raise ConfigError("tls_verify_peer", "needs tls_ca (the CA client certificates are checked against)")
        for name, low, high in (("heartbeat", 0, 65535), ("channel_max", 0, 65535), ("frame_max", 4096, 2**32 - 1)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(name, f"{value} is out of range ({low}-{high})")
        if not self.default_user:
            raise ConfigError("default_user", "must not be empty")
        if self.handshake_timeout <= 0:
            raise ConfigError("handshake_timeout", "must be more than 0 seconds")
        if self.max_connections is not None and self.max_connections < 1:
            raise ConfigError("max_connections", "must be at least 1 (or none: as many as file descriptors allow)")
        if self.http_max_body_size < 1:
            raise ConfigError("http_max_body_size", "must be at least 1 byte")
        if self.consumer_timeout is not None and self.consumer_timeout < 0:
            raise ConfigError("consumer_timeout", "must not be negative (0 or none: never)")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError("log_level", f"{self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if self.store == "postgres" and not self.postgres_dsn:
            raise ConfigError("postgres_dsn", "is required with store postgres (--postgres-dsn, MAILSLOT_POSTGRES_DSN)")
        if not POSTGRES_SCHEMA_NAME.fullmatch(self.postgres_schema):
            raise ConfigError("postgres_schema", f"{self.postgres_schema!r}: use lower-case letters, digits and _")
        if self.cluster and self.store != "postgres":
            raise ConfigError("cluster", "needs store postgres (--store postgres --postgres-dsn ...)")
        if self.cluster_link:
            if not self.cluster:
                raise ConfigError("cluster_link", "needs cluster (--cluster)")
            try:
                parse_link_address(self.cluster_link)
            except ValueError as error:
                raise ConfigError("cluster_link", str(error)) from None
            if len(self.cluster_secret) < MIN_CLUSTER_SECRET:
                raise ConfigError("cluster_secret", f"is required with cluster_link, at least {MIN_CLUSTER_SECRET} "
                                  "characters, the same on every node (MAILSLOT_CLUSTER_SECRET)")
        if self.cluster_link_tls:
            if not self.cluster_link:
                raise ConfigError("cluster_link_tls", "needs cluster_link (--cluster-link)")
            for name in ("tls_cert", "tls_key", "tls_ca"):
                if getattr(self, name) is None:
                    raise ConfigError(name, "is required for the cluster link's TLS (cluster_link_tls)")
        if self.lease_ttl <= 0:
            raise ConfigError("lease_ttl", "must be more than 0 seconds")
        if self.postgres_commit_timeout <= 0:
            raise ConfigError("postgres_commit_timeout", "must be more than 0 seconds")
        for name, check in (("memory_high_watermark", parse_memory_limit), ("disk_free_limit", parse_disk_free_limit)):
            try:
                check(getattr(self, name), 1)
            except LimitError as error:
                raise ConfigError(name, str(error)) from None

    @property
    def tls_files(self) -> TLSFiles | None:
        """The TLS identity, when a TLS listener is configured."""
        if (self.tls_port is None and self.http_tls_port is None) or self.tls_cert is None or self.tls_key is None:
            return None
        return TLSFiles(
            cert=self.tls_cert,
            key=self.tls_key,
            ca=self.tls_ca,
            key_password=self.tls_key_password,
            verify_peer=self.tls_verify_peer,
            fail_if_no_peer_cert=self.tls_fail_if_no_peer_cert,
        )


LOG_LEVELS = ("debug", "info", "warning", "error")


class BrokerServer:
    """A whole broker process's worth: the core, its store, listeners and front ends. ``await start()``,
    then ``amqp_port`` / ``amqp_url``; ``await stop()``. (The core alone is ``mailslot.core.broker.Broker``.)"""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._core: CoreBroker | None = None
        self._listener: AMQPListener | None = None
        self._alarms: ResourceAlarms | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ports: dict[str, int] = {}  # "amqp" / "amqps": bound ports of the listeners that run
        self._http: HTTPServer | None = None
        self._tls: ReloadableTLS | None = None
        self._link_tls: LinkTLS | None = None  # the cluster link's (cluster_link_tls)
        self._access: InternalAccessControl | None = None
        self._admin: AccessAdmin | None = None
        self._policies: PolicyEngine | None = None
        self._cluster: ClusterNode | None = None

    async def start(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        limits = self._limits(config.memory_high_watermark, config.disk_free_limit)  # LimitError: before binding
        files = config.tls_files
        tls = ReloadableTLS(files) if files is not None else None  # ConfigError (bad files): before binding
        definitions = self._read_definitions()  # a missing or broken file: ConfigError before anything opens
        message_log, metadata = self._open_store()
        access = InternalAccessControl(metadata, loopback_users=config.loopback_users)
        # RabbitMQ seeds the default user only when no definitions are loaded.
        seeded = definitions is None and seed_defaults(access, config.default_user, config.default_pass,
                                                       config.default_vhost)
        core = CoreBroker(
            message_log,
            metadata,
            [AMQP_CODEC],  # the properties codec of every front end (messages stored by any of them)
            vhosts=(),
            consumer_timeout_ms=round(config.consumer_timeout * 1000) if config.consumer_timeout else None,
        )
        # Policies before recovery: queues and exchanges are rebuilt with their effective arguments.
        policies = PolicyEngine(metadata)
        use_policies(core, policies)
        self._policies = policies
        admin = AccessAdmin(access, PolicyAwareHost(core, policies))
        admin.attach()  # the vhosts of the access records, before recovery fills them
        ensure_configured(admin, config.users, config.vhosts, config.default_vhost)
        core.recover()
        self._access, self._admin = access, admin
        if definitions is not None:
            self._import_at_boot(definitions, admin, core)
        if isinstance(message_log, ClusterMessageLog) and isinstance(metadata, ClusterMetadataStore):
            link_tls = None
            if config.cluster_link_tls and config.tls_cert and config.tls_key and config.tls_ca:
                link_tls = cluster_link_tls(config.tls_cert, config.tls_key, config.tls_ca, config.tls_key_password)
            self._link_tls = link_tls
            self._cluster = await start_cluster_node(core, message_log, metadata, loop, access, admin, policies,
                                                     config.cluster_link, config.cluster_secret, link_tls)

        def make_connection(peer_host: str, outbox: set[AMQPConnection]) -> AMQPConnection:
            return AMQPConnection(
                core,
                peer_host=peer_host,
                access=access,
                handshake_timeout=config.handshake_timeout,
                cert_login_from=config.ssl_cert_login_from,
                heartbeat=config.heartbeat,
                frame_max=config.frame_max,
                channel_max=config.channel_max,
                max_message_size=config.max_message_size,
                now=loop.time(),
                outbox=outbox,
            )

        listener = AMQPListener(loop, core, make_connection)
        listener.admission = Admission(connection_cap(config.max_connections, raise_fd_limit()))
        read = config.resource_reader or system_reader(Path(config.data_dir))
        monitor = ResourceMonitor(read, limits)
        management = self._management(core, access, admin, listener, monitor, policies)
        management.node.cluster = self._cluster  # /api/nodes lists every node; a queue's "node" is its owner
        http = HTTPServer(management, commit_stats=listener.scheduler.commit_stats)
        self._core, self._listener, self._http, self._tls = core, listener, http, tls
        try:
            await self._listen(listener, http, tls)
        except BaseException:
            await self._close_listeners()
            self._stop_cluster()
            self._core = None
            core.close()
            raise
        log.info("storing messages %s", self.storage_description)
        if seeded:
            log.info("a fresh data directory: created user '%s' (administrator) and vhost '%s'",
                     config.default_user, config.default_vhost)
        self._alarms = ResourceAlarms(loop, listener, monitor, config.resource_check_interval)
        self._alarms.start()
        self._loop = loop

    def _read_definitions(self) -> object | None:
        path = self.config.definitions
        if path is None:
            return None
        try:
            return read_definitions_file(path)
        except DefinitionsError as error:
            raise ConfigError("definitions", error.text) from None

    def _import_at_boot(self, definitions: object, admin: AccessAdmin, core: CoreBroker) -> None:
        try:
            report = import_definitions(definitions, admin, core, self.policies)
        except DefinitionsError as error:
            core.close()
            raise ConfigError("definitions", f"{self.config.definitions} cannot be imported: {error.text}") from None
        core.flush()
        log.info("definitions from %s: %s", self.config.definitions, report.summary())

    def _management(
        self,
        core: CoreBroker,
        access: InternalAccessControl,
        admin: AccessAdmin,
        listener: AMQPListener,
        monitor: ResourceMonitor,
        policies: PolicyEngine,
    ) -> ManagementContext:
        """The management API's view of this broker: the access model the AMQP front end uses too, the AMQP
        connections, this node's facts and the settings."""
        config = self.config
        node = NodeInfo(
            name=config.node_name or default_node_name(),
            data_dir=None if config.store == "memory" else Path(config.data_dir).resolve(),
            storage=self.storage_description,
            monitor=monitor,
        )
        settings = ManagementSettings(
            max_body_bytes=config.http_max_body_size, open_health_checks=config.http_open_health_checks
        )
        return ManagementContext(core, access, AMQPConnections(listener), node, settings, rss=process_rss, admin=admin,
                                 policies=policies)

    async def _listen(self, listener: AMQPListener, http: HTTPServer, tls: ReloadableTLS | None) -> None:
        """Bind every listener that is on (a port of None is off), plain and TLS side by side; each goes
        into the node's listener list (overview, health checks) with the address it really bound."""
        config = self.config
        host = config.host
        http_host = config.http_host if config.http_host is not None else host
        prometheus_host = config.prometheus_host if config.prometheus_host is not None else http_host
        listeners = http.ctx.node.listeners
        for name, port, flag in (("amqp", config.amqp_port, "--port"), ("amqps", config.tls_port, "--tls-port")):
            if port is None:
                continue
            context = tls.amqp_context if tls is not None and name == "amqps" else None
            self._ports[name] = await _bind(listener.start(host, port, context), host, port, flag)
            tls_files = (config.tls_cert, config.tls_ca) if name == "amqps" else (None, None)
            listeners.append(Listener("amqp" if name == "amqp" else "amqp/ssl", host, self._ports[name], *tls_files))
        if config.http_port is not None:
            bound = await _bind(http.start_api(http_host, config.http_port), http_host, config.http_port, "--http-port")
            listeners.append(Listener("http", *bound))
        if config.http_tls_port is not None and tls is not None:
            port = config.http_tls_port
            bound = await _bind(http.start_api(http_host, port, tls.http_context), http_host, port, "--http-tls-port")
            listeners.append(Listener("https", *bound, config.tls_cert, config.tls_ca))
        if self._cluster is not None:  # other nodes' queries about queues here are made of this API
            self._cluster.management_url = (self.http_url if config.http_port is not None else
                                            self.https_url if config.http_tls_port is not None else "")
        if config.prometheus_port is not None:
            port = config.prometheus_port
            bound = await _bind(http.start_metrics(prometheus_host, port), prometheus_host, port, "--prometheus-port")
            listeners.append(Listener("http/prometheus", *bound))
        # Logged once everything is bound (a port in use is then the only line a failed start prints), with
        # the address each really listens on: a wildcard stays a wildcard, and the URL says how to reach it.
        for name, port in self._ports.items():
            log.info("%s listening on %s:%d", name.upper(), host, port)
        if listener.admission is not None:
            log.info("accepting at most %d client connections at once", listener.admission.cap)
        if http.api_address is not None and config.http_port is not None:
            log.info("HTTP API listening on %s:%d (%s/api/)", *http.api_address, self.http_url)
        if config.http_tls_port is not None:
            log.info("HTTPS API listening on %s:%d (%s/api/)", http_host, self.https_port, self.https_url)
        if http.metrics_address is not None:
            log.info("Prometheus metrics listening on %s:%d (%s/metrics)", *http.metrics_address, self.prometheus_url)

    async def _close_listeners(self) -> None:
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None

    def reload_tls(self) -> None:
        """Read the TLS certificate, key and CA files again (SIGHUP, or the management API): new
        connections use them, open ones keep theirs. Raises ConfigError, keeping the old ones, when the
        new files are unusable. Safe to call from any thread."""
        if self._tls is None and self._link_tls is None:
            raise ConfigError("tls_port", "no TLS listener or TLS cluster link is configured, nothing to reload")
        if self._tls is not None:
            self._tls.reload()
        if self._link_tls is not None:  # the same files: a problem was raised above, before either changed
            self._link_tls.reload()

    def _open_store(self) -> tuple[MessageLog, MetadataStore]:
        if self.config.store == "memory":
            return MemoryMessageLog(), MemoryMetadataStore()
        if self.config.store == "sqlite":
            return open_sqlite_store(Path(self.config.data_dir))
        if self.config.store == "segments":
            return open_segment_store(Path(self.config.data_dir))
        if self.config.store == "postgres":
            try:
                if self.config.cluster:
                    return open_cluster_store(
                        self.postgres_settings, self.config.lease_ttl, self.config.postgres_commit_timeout
                    )
                return open_postgres_store(self.postgres_settings, self.config.postgres_commit_timeout)
            except PostgresFormatError as exc:
                raise ConfigError("postgres_schema", str(exc)) from None
        raise ConfigError("store", f"unknown store {self.config.store!r}; expected segments, sqlite, postgres or memory")

    @property
    def postgres_settings(self) -> PostgresSettings:
        """Where ``store = "postgres"`` lives (BrokerConfig checked the fields)."""
        config = self.config
        return PostgresSettings(config.postgres_dsn, config.postgres_schema, config.node_name or default_node_name())

    async def stop(self) -> None:
        """Close every connection with 320 CONNECTION_FORCED, then flush and close the store."""
        if self._alarms is not None:
            self._alarms.stop()
            self._alarms = None
        await self._close_listeners()
        self._stop_cluster()
        if self._core is not None:
            self._core.close()
            self._core = None
        log.info("broker stopped")

    def _stop_cluster(self) -> None:
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster = None

    @property
    def cluster(self) -> ClusterNode | None:
        """This node's part of a cluster (``cluster = true``), else None."""
        return self._cluster

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

    def run_threadsafe(self, fn: Callable[[], _T], timeout: float = 30.0) -> _T:
        """Run ``fn`` on the broker's event loop and return its result; from the loop's own thread it
        simply runs. The way another thread (a blocking test, an admin tool) changes a running broker."""
        loop = self._loop
        if loop is None or _running_loop() is loop:
            return fn()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                future.set_exception(error)

        loop.call_soon_threadsafe(run)
        return future.result(timeout)

    @property
    def alarms(self) -> frozenset[str]:
        """Resource alarms in effect: a subset of {"memory", "disk"}."""
        return self._alarms.active if self._alarms is not None else frozenset()

    @property
    def core(self) -> CoreBroker:
        assert self._core is not None, "broker not started"
        return self._core

    @property
    def access(self) -> InternalAccessControl:
        """Logins, permission checks and the table of open connections (core/access)."""
        assert self._access is not None, "broker not started"
        return self._access

    @property
    def policies(self) -> PolicyEngine:
        """Policies and operator policies (core/policies.py)."""
        assert self._policies is not None, "broker not started"
        return self._policies

    @property
    def access_admin(self) -> AccessAdmin:
        """Users, vhosts, permissions and limits changed at runtime (core/access/admin.py)."""
        assert self._admin is not None, "broker not started"
        return self._admin

    def import_definitions(self, body: object, vhost: str | None = None) -> ImportReport:
        """Import a RabbitMQ definitions document (parsed JSON) into the running broker (on its loop)."""
        report = import_definitions(body, self.access_admin, self.core, self.policies, vhost=vhost)
        return report

    def export_definitions(self, vhost: str | None = None) -> dict[str, object]:
        return export_definitions(self.access, self.core, self.policies, vhost=vhost)

    @property
    def amqp_port(self) -> int:
        """The plain AMQP port (0 when that listener is off)."""
        return self._ports.get("amqp", 0)

    @property
    def amqps_port(self) -> int:
        """The AMQPS (TLS) port (0 when that listener is off)."""
        return self._ports.get("amqps", 0)

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def amqps_url(self) -> str:
        """The AMQPS URL on loopback; the client must trust the server certificate's CA."""
        return f"amqps://guest:guest@127.0.0.1:{self.amqps_port}/%2F"

    @property
    def http_port(self) -> int:
        return self._http.port if self._http is not None else 0

    @property
    def https_port(self) -> int:
        return self._http.tls_port if self._http is not None else 0

    @property
    def prometheus_port(self) -> int:
        address = self._http.metrics_address if self._http is not None else None
        return address[1] if address is not None else 0

    @property
    def http_url(self) -> str:
        """Base URL of the management API; a wildcard bind address is reached through loopback."""
        return f"http://{self._url_host(self._http_host)}:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://{self._url_host(self._http_host)}:{self.https_port}"

    @property
    def prometheus_url(self) -> str:
        host = self.config.prometheus_host if self.config.prometheus_host is not None else self._http_host
        return f"http://{self._url_host(host)}:{self.prometheus_port}"

    @property
    def _http_host(self) -> str:
        return self.config.http_host if self.config.http_host is not None else self.config.host

    @staticmethod
    def _url_host(host: str) -> str:
        if host in ("", "0.0.0.0", "::"):
            return "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    @property
    def storage_description(self) -> str:
        """Where messages are stored, for the start-up log line."""
        if self.config.store == "memory":
            return "in memory (nothing survives a restart)"
        if self.config.store == "postgres":
            settings = self.postgres_settings
            cluster = f", in a cluster (lease TTL {self.config.lease_ttl:g} s)" if self.config.cluster else ""
            return f"in PostgreSQL, schema {settings.schema!r}, as node {settings.node_name!r}{cluster}"
        kind = "SQLite, WAL mode" if self.config.store == "sqlite" else "segment log + SQLite metadata"
        return f"in {Path(self.config.data_dir).resolve()} ({kind})"


T = TypeVar("T")


async def _bind(listening: Awaitable[T], host: str, port: int, flag: str) -> T:
    """Await a listener's start; a taken port becomes PortInUseError naming the flag that changes it."""
    try:
        return await listening
    except OSError as error:
        if is_address_in_use(error):
            raise PortInUseError(host, port, flag) from None
        raise


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class DataDirInUse(Exception):
    """``mailslot ctl --data-dir``: the directory is not a stopped broker's (one line for the user)."""


@contextlib.contextmanager
def offline_metadata(data_dir: Path) -> Iterator[MetadataStore]:
    """The metadata store (users, vhosts, permissions, limits) of a STOPPED broker's data directory, for
    ``mailslot ctl --data-dir`` (a running broker keeps these records in memory and would never see, or
    would overwrite, a change made under it). Raises :class:`DataDirInUse` when a broker holds it:

    * segment store (the default; ``log/`` exists): its exclusive ``flock`` on ``log/LOCK`` is taken and held
      while the store is open, so a broker started meanwhile refuses to start;
    * either store: a broker keeps ``mailslot.db`` open in WAL mode, which an EXCLUSIVE-mode write
      transaction cannot get (SQLite answers "database is locked" at once)."""
    import fcntl
    import sqlite3

    from .storage.segments import LOG_DIRNAME
    from .storage.segments.log import LOCK_FILENAME
    from .storage.sqlite import DB_FILENAME, SqliteMetadataStore

    data_dir = Path(data_dir)
    db_path = data_dir / DB_FILENAME
    if not db_path.is_file():
        raise DataDirInUse(f"{data_dir} is not a mailslot data directory (no {DB_FILENAME}); start the broker "
                           "on it once to create it")
    lock_fd: int | None = None
    if (data_dir / LOG_DIRNAME).is_dir():
        lock_fd = os.open(data_dir / LOG_DIRNAME / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise DataDirInUse(f"{data_dir} is in use by a running broker: stop it first, or leave out --data-dir "
                               "to change the running broker through its management API") from None
    try:
        probe = sqlite3.connect(db_path, timeout=0, isolation_level=None)
        try:
            probe.execute("PRAGMA locking_mode = EXCLUSIVE")
            probe.execute("BEGIN EXCLUSIVE")
            probe.execute("ROLLBACK")
        except sqlite3.OperationalError:
            raise DataDirInUse(f"{data_dir} is in use by a running broker ({DB_FILENAME} is locked): stop it "
                               "first, or leave out --data-dir to change the running broker through its "
                               "management API") from None
        finally:
            probe.close()
        store = SqliteMetadataStore(db_path)
        try:
            yield store
        finally:
            store.close()
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
