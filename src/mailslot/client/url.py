"""``amqp[s]://user:pass@host:port/vhost?heartbeat=60&cacertfile=ca.pem`` -> :class:`ConnectParams`.

The one URL parser of every client mailslot ships (``mailslot.client``, ``mailslot worker``, ``publish``,
``consume``, ``bench``, ``spike``). Query parameters follow RabbitMQ's URI query parameters
(https://www.rabbitmq.com/docs/uri-query-parameters), so a URL that works with RabbitMQ's tools works here:

* ``heartbeat``, ``frame_max``, ``connection_timeout`` (seconds);
* with ``amqps://`` only: ``cacertfile`` (the CA that signed the broker's certificate; default: the
  system's CAs), ``certfile`` and ``keyfile`` (a client certificate, for brokers with verify_peer / SASL
  EXTERNAL), ``server_name_indication`` (the name the certificate is checked against and sent as SNI;
  default: the URL's host), ``verify`` (``verify_peer``, the default, or ``verify_none``: no check at all,
  for tests only).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

#: RabbitMQ's default (rabbit.heartbeat = 60 s): a dead peer is noticed within about two intervals.
DEFAULT_HEARTBEAT = 60
#: RabbitMQ's frame_max default; the server may lower it during tuning.
DEFAULT_FRAME_MAX = 131072
PORTS = {"amqp": 5672, "amqps": 5671}  # IANA
_TLS_QUERY = ("cacertfile", "certfile", "keyfile", "server_name_indication", "verify")


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
    # TLS (amqps://)
    tls: bool = False
    cacertfile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    server_name: str | None = None  # default: host
    verify: bool = True

    @classmethod
    def parse(cls, url: str) -> ConnectParams:
        """Parse an AMQP URI (https://www.rabbitmq.com/uri-spec.html): an empty path is vhost "/",
        ``%2F`` is "/"; the query parameters above. Raises ValueError (never showing the password)."""
        parts = urlsplit(url)
        scheme = parts.scheme or "amqp"
        if scheme not in PORTS:
            raise ValueError(f"only amqp:// and amqps:// URLs are supported, not {scheme}://")
        path = parts.path.removeprefix("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        tls = scheme == "amqps"
        given = [k for k in _TLS_QUERY if k in query]
        if given and not tls:
            raise ValueError(f"{given[0]} needs an amqps:// URL")
        verify = query.get("verify", "verify_peer")
        if verify not in ("verify_peer", "verify_none"):
            raise ValueError(f"verify must be verify_peer or verify_none, not {verify!r}")
        if ("certfile" in query) != ("keyfile" in query):
            raise ValueError("certfile and keyfile go together")
        try:
            port = parts.port or PORTS[scheme]
            return cls(
                host=parts.hostname or "localhost",
                port=port,
                username=unquote(parts.username or "guest"),
                password=unquote(parts.password or "guest"),
                vhost=unquote(path) if path else "/",
                heartbeat=int(query.get("heartbeat", DEFAULT_HEARTBEAT)),
                frame_max=int(query.get("frame_max", DEFAULT_FRAME_MAX)),
                connect_timeout=float(query.get("connection_timeout", 15.0)),
                tls=tls,
                cacertfile=query.get("cacertfile"),
                certfile=query.get("certfile"),
                keyfile=query.get("keyfile"),
                server_name=query.get("server_name_indication"),
                verify=verify == "verify_peer",
            )
        except ValueError as error:  # a port or a number that is not one
            raise ValueError(f"bad URL: {error}") from None

    @property
    def server_hostname(self) -> str | None:
        """The name the broker's certificate must carry (and the SNI sent); None without TLS."""
        return (self.server_name or self.host) if self.tls else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context for this URL (None for amqp://): TLS 1.2+, the broker's certificate
        checked against ``cacertfile`` (or the system's CAs) and the server name, unless verify_none.
        Raises OSError / ssl.SSLError for unreadable or unusable files."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.cacertfile)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certfile and self.keyfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context
