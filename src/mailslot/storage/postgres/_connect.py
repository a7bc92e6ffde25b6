"""Connections to PostgreSQL: settings, search_path per install schema, and reconnecting.

Every connection is in autocommit mode: the store issues BEGIN/COMMIT itself where a batch needs a
transaction, and a metadata write is one statement (its own transaction, durable when it returns).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger("mailslot.storage.postgres")

T = TypeVar("T")

# Bounds, each with its reason:
# libpq's connect_timeout (seconds, 2 is its minimum): a connection attempt from the event loop's
# thread (metadata writes, page-in reads) stalls the loop at most this long while the database is down.
CONNECT_TIMEOUT = 2
# tcp_user_timeout (ms): a server that stopped answering (cable pulled, host frozen) breaks the
# connection after this long instead of the kernel's ~15 minutes of retransmissions.
TCP_USER_TIMEOUT_MS = 10_000
# TCP keepalives on idle connections (seconds): notice a dead server within ~25 s while idle.
KEEPALIVES_IDLE, KEEPALIVES_INTERVAL, KEEPALIVES_COUNT = 10, 5, 3
# After a failed connection attempt, calls within this window fail at once instead of trying again:
# a burst of declares during an outage must not stall the event loop once per declare.
RECONNECT_BACKOFF = 1.0

# An install's schema name: a plain lower-case identifier, so it needs no quoting anywhere.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_SCHEMA = "mailslot"


def default_node_name() -> str:
    """``mailslot@<host>``, as RabbitMQ names a node ``rabbit@<host>``."""
    return f"mailslot@{socket.gethostname().split('.')[0]}"


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    """Where the store lives: ``dsn`` (libpq URL or key=value string), ``schema`` (one install per
    schema; created if missing) and ``node_name`` (this broker among those sharing the schema)."""

    dsn: str
    schema: str = DEFAULT_SCHEMA
    node_name: str = ""  # "": default_node_name()

    def __post_init__(self) -> None:
        if not SCHEMA_NAME.fullmatch(self.schema):
            raise ValueError(
                f"invalid PostgreSQL schema name {self.schema!r}: use lower-case letters, digits and _"
            )
        if not self.node_name:
            object.__setattr__(self, "node_name", default_node_name())


class StoreUnavailable(ConnectionError):
    """PostgreSQL cannot be reached now (the call may succeed later)."""


def connect(settings: PostgresSettings, role: str) -> psycopg.Connection[Any]:
    """A new autocommit connection whose search_path is the install's schema.

    It is to a server that accepts writes: unless the DSN says otherwise, libpq's
    ``target_session_attrs=read-write`` skips a standby (or a demoted primary), whether the DSN names
    several hosts (the first writable one is taken) or one name that moved (DNS, a virtual IP). Without
    it a connection made to a standby during a failover would stay there, every batch refused."""
    conn = psycopg.connect(
        _writable(settings.dsn),
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT,
        tcp_user_timeout=TCP_USER_TIMEOUT_MS,
        keepalives=1,
        keepalives_idle=KEEPALIVES_IDLE,
        keepalives_interval=KEEPALIVES_INTERVAL,
        keepalives_count=KEEPALIVES_COUNT,
        application_name=f"mailslot {settings.node_name} {role}"[:63],
    )
    try:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(settings.schema)))
        row = conn.execute("SHOW synchronous_commit").fetchone()
        if row is not None and row[0] == "off":
            # A publisher confirm promises the message is on disk: never let COMMIT return earlier.
            log.warning("synchronous_commit is off on the server; mailslot turns it on for its sessions")
            conn.execute("SET synchronous_commit TO on")
    except BaseException:
        conn.close()
        raise
    return conn


def _writable(dsn: str) -> str:
    """``dsn`` asking for a server that accepts writes, unless the operator chose otherwise."""
    try:
        if "target_session_attrs" in conninfo_to_dict(dsn) or "PGTARGETSESSIONATTRS" in os.environ:
            return dsn
        return make_conninfo(dsn, target_session_attrs="read-write")
    except psycopg.ProgrammingError:  # a malformed DSN: let connect() say why
        return dsn


class Link:
    """One connection, opened on first use and again on the first use after it broke.

    ``get()`` raises :class:`StoreUnavailable` when the server cannot be reached. The owner calls
    ``broken()`` after an ``OperationalError`` so that the next ``get()`` reconnects.
    """

    def __init__(self, settings: PostgresSettings, role: str) -> None:
        self.settings, self.role = settings, role
        self._conn: psycopg.Connection[Any] | None = None
        self._failed_at = -RECONNECT_BACKOFF
        self.lock = threading.Lock()  # one thread at a time on this connection

    def get(self, *, backoff: bool = True) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if backoff and time.monotonic() - self._failed_at < RECONNECT_BACKOFF:
            raise StoreUnavailable(f"PostgreSQL unreachable ({self.role} connection); retrying shortly")
        try:
            self._conn = connect(self.settings, self.role)
        except psycopg.OperationalError as exc:
            self._failed_at = time.monotonic()
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {_one_line(exc)}") from exc
        return self._conn

    def run(self, call: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``call(connection)``, once more on a new connection if the first one turned out broken (a
        restarted server, a terminated backend). Only for calls that are safe to repeat: reads, upserts,
        deletes. Raises :class:`StoreUnavailable` when the second try fails too."""
        with self.lock:
            try:
                return call(self.get())
            except psycopg.OperationalError:
                self.broken()
            try:
                return call(self.get(backoff=False))
            except psycopg.OperationalError as exc:
                self.broken()
                raise StoreUnavailable(f"PostgreSQL {self.role} call failed: {_one_line(exc)}") from exc

    def broken(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail again
                conn.close()

    close = broken


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
