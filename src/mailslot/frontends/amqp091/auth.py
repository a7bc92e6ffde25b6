"""Logging a client in and admitting its connection, on top of core/access (the SASL response itself is
decoded by :mod:`mailslot.protocols.amqp091.sasl`).

* :func:`authenticate`: the SASL mechanism's credentials (PLAIN, AMQPLAIN) or the TLS client certificate
  (EXTERNAL, as RabbitMQ's rabbit_auth_mechanism_ssl: the subject DN, or its CN with
  ``ssl_cert_login_from = common_name``) to a :class:`~mailslot.core.access.User`.
* :class:`DeferredLogin`: a login held back while its source is being slowed down (core/access/throttle.py);
  the front end's timer decides it when due. The protocol layer keeps parsing paused meanwhile.
* :func:`connection_info`: the entry a front end adds to the broker's connection table once a
  connection is open on a vhost (limits count it; deleting its user or vhost closes it through it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ...core.access import User
from ...core.access.control import InternalAccessControl
from ...core.connections import ConnectionInfo
from ...core.errors import AccessRefused
from ...core.peer import PeerCertificate

CertLoginFrom = Literal["distinguished_name", "common_name"]
EXTERNAL = "EXTERNAL"


def external_username(certificate: PeerCertificate | None, login_from: CertLoginFrom) -> str | None:
    """The username a client certificate stands for (rabbit_ssl:peer_cert_auth_name), or None."""
    if certificate is None:
        return None
    return certificate.common_name if login_from == "common_name" else certificate.subject


def authenticate(
    access: InternalAccessControl,
    mechanism: str,
    username: str,
    password: str | None,
    peer_host: str,
    certificate: PeerCertificate | None,
    login_from: CertLoginFrom = "distinguished_name",
) -> User:
    """The user, or :class:`AccessRefused` (already logged with the source and the user name)."""
    if mechanism == EXTERNAL:
        name = external_username(certificate, login_from)
        if name is None:  # rabbit_auth_mechanism_ssl: refused before any user is looked up
            raise AccessRefused("connection peer presented no TLS (x.509) certificate")
        return access.authenticate_external(name, peer_host)
    return access.authenticate(username, password or "", peer_host, mechanism)


@dataclass
class DeferredLogin:
    """A decided-later login: what the client sent, and when the decision is due."""

    due: float
    decide: Callable[[], None]


def connection_info(
    user: User,
    vhost: str,
    peer: tuple[str, int],
    local: tuple[str, int],
    channels: Callable[[], int],
    close: Callable[[str], None],
    *,
    protocol: str = "AMQP 0-9-1",
    tls: bool = False,
    client_properties: dict[str, Any] | None = None,
) -> ConnectionInfo:
    """A connection table entry named as RabbitMQ names connections ("127.0.0.1:50712 -> 127.0.0.1:5672")."""
    name = f"{peer[0]}:{peer[1]} -> {local[0]}:{local[1]}"
    return ConnectionInfo(user.name, vhost, peer[0], peer[1], channels, close, protocol=protocol, tls=tls,
                          client_properties=dict(client_properties or {}), name=name)
