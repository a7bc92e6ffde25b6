"""``amqp://user:pass@host:port/vhost?heartbeat=60`` -> :class:`ConnectParams`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

#: RabbitMQ's default (rabbit.heartbeat = 60 s): a dead peer is noticed within about two intervals.
DEFAULT_HEARTBEAT = 60
#: RabbitMQ's frame_max default; the server may lower it during tuning.
DEFAULT_FRAME_MAX = 131072


@dataclass(frozen=True)
class ConnectParams:
    host: str = "localhost"
    port: int = 5672
    username: str = "guest"
    password: str = "guest"
    vhost: str = "/"
    heartbeat: int = DEFAULT_HEARTBEAT
    frame_max: int = DEFAULT_FRAME_MAX
    connect_timeout: float = 15.0

    @classmethod
    def parse(cls, url: str) -> ConnectParams:
        """Parse an AMQP URI (https://www.rabbitmq.com/uri-spec.html): an empty path is vhost "/",
        ``%2F`` is "/"; query parameters ``heartbeat``, ``frame_max``, ``connection_timeout`` (seconds)."""
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", ""):
            raise ValueError(f"only amqp:// URLs are supported, not {url!r}")
        path = parts.path.removeprefix("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or 5672,
            username=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            vhost=unquote(path) if path else "/",
            heartbeat=int(query.get("heartbeat", DEFAULT_HEARTBEAT)),
            frame_max=int(query.get("frame_max", DEFAULT_FRAME_MAX)),
            connect_timeout=float(query.get("connection_timeout", 15.0)),
        )
