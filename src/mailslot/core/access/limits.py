"""Vhost limits (``max-connections``, ``max-queues``) and user limits (``max-connections``,
``max-channels``), with RabbitMQ's rules and refusal texts (rabbit_vhost_limit.erl, rabbit_reader.erl,
rabbit_channel.erl, rabbit_auth_backend_internal:is_over_limit):

* no value or a negative value: no limit; ``0``: nothing allowed; ``N``: at most N at a time;
* a refused connection gets 530 NOT_ALLOWED (``connection.open``), a refused channel 530 too (it closes
  the connection, as RabbitMQ's reader does), a refused queue 406 PRECONDITION_FAILED (the channel).
"""

from __future__ import annotations

from typing import Any

from ...storage.api import MetadataStore
from ..errors import NotAllowed, PreconditionFailed
from .records import USER_LIMITS, VHOST_LIMITS

MAX_CONNECTIONS, MAX_QUEUES, MAX_CHANNELS = "max-connections", "max-queues", "max-channels"
VHOST_LIMIT_NAMES = (MAX_CONNECTIONS, MAX_QUEUES)
USER_LIMIT_NAMES = (MAX_CONNECTIONS, MAX_CHANNELS)


class InvalidLimit(PreconditionFailed):
    """A limit that is not one of the known names or not an integer (rabbit_parameter_validation)."""


def validate(kind: str, names: tuple[str, ...], limits: dict[str, Any]) -> dict[str, int]:
    unknown = sorted(set(limits) - set(names))
    if unknown:
        raise InvalidLimit(f"Unrecognised terms {unknown} in {kind}")
    out: dict[str, int] = {}
    for name, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidLimit(f"{name} should be a number, actually was {value!r}")
        out[name] = value
    return out


def reached(limit: int | None, count: int) -> bool:
    """True when one more would exceed ``limit`` (None or negative: unlimited)."""
    return limit is not None and limit >= 0 and count >= limit


class Limits:
    """The limits of every vhost and user, written through to the metadata store."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata
        self._vhosts: dict[str, dict[str, int]] = dict(metadata.load_records(VHOST_LIMITS))
        self._users: dict[str, dict[str, int]] = dict(metadata.load_records(USER_LIMITS))

    # ---- reading --------------------------------------------------------------------------------

    def of_vhost(self, vhost: str) -> dict[str, int]:
        return dict(self._vhosts.get(vhost, {}))

    def of_user(self, user: str) -> dict[str, int]:
        return dict(self._users.get(user, {}))

    def vhost_limit(self, vhost: str, name: str) -> int | None:
        return self._vhosts.get(vhost, {}).get(name)

    def user_limit(self, user: str, name: str) -> int | None:
        return self._users.get(user, {}).get(name)

    def all_vhosts(self) -> dict[str, dict[str, int]]:
        return {name: dict(limits) for name, limits in self._vhosts.items()}

    # ---- changing -------------------------------------------------------------------------------

    def set_vhost(self, vhost: str, limits: dict[str, Any]) -> dict[str, int]:
        """Replace the vhost's limits (``rabbitmqctl set_vhost_limits`` replaces the whole set)."""
        return self._set(VHOST_LIMITS, self._vhosts, vhost, validate("vhost-limits", VHOST_LIMIT_NAMES, limits))

    def set_user(self, user: str, limits: dict[str, Any]) -> dict[str, int]:
        """Merge into the user's limits (``rabbitmqctl set_user_limits`` adds to the existing ones)."""
        merged = {**self._users.get(user, {}), **validate("user-limits", USER_LIMIT_NAMES, limits)}
        return self._set(USER_LIMITS, self._users, user, merged)

    def clear_vhost(self, vhost: str, name: str | None = None) -> None:
        self._clear(VHOST_LIMITS, self._vhosts, vhost, name)

    def clear_user(self, user: str, name: str | None = None) -> None:
        """``name`` None (or "all", as rabbitmqctl says it) clears every limit of the user."""
        self._clear(USER_LIMITS, self._users, user, None if name == "all" else name)

    def _set(self, kind: str, table: dict[str, dict[str, int]], key: str, limits: dict[str, int]) -> dict[str, int]:
        if limits:
            self._metadata.save_record(kind, key, limits)
            table[key] = limits
        else:
            self._clear(kind, table, key, None)
        return dict(limits)

    def _clear(self, kind: str, table: dict[str, dict[str, int]], key: str, name: str | None) -> None:
        current = table.get(key)
        if current is None:
            return
        remaining = {} if name is None else {k: v for k, v in current.items() if k != name}
        if remaining:
            self._metadata.save_record(kind, key, remaining)
            table[key] = remaining
        else:
            self._metadata.delete_record(kind, key)
            del table[key]

    # ---- checks, with RabbitMQ's texts --------------------------------------------------------------

    def check_vhost_connections(self, vhost: str, user: str, count: int) -> None:
        limit = self.vhost_limit(vhost, MAX_CONNECTIONS)
        if reached(limit, count):
            raise NotAllowed(f"access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached")

    def check_user_connections(self, user: str, count: int) -> None:
        limit = self.user_limit(user, MAX_CONNECTIONS)
        if reached(limit, count):
            raise NotAllowed(f"connection refused for user '{user}': user connection limit ({limit}) is reached")

    def check_user_channels(self, user: str, count: int) -> None:
        limit = self.user_limit(user, MAX_CHANNELS)
        if reached(limit, count):
            raise NotAllowed(
                f"number of channels opened for user '{user}' has reached the maximum allowed user limit of ({limit})"
            )



def check_queue_count(vhost: str, queue: str, limit: int | None, count: int) -> None:
    """The core asks before creating a queue (rabbit_channel:check_vhost_queue_limit): 406 when the vhost
    holds ``limit`` queues already."""
    if reached(limit, count):
        raise PreconditionFailed(f"cannot declare queue '{queue}': queue limit in vhost '{vhost}' ({limit}) is reached")
