"""How many client connections the broker takes at once, so that a flood of connections can never
exhaust the process's file descriptors (the store, the HTTP API and the log need theirs).

* At start the soft ``RLIMIT_NOFILE`` is raised to the hard limit (what ``ulimit -n`` allows without
  privileges; RabbitMQ's docs ask operators for a high limit for the same reason).
* The cap is ``max_connections`` when given, never more than the descriptors left after
  :data:`FD_RESERVE`; without ``max_connections`` it is that budget.
* A socket accepted while the cap is reached is closed at once, before any byte is read (RabbitMQ's
  ranch listener leaves it waiting in the accept backlog instead); one warning per
  :data:`WARN_INTERVAL` seconds says so, so a flood does not flood the log too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

log = logging.getLogger("mailslot.transport")

#: Descriptors kept back from client connections: segment files and SQLite (WAL, journal), the HTTP
#: API's sockets, TLS certificate reloads, log files and the worker threads' needs. Measured use of an
#: idle broker is about 30; 128 leaves room for a busy HTTP API.
FD_RESERVE = 128
WARN_INTERVAL = 10.0  # seconds between two "connection limit reached" warnings


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; returns the soft limit now in force."""
    if resource is None:
        return 8192
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # some sandboxes refuse: keep the soft limit
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(configured: int | None, fd_limit: int) -> int:
    """The most connections at once: ``configured`` bounded by the descriptor budget (at least 1)."""
    budget = max(1, fd_limit - FD_RESERVE)
    if configured is None:
        return budget
    if configured > budget:
        log.warning(
            "max_connections %d is more than the file descriptor limit allows (%d - %d reserved): using %d",
            configured, fd_limit, FD_RESERVE, budget,
        )
    return min(configured, budget)


class Admission:
    """Counts refused sockets and rate-limits the warning about them."""

    def __init__(self, cap: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = cap
        self.refused = 0
        self._clock = clock
        self._warned_at = float("-inf")

    def admit(self, open_connections: int) -> bool:
        if open_connections < self.cap:
            return True
        self.refused += 1
        now = self._clock()
        if now - self._warned_at >= WARN_INTERVAL:
            self._warned_at = now
            log.warning("connection limit (%d) reached: new connections are closed (%d so far)", self.cap, self.refused)
        return False
