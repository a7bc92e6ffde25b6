"""The inbox/outbox SQL shared by the SQLite and PostgreSQL inboxes (DB-API connections in autocommit
mode; the session issues BEGIN/COMMIT itself so the handler's writes land in the same transaction)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from .api import Output, decode_outputs


class SqlInboxSession:
    """Inbox and outbox statements for one connection. ``p`` is the driver's placeholder (? or %s)."""

    def __init__(self, conn: Any, *, p: str, begin: str, inbox: str, outbox: str) -> None:
        self._conn = conn
        self._begin = begin
        self._claim = f"INSERT INTO {inbox} (key, processed_at) VALUES ({p}, {p}) ON CONFLICT (key) DO NOTHING"
        self._record = (f"INSERT INTO {outbox} (key, idx, exchange, routing_key, body, headers, out_key) "
                        f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})")
        self._pending = (f"SELECT exchange, routing_key, body, headers, out_key FROM {outbox} "
                         f"WHERE key = {p} ORDER BY idx")
        self._confirmed = f"DELETE FROM {outbox} WHERE key = {p}"

    @property
    def db(self) -> Any:
        return self._conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        conn = self._conn
        conn.execute(self._begin)
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def claim(self, key: str) -> bool:
        return int(self._conn.execute(self._claim, (key, time.time())).rowcount) == 1

    def record_outputs(self, key: str, outputs: list[Output]) -> None:
        self._conn.executemany(self._record, [
            (key, i, o.exchange, o.routing_key, o.body, o.encode_headers(), o.key) for i, o in enumerate(outputs)])

    def pending_outputs(self, key: str) -> list[Output]:
        return decode_outputs(self._conn.execute(self._pending, (key,)).fetchall())

    def outputs_confirmed(self, key: str) -> None:
        self._conn.execute(self._confirmed, (key,))  # autocommit: its own transaction

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()


def prune(conn: Any, inbox: str, p: str, older_than: float) -> int:
    return int(conn.execute(f"DELETE FROM {inbox} WHERE processed_at < {p}",
                            (time.time() - older_than,)).rowcount)
