"""Who may log in: the decision the front end makes on connection.start-ok (the SASL response itself is
decoded by :mod:`mailslot.protocols.amqp091.sasl`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Users:
    """Static users: name -> password, and RabbitMQ's ``loopback_users`` (who may log in only from a
    loopback address; ``guest`` by default, as RabbitMQ)."""

    passwords: dict[str, str]
    loopback_only: frozenset[str] = frozenset()

    def refusal(self, username: str, password: str | None, peer_host: str) -> str | None:
        """Why this login is refused (a line for the log), or None when it is accepted."""
        if username in self.loopback_only and not is_loopback(peer_host):
            return f"user '{username}' can only connect via localhost (peer {peer_host})"
        if password is None or self.passwords.get(username) != password:
            return f"login refused for user '{username}' from {peer_host}"
        return None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host in ("localhost", "")
