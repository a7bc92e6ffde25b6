"""The embedded default store: SQLite in WAL mode (docs/storage-format.md, docs/decisions/0001).

Rules of this module:

* Staging is plain Python: tuples into dicts and lists, no SQL. :meth:`SqliteMessageLog.commit` runs
  the whole batch as one transaction (``executemany`` per kind of write) and its COMMIT fsyncs the WAL
  once: that is the group commit. A crash before COMMIT returns loses the batch and nothing else.
* A message appended and then removed in the same uncommitted batch (published, delivered and acked
  within one loop iteration) never reaches SQLite: the removal cancels the staged row.
* Staged writes are applied in this order: purges, inserts, requeue counts, deletes, delivery
  watermarks (one row per queue in ``delivered``, never a write to the message rows). It is
  observably the same as applying them in staging order (the memory store's way) because staging
  folds every later operation into the earlier ones: a purge drops the queue's staged rows, removes and
  flags aimed at a staged row edit that row instead of being queued.
* One connection per store object. :meth:`SqliteMessageLog.prepare_commit` detaches the staged batch
  and returns a function that writes it, which the broker runs in a worker thread while the event
  loop stages the next batch; a lock serialises that writer with ``read``/``commit``/``recover``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

from mailslot.storage.api import (
    BindingDefinition,
    Definitions,
    ExchangeDefinition,
    QueueDefinition,
    QueueRecovery,
    StoredMessage,
)
from mailslot.storage.sqlite._codec import decode_table, encode_table
from mailslot.storage.sqlite._schema import connect

DB_FILENAME = "mailslot.db"

# Row layout of a staged append; the column order of _INSERT. The ``redelivered`` column holds the
# requeue count, -1 for "redelivered, none counted" (migrations/0002_deadline_requeues.sql).
_Row = tuple[str, int, bool, int, int, str, str, bytes, bytes]
_INSERT = (
    "INSERT OR REPLACE INTO messages"
    " (queue, seq, persistent, redelivered, deadline, exchange, routing_key, properties, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELETE = "DELETE FROM messages WHERE queue = ? AND seq = ?"
_REDELIVER = "UPDATE messages SET redelivered = max(redelivered, 0) + 1 WHERE queue = ? AND seq = ?"
_PURGE = "DELETE FROM messages WHERE queue = ?"
_PURGE_DELIVERED = "DELETE FROM delivered WHERE queue = ?"
_DELIVERED = (
    "INSERT INTO delivered (queue, seq) VALUES (?, ?)"
    " ON CONFLICT (queue) DO UPDATE SET seq = max(seq, excluded.seq)"
)
_WATERMARK = "SELECT seq FROM delivered WHERE queue = ?"
_READ = (
    "SELECT seq, persistent, redelivered, deadline, exchange, routing_key, properties, body FROM messages"
    " WHERE queue = ? AND seq > ? ORDER BY seq LIMIT ?"
)


class SqliteMessageLog:
    """:class:`~mailslot.storage.api.MessageLog` in the ``messages`` table of a SQLite database."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = connect(self.path)
        # queue -> seq -> row: staged appends, cancellable by a later remove of the same batch.
        self._appends: dict[str, dict[int, _Row]] = {}
        self._removes: list[tuple[str, int]] = []
        self._redelivers: list[tuple[str, int]] = []
        self._purges: set[str] = set()
        self._delivered: dict[str, int] = {}  # queue -> staged delivery watermark
        self._lock = threading.Lock()  # one writer or reader on the connection at a time

    # -- staging -------------------------------------------------------------------------------------
    def stage_append(self, messages: list[StoredMessage]) -> None:
        appends = self._appends
        last_queue: str | None = None
        rows: dict[int, _Row] = {}
        for m in messages:
            q = m.queue
            if q != last_queue:
                rows = appends.get(q)  # type: ignore[assignment]
                if rows is None:
                    rows = appends[q] = {}
                last_queue = q
            rows[m.seq] = (
                q, m.seq, m.persistent, m.requeues or -m.redelivered, m.deadline, m.exchange, m.routing_key,
                m.properties, m.body,
            )

    def stage_remove(self, queue: str, seqs: list[int]) -> None:
        rows = self._appends.get(queue)
        if rows:
            pop = rows.pop
            self._removes.extend([(queue, s) for s in seqs if pop(s, None) is None])
        else:
            self._removes.extend([(queue, s) for s in seqs])

    def stage_mark_redelivered(self, queue: str, seqs: list[int]) -> None:
        rows = self._appends.get(queue)
        for s in seqs:
            row = rows.get(s) if rows else None
            if row is None:
                self._redelivers.append((queue, s))
            else:
                rows[s] = (row[0], row[1], row[2], max(row[3], 0) + 1, *row[4:])  # type: ignore[index,assignment]

    def stage_delivered(self, queue: str, seq: int) -> None:
        # Kept even when lower than the committed watermark (the upsert keeps the higher one), so that
        # has_staged() answers as the reference store does.
        self._delivered[queue] = max(seq, self._delivered.get(queue, 0))

    def stage_purge(self, queue: str) -> None:
        # Everything staged so far for this queue is void; the purge itself runs first at commit.
        self._appends.pop(queue, None)
        self._delivered.pop(queue, None)
        if self._removes:
            self._removes = [r for r in self._removes if r[0] != queue]
        if self._redelivers:
            self._redelivers = [r for r in self._redelivers if r[0] != queue]
        self._purges.add(queue)

    def has_staged(self) -> bool:
        return bool(self._appends or self._removes or self._redelivers or self._purges or self._delivered)

    def commit(self) -> None:
        """Apply the batch in one transaction; returns once the WAL is fsynced.

        If it raises, nothing of the batch is applied and the batch stays staged (retry or close).
        """
        write = self._detach()
        if write is None:
            return
        try:
            write()
        except BaseException:
            self._restage(write)
            raise

    def prepare_commit(self) -> Callable[[], None] | None:
        """Detach the staged batch; the returned function writes it (any thread, once)."""
        return self._detach()

    def _detach(self) -> _BatchWrite | None:
        if not self.has_staged():
            return None
        batch = _BatchWrite(self, self._appends, self._removes, self._redelivers, self._purges, self._delivered)
        self._appends = {}
        self._removes = []
        self._redelivers = []
        self._purges = set()
        self._delivered = {}
        return batch

    def _restage(self, batch: _BatchWrite) -> None:
        """A failed synchronous commit: put the batch back in front of whatever was staged since."""
        later = (self._appends, self._removes, self._redelivers, self._purges, self._delivered)
        self._appends, self._removes, self._redelivers, self._purges, self._delivered = (
            batch.appends, batch.removes, batch.redelivers, batch.purges, batch.delivered
        )
        for queue, rows in later[0].items():
            self._appends.setdefault(queue, {}).update(rows)
        self._removes.extend(later[1])
        self._redelivers.extend(later[2])
        self._purges |= later[3]
        for queue in later[3]:
            self._delivered.pop(queue, None)  # purged after the failed batch: its watermark goes too
        for queue, seq in later[4].items():
            self.stage_delivered(queue, seq)

    # -- reading -------------------------------------------------------------------------------------
    def read(self, queue: str, after_seq: int, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        with self._lock:  # waits for a batch being written in the broker's commit thread
            conn = self._connection()
            rows = conn.execute(_READ, (queue, after_seq, limit)).fetchall()
            found = conn.execute(_WATERMARK, (queue,)).fetchone() if rows else None
        delivered_upto = found[0] if found else 0
        return [
            StoredMessage(
                queue, seq, exchange, rk, props, body, bool(persistent), requeues != 0 or seq <= delivered_upto,
                deadline,
                requeues if requeues > 0 else 0,  # noqa: FURB136 (a max() call costs ~30% of this loop)
            )
            for seq, persistent, requeues, deadline, exchange, rk, props, body in rows
        ]

    def recover(self) -> list[QueueRecovery]:
        """Delete transient rows, then count what each queue holds (one scan of the table)."""
        conn = self._connection()
        with self._lock:
            return self._recover(conn)

    def _recover(self, conn: sqlite3.Connection) -> list[QueueRecovery]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM messages WHERE persistent = 0")
            rows = conn.execute(
                "SELECT queue, count(*), max(seq) FROM messages GROUP BY queue ORDER BY queue"
            ).fetchall()
            # The core numbers new messages from a queue's highest seq: no watermark may reach above it.
            highest = {q: max_seq for q, _count, max_seq in rows}
            for q, upto in conn.execute("SELECT queue, seq FROM delivered").fetchall():
                if q not in highest:
                    conn.execute(_PURGE_DELIVERED, (q,))
                elif upto > highest[q]:
                    conn.execute("UPDATE delivered SET seq = ? WHERE queue = ?", (highest[q], q))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return [QueueRecovery(q, count, max_seq) for q, count, max_seq in rows]

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            self.commit()
        finally:
            self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the message log is closed")
        return self._conn


class _BatchWrite:
    """One detached batch and the transaction that makes it durable."""

    __slots__ = ("appends", "delivered", "log", "purges", "redelivers", "removes")

    def __init__(
        self,
        log: SqliteMessageLog,
        appends: dict[str, dict[int, _Row]],
        removes: list[tuple[str, int]],
        redelivers: list[tuple[str, int]],
        purges: set[str],
        delivered: dict[str, int],
    ) -> None:
        self.log, self.appends, self.removes, self.redelivers, self.purges, self.delivered = (
            log, appends, removes, redelivers, purges, delivered
        )

    def __call__(self) -> None:
        log = self.log
        with log._lock:
            conn = log._connection()
            rows = [rows for rows in self.appends.values() if rows]
            conn.execute("BEGIN")
            try:
                if self.purges:
                    purged = [(q,) for q in self.purges]
                    conn.executemany(_PURGE, purged)
                    conn.executemany(_PURGE_DELIVERED, purged)
                if rows:
                    conn.executemany(_INSERT, chain.from_iterable(r.values() for r in rows))
                if self.redelivers:
                    conn.executemany(_REDELIVER, self.redelivers)
                if self.removes:
                    conn.executemany(_DELETE, self.removes)
                if self.delivered:
                    conn.executemany(_DELIVERED, self.delivered.items())
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise


class SqliteMetadataStore:
    """:class:`~mailslot.storage.api.MetadataStore` in SQLite; each call is one fsynced transaction.

    ``load()`` lists each kind in first-save order (an upsert keeps the row's place). Deleting an
    exchange or a queue leaves its bindings alone: the core decides what goes with what.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = connect(self.path)

    def save_exchange(self, exchange: ExchangeDefinition) -> None:
        self._write(
            "INSERT INTO exchanges (vhost, name, type, durable, auto_delete, internal, arguments)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (vhost, name) DO UPDATE SET type = excluded.type,"
            " durable = excluded.durable, auto_delete = excluded.auto_delete,"
            " internal = excluded.internal, arguments = excluded.arguments",
            (
                exchange.vhost, exchange.name, exchange.type, exchange.durable, exchange.auto_delete,
                exchange.internal, encode_table(exchange.arguments),
            ),
        )

    def delete_exchange(self, vhost: str, name: str) -> None:
        self._write("DELETE FROM exchanges WHERE vhost = ? AND name = ?", (vhost, name))

    def save_queue(self, queue: QueueDefinition) -> None:
        self._write(
            "INSERT INTO queues (vhost, name, durable, exclusive, auto_delete, arguments)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (vhost, name) DO UPDATE SET"
            " durable = excluded.durable, exclusive = excluded.exclusive,"
            " auto_delete = excluded.auto_delete, arguments = excluded.arguments",
            (
                queue.vhost, queue.name, queue.durable, queue.exclusive, queue.auto_delete,
                encode_table(queue.arguments),
            ),
        )

    def delete_queue(self, vhost: str, name: str) -> None:
        self._write("DELETE FROM queues WHERE vhost = ? AND name = ?", (vhost, name))

    def save_binding(self, binding: BindingDefinition, arguments: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO bindings (vhost, source, destination, destination_kind, routing_key,"
            " arguments_key, arguments) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (vhost, source,"
            " destination, destination_kind, routing_key, arguments_key) DO UPDATE SET"
            " arguments = excluded.arguments",
            (*_binding_key(binding), encode_table(arguments)),
        )

    def delete_binding(self, binding: BindingDefinition) -> None:
        self._write(
            "DELETE FROM bindings WHERE vhost = ? AND source = ? AND destination = ?"
            " AND destination_kind = ? AND routing_key = ? AND arguments_key = ?",
            _binding_key(binding),
        )

    def save_record(self, kind: str, key: str, value: Any) -> None:
        self._write(
            "INSERT INTO records (kind, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
            (kind, key, json.dumps(value)),
        )

    def delete_record(self, kind: str, key: str) -> None:
        self._write("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))

    def load_records(self, kind: str) -> dict[str, Any]:
        rows = self._connection().execute(
            "SELECT key, value FROM records WHERE kind = ? ORDER BY rowid", (kind,)
        )
        return {key: json.loads(value) for key, value in rows}

    def load(self) -> Definitions:
        conn = self._connection()
        conn.execute("BEGIN")  # one snapshot for the three tables
        try:
            exchanges = [
                ExchangeDefinition(
                    name=name, type=type_, vhost=vhost, durable=bool(durable),
                    auto_delete=bool(auto_delete), internal=bool(internal),
                    arguments=decode_table(arguments),
                )
                for vhost, name, type_, durable, auto_delete, internal, arguments in conn.execute(
                    "SELECT vhost, name, type, durable, auto_delete, internal, arguments"
                    " FROM exchanges ORDER BY rowid"
                )
            ]
            queues = [
                QueueDefinition(
                    name=name, vhost=vhost, durable=bool(durable), exclusive=bool(exclusive),
                    auto_delete=bool(auto_delete), arguments=decode_table(arguments),
                )
                for vhost, name, durable, exclusive, auto_delete, arguments in conn.execute(
                    "SELECT vhost, name, durable, exclusive, auto_delete, arguments"
                    " FROM queues ORDER BY rowid"
                )
            ]
            binding_arguments: dict[BindingDefinition, dict[str, Any]] = {}
            for vhost, source, dest, kind, rk, key, arguments in conn.execute(
                "SELECT vhost, source, destination, destination_kind, routing_key, arguments_key,"
                " arguments FROM bindings ORDER BY rowid"
            ):
                b = BindingDefinition(source, dest, kind, rk, vhost, key)
                binding_arguments[b] = decode_table(arguments)
        finally:
            conn.execute("COMMIT")
        return Definitions(exchanges, queues, list(binding_arguments), binding_arguments)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        # Autocommit: the statement is its own transaction, fsynced (synchronous=FULL) before return.
        self._connection().execute(sql, params)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the metadata store is closed")
        return self._conn


def _binding_key(b: BindingDefinition) -> tuple[str, str, str, str, str, str]:
    return (b.vhost, b.source, b.destination, b.destination_kind, b.routing_key, b.arguments_key)


def open_sqlite_store(data_dir: Path) -> tuple[SqliteMessageLog, SqliteMetadataStore]:
    """Create ``data_dir`` if needed and open both stores on ``data_dir/mailslot.db``.

    The two stores use separate connections to the one file, so a metadata write never commits (or
    waits for) the log's batch, and one ``recover()``/``load()`` at start-up sees a single database.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DB_FILENAME
    log = SqliteMessageLog(path)
    try:
        meta = SqliteMetadataStore(path)
    except BaseException:
        log.close()
        raise
    return log, meta
