"""Composition root: builds config, store, core, front ends and listeners. Only the CLI and
``mailslot.testing`` import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class PortInUseError(OSError):
    """A listener could not bind. ``flag`` names the CLI option that changes the port."""

    def __init__(self, host: str, port: int, flag: str) -> None:
        super().__init__(f"port {port} on {host} is already in use; choose another with {flag}")
        self.host, self.port, self.flag = host, port, flag


@dataclass
class BrokerConfig:
    host: str = "0.0.0.0"  # RabbitMQ listens on every interface by default
    amqp_port: int = 5672  # IANA port for AMQP; 0 = ephemeral (tests)
    store: str = "sqlite"  # "sqlite" (embedded, default) or "memory"
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

    async def start(self) -> None:
        raise NotImplementedError  # implemented with the core + front end

    async def stop(self) -> None:
        raise NotImplementedError

    @property
    def amqp_port(self) -> int:
        raise NotImplementedError

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def storage_description(self) -> str:
        """Where messages are stored, for the start-up log line."""
        raise NotImplementedError
