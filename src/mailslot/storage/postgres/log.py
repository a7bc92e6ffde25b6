"""The message log in PostgreSQL (docs/postgres.md, docs/decisions/0003-postgres-store.md).

Rules of this module:

* Staging is plain Python, folded as in the SQLite store: an append removed in the same batch is
  dropped, a flag on a staged append edits its row, a purge voids the queue's staged work. Nothing
  touches the network until a batch is written.
* A batch is one transaction: ``fence()`` (this node still owns every log it writes, at its epoch),
  purges, ONE binary COPY of the new rows, the requeue counts, ONE delete per log, COMMIT. The
  statements around the COPY go in pipeline mode, so a batch costs three round trips whatever its
  size. COPY measured 2-3x the rows/s of executemany in a pipeline and 1.1-1.2x of an unnest()
  insert (benchmarks/postgres_insert.py).
* :meth:`PostgresMessageLog.prepare_commit` detaches the batch; the broker writes it in its commit
  thread (core/broker.py, transport/amqp_listener.py) while the event loop stages the next one, and
  confirms only after COMMIT returned. psycopg releases the GIL while it waits for the server.
* A write that fails because the connection broke is retried on a new connection until
  ``commit_timeout``; if the break hid whether COMMIT happened, the node row's ``committed_batch``
  tells (each batch writes its number there), and a write of the fence alone waits for the synchronous
  standby (if any) before the batch is confirmed. A batch that still failed raises, so its waiters are
  nacked, and is kept: the next batch writes it first (or drops it, if the node row shows that its
  last attempt committed after all), so the log never misses what the core did. A batch the server
  refuses (fenced, or a bug) is dropped instead: kept, it would fail every batch after it.
* Reads and recovery use a second connection; a read waits for a batch in flight that holds rows of
  its log (the core reads back only rows it has committed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, LiteralString

import psycopg

from mailslot.storage.api import QueueRecovery, StoredMessage

from ._connect import Link, PostgresSettings, StoreUnavailable
from ._queries import Q

log = logging.getLogger("mailslot.storage.postgres")

# How long one batch write keeps retrying on new connections before it gives up (its waiters are
# nacked, the batch stays for the next write): a PostgreSQL restart or a failover to a standby
# usually completes within this, so publishers see a delay rather than nacks.
DEFAULT_COMMIT_TIMEOUT = 10.0
# Pause between two attempts while the server is down (doubling from the first up to the last).
RETRY_PAUSE_FIRST, RETRY_PAUSE_MAX = 0.05, 1.0
# Longest a read on the event loop waits for a batch in flight that holds rows of its log.
READ_WAIT = 5.0
# The store vacuums its own tables once this many message rows were deleted since its last VACUUM,
# whatever the server's autovacuum does (it may be off, as on the test server here, or too slow for a
# churn table: the 10-minute soak without it grew the table to 2.7 GB of dead rows, docs/postgres.md).
# At 20k deletes/s that is every 10 s; a VACUUM of ~80 MB of dead heap takes a fraction of a second and
# takes no lock that inserts or deletes wait for.
VACUUM_EVERY_ROWS = 200_000
# SQLSTATEs that fence() raises (migrations/0001_initial.sql) and fence_leased() (0002_cluster.sql).
FENCED_STATES = frozenset({"MSF01", "MSF02", "MSF03"})

# A staged row: the COPY columns after log_id; exchange and routing key are encoded at write time.
_Row = tuple[int, bool, int, int, str, str, bytes, bytes, str]
_COPY_TYPES = ["int8", "int8", "bool", "int4", "int8", "bytea", "bytea", "bytea", "bytea", "text"]


class FencedError(RuntimeError):
    """Another process took over this node name or logs it writes: this one must stop writing."""


class _Batch:
    """Staged work detached for one write, applied in this order: purges, appends, requeue counts,
    delivery watermarks, removes."""

    __slots__ = ("appends", "delivered", "purges", "redelivers", "removes")

    def __init__(self) -> None:
        self.appends: dict[str, dict[int, _Row]] = {}  # key -> seq -> row
        self.removes: dict[str, list[int]] = {}
        self.redelivers: dict[str, list[int]] = {}
        self.delivered: dict[str, int] = {}  # key -> the highest watermark staged
        self.purges: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.appends or self.removes or self.redelivers or self.purges or self.delivered)

    def keys(self) -> set[str]:
        return {*self.appends, *self.removes, *self.redelivers, *self.purges, *self.delivered}


class PostgresMessageLog:
    """:class:`~mailslot.storage.api.MessageLog` in the ``messages`` table of an install's schema."""

    def __init__(self, settings: PostgresSettings, commit_timeout: float = DEFAULT_COMMIT_TIMEOUT) -> None:
        self.settings = settings
        self.node = settings.node_name
        self.commit_timeout = commit_timeout
        self._writer = Link(settings, "writer")
        self._reader = Link(settings, "reader")
        self._staged = _Batch()
        self._failed: list[_Batch] = []  # written before anything newer (see the module's rules)
        self._failed_lock = threading.Lock()
        self._in_flight: _Write | None = None
        self._unresolved: int | None = None  # a batch whose COMMIT may or may not have landed
        self._ids: dict[str, tuple[int, int]] = {}  # key -> (log id, epoch we own it at)
        self._fenced: str | None = None
        self._vacuum = _Vacuum(settings)
        with self._writer.lock:
            row = self._writer.get(backoff=False).execute(Q["start_node"], {"node": self.node}).fetchone()
        assert row is not None
        self.epoch, self._batch_no = int(row[0]), int(row[1])

    # -- staging -------------------------------------------------------------------------------------
    def stage_append(self, messages: list[StoredMessage]) -> None:
        appends = self._staged.appends
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
                m.seq, m.persistent, m.requeues or -m.redelivered, m.deadline, m.exchange, m.routing_key,
                m.properties, m.body, m.codec,
            )

    def stage_remove(self, queue: str, seqs: list[int]) -> None:
        if not seqs:
            return
        staged = self._staged
        rows = staged.appends.get(queue)
        if rows:
            pop = rows.pop
            seqs = [s for s in seqs if pop(s, None) is None]
            if not seqs:
                return
        removes = staged.removes.get(queue)
        if removes is None:
            staged.removes[queue] = list(seqs)
        else:
            removes.extend(seqs)

    def stage_mark_redelivered(self, queue: str, seqs: list[int]) -> None:
        staged = self._staged
        rows = staged.appends.get(queue)
        for s in seqs:
            row = rows.get(s) if rows else None
            if row is None:
                staged.redelivers.setdefault(queue, []).append(s)
            else:
                rows[s] = (row[0], row[1], max(row[2], 0) + 1, *row[3:])  # type: ignore[index,assignment]

    def stage_delivered(self, queue: str, seq: int) -> None:
        delivered = self._staged.delivered
        if seq > delivered.get(queue, seq - 1):
            delivered[queue] = seq

    def stage_purge(self, queue: str) -> None:
        staged = self._staged
        staged.appends.pop(queue, None)
        staged.removes.pop(queue, None)
        staged.redelivers.pop(queue, None)
        staged.delivered.pop(queue, None)
        staged.purges.add(queue)

    def has_staged(self) -> bool:
        return bool(self._staged) or bool(self._failed)

    # -- writing -------------------------------------------------------------------------------------
    def prepare_commit(self) -> Callable[[], None] | None:
        """Detach the staged batch; the returned function writes it (any thread, once)."""
        staged, self._staged = self._staged, _Batch()
        with self._failed_lock:
            failed, self._failed = self._failed, []
        parts = [*failed, staged] if staged else failed
        if not parts:
            return None
        write = _Write(self, parts, len(failed))
        self._in_flight = write
        return write

    def commit(self) -> None:
        """Write everything staged in one transaction; returns once PostgreSQL committed it.

        If it raises, the batch stays staged (written first by the next commit)."""
        in_flight = self._in_flight
        if in_flight is not None:  # batches land in the order they were cut: this one after that one
            in_flight.done.wait()
        write = self.prepare_commit()
        if write is not None:
            write()

    def _write(self, write: _Write) -> None:
        """Write ``write.parts`` as one transaction, retrying on new connections until the deadline.

        Whenever an attempt fails after it may have sent COMMIT, ``_unresolved`` keeps its batch number
        until a later attempt (of this write or of the next one) reads the node row and learns the
        outcome: then the parts that committed are dropped instead of being written twice."""
        if self._fenced is not None:
            raise FencedError(self._fenced)
        self._batch_no += 1
        batch_no = self._batch_no
        deadline = time.monotonic() + self.commit_timeout
        pause = RETRY_PAUSE_FIRST
        link = self._writer
        with link.lock:
            while True:
                try:
                    conn = link.get(backoff=False)
                    unresolved = self._unresolved
                    if unresolved is not None:
                        if self._committed(conn, unresolved):  # its COMMIT went through before the break
                            write.drop_landed(everything=unresolved == batch_no)
                            if not write.parts:
                                self._replicated(conn, batch_no)  # a break here: all of this once more
                                self._unresolved = None
                                return
                        self._unresolved = None
                    self._unresolved = batch_no
                    self._transaction(conn, write.parts, batch_no)
                    self._unresolved = None
                    self._vacuum.deleted(sum(len(seqs) for part in write.parts for seqs in part.removes.values()))
                    return
                except (psycopg.OperationalError, StoreUnavailable) as exc:
                    link.broken()
                    if time.monotonic() + pause > deadline:
                        raise StoreUnavailable(f"PostgreSQL commit failed: {exc}") from exc
                    log.warning("PostgreSQL commit failed (%s); retrying", " ".join(str(exc).split()))
                    time.sleep(pause)
                    pause = min(pause * 2, RETRY_PAUSE_MAX)
                except psycopg.Error as exc:
                    self._unresolved = None  # the server refused it and the transaction rolled back
                    if exc.sqlstate in FENCED_STATES:
                        raise self._fenced_by(exc) from None
                    raise

    def _fenced_by(self, exc: psycopg.Error) -> FencedError:
        """The server refused a batch by fencing: from now on this process writes nothing (a newer one
        took its node name or its logs). The cluster's log (mailslot.cluster) stops only the queues
        whose lease it lost."""
        self._fenced = exc.diag.message_primary or str(exc)
        log.error("this node is fenced and stops writing: %s", self._fenced)
        return FencedError(self._fenced)

    def _replicated(self, conn: psycopg.Connection[Any], batch_no: int) -> None:
        """A commit of our own after one that landed while its connection broke: that one may have been
        cut out of its wait for a synchronous standby (PostgreSQL ends it when the connection goes, and
        keeps the commit on the primary alone). This one returns only once the standby has the WAL up to
        it, hence that commit too; then, and only then, the batch may be confirmed. A write of nothing
        but the fence (it records the batch number on the node row)."""
        conn.execute(*self._fence(set(), [], batch_no))

    def _committed(self, conn: psycopg.Connection[Any], batch_no: int) -> bool:
        """After a broken attempt: did that attempt's COMMIT land? (fence() recorded its number)."""
        row = conn.execute(Q["node_state"], {"node": self.node}).fetchone()
        if row is None or int(row[0]) != self.epoch:
            return False  # fence() will raise the reason
        return int(row[1]) >= batch_no

    def _transaction(self, conn: psycopg.Connection[Any], parts: list[_Batch], batch_no: int) -> None:
        keys: set[str] = set()
        for part in parts:
            keys |= part.keys()
        ids = self._claim(conn, keys)
        owned = [ids[k] for k in keys]
        try:
            cur = conn.cursor()
            for part in parts:
                with conn.pipeline():  # one round trip
                    if part is parts[0]:
                        cur.execute("BEGIN")
                        cur.execute(*self._fence(keys, owned, batch_no))
                    if part.purges:
                        purged = {"log_ids": [ids[k][0] for k in part.purges]}
                        cur.execute(Q["purge_logs"], purged)
                        cur.execute(Q["forget_delivered"], purged)
                if part.appends:  # COPY cannot run in pipeline mode: its own round trip
                    _copy_rows(cur, part.appends, ids)
                with conn.pipeline():  # one round trip
                    for key, seqs in part.redelivers.items():
                        counts = Counter(seqs)
                        cur.execute(Q["mark_redelivered"], {
                            "log_id": ids[key][0], "seqs": list(counts), "counts": list(counts.values())
                        })
                    if part.delivered:
                        cur.execute(Q["mark_delivered"], {
                            "log_ids": [ids[k][0] for k in part.delivered], "seqs": list(part.delivered.values())
                        })
                    for key, seqs in part.removes.items():
                        cur.execute(Q["remove_messages"], {"log_id": ids[key][0], "seqs": _int_array(seqs)})
                    if part is parts[-1]:
                        cur.execute("COMMIT")
        except psycopg.OperationalError:
            raise
        except BaseException:
            _rollback(conn)
            raise

    def _fence(
        self, keys: set[str], owned: list[tuple[int, int]], batch_no: int
    ) -> tuple[LiteralString, dict[str, Any]]:
        """The batch's first statement: fence() checks this node's epoch and its claim on every log
        the batch writes (``owned``: their (id, epoch)); mailslot.cluster checks leases instead."""
        return Q["fence"], {
            "node": self.node, "node_epoch": self.epoch, "batch": batch_no,
            "log_ids": [i for i, _ in owned], "log_epochs": [e for _, e in owned],
        }

    def _claim(self, conn: psycopg.Connection[Any], keys: Iterable[str]) -> dict[str, tuple[int, int]]:
        """Ids of ``keys``, claiming (creating if need be) the ones this process has not written yet."""
        ids = self._ids
        new = [k for k in keys if k not in ids]
        if new:
            rows = conn.execute(Q["claim_logs"], {"node": self.node, "keys": [_key(k) for k in new]}).fetchall()
            for log_id, key, epoch in rows:
                ids[bytes(key).decode()] = (int(log_id), int(epoch))
        return ids

    # -- reading -------------------------------------------------------------------------------------
    def read(self, queue: str, after_seq: int, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        write = self._in_flight
        if write is not None and write.touches(queue) and not write.done.wait(READ_WAIT):
            raise StoreUnavailable("PostgreSQL has not committed the batch holding this queue's messages yet")
        entry = self._ids.get(queue)

        def select(conn: psycopg.Connection[Any]) -> list[Any]:
            if entry is None:
                row = conn.execute(Q["find_log"], {"key": _key(queue)}).fetchone()
                if row is None:
                    return []
                log_id = int(row[0])
            else:
                log_id = entry[0]
            return conn.cursor(binary=True).execute(
                Q["read_messages"], {"log_id": log_id, "after_seq": after_seq, "limit": limit}
            ).fetchall()

        rows = self._reader.run(select)
        return [
            StoredMessage(
                queue, seq, exchange.decode(), rk.decode(), props, body, persistent, redelivered, deadline,
                requeues if requeues > 0 else 0,  # noqa: FURB136 (as in the SQLite store: max() is slower)
                codec,
            )
            for seq, persistent, requeues, deadline, exchange, rk, props, body, codec, redelivered in rows
        ]

    def recover(self) -> list[QueueRecovery]:
        """Drop transient rows and empty logs, claim every log for this node, count what is left."""
        self.commit()
        with self._writer.lock:
            conn = self._writer.get(backoff=False)
            with conn.transaction():
                conn.execute(Q["drop_transient"])
                conn.execute(Q["drop_empty_logs"])
                conn.execute(Q["clamp_delivered"])
                claimed = conn.execute(Q["claim_all_logs"], {"node": self.node}).fetchall()
                counts = conn.execute(Q["count_messages"]).fetchall()
            self._ids = {bytes(key).decode(): (int(i), int(e)) for i, key, e in claimed}
        return [QueueRecovery(bytes(key).decode(), int(n), int(top)) for key, n, top in counts]

    def close(self) -> None:
        """Commit what is staged (within the commit timeout) and close the connections."""
        try:
            self.commit()
        except (StoreUnavailable, FencedError) as exc:
            log.error("closing the PostgreSQL log with writes not committed (never confirmed): %s", exc)
        finally:
            self._vacuum.close()
            self._writer.close()
            self._reader.close()


class _Vacuum:
    """VACUUM of the store's churn tables on a connection and a thread of its own, every
    ``VACUUM_EVERY_ROWS`` deleted rows (one at a time; a failure is logged and retried next time)."""

    def __init__(self, settings: PostgresSettings) -> None:
        self._link = Link(settings, "vacuum")
        self._dead = 0
        self._running: threading.Thread | None = None

    def deleted(self, rows: int) -> None:
        self._dead += rows
        if self._dead >= VACUUM_EVERY_ROWS and (self._running is None or not self._running.is_alive()):
            self._dead = 0
            self._running = threading.Thread(target=self._run, name="mailslot-postgres-vacuum", daemon=True)
            self._running.start()

    def _run(self) -> None:
        try:
            self._link.run(lambda conn: conn.execute("VACUUM messages, logs, nodes"))
        except Exception as exc:  # noqa: BLE001 - housekeeping: the next threshold tries again
            log.warning("VACUUM of the message table failed: %s", exc)

    def close(self) -> None:
        if self._running is not None:
            self._running.join()
        self._link.close()


class _Write:
    """One detached batch write: the broker's commit thread calls it once. ``parts`` starts with the
    ``retried`` parts of the write before it that failed."""

    __slots__ = ("done", "log", "parts", "retried")

    def __init__(self, log: PostgresMessageLog, parts: list[_Batch], retried: int) -> None:
        self.log, self.parts, self.retried = log, parts, retried
        self.done = threading.Event()

    def drop_landed(self, everything: bool) -> None:
        """A former attempt committed: all of this write (``everything``) or the retried parts."""
        self.parts = [] if everything else self.parts[self.retried:]
        self.retried = 0

    def touches(self, key: str) -> bool:
        return any(key in part.appends or key in part.purges or key in part.delivered for part in self.parts)

    def __call__(self) -> None:
        owner = self.log
        try:
            owner._write(self)
        except StoreUnavailable:  # the server was out of reach: keep the batch for the next write
            with owner._failed_lock:
                owner._failed[:0] = self.parts  # before whatever failed since: the order of the writes
            raise
        except BaseException:
            # Fenced, or refused by the server (our bug, not an outage): keeping it would make every
            # later batch fail the same way; its waiters are nacked.
            log.error("PostgreSQL refused a batch; it is dropped and its publishers nacked")
            raise
        finally:
            self.done.set()
            if owner._in_flight is self:
                owner._in_flight = None


def _copy_rows(cur: psycopg.Cursor[Any], appends: dict[str, dict[int, _Row]], ids: dict[str, tuple[int, int]]) -> None:
    with cur.copy(Q["copy_messages"]) as copy:
        copy.set_types(_COPY_TYPES)
        write_row = copy.write_row
        for key, rows in appends.items():
            log_id = ids[key][0]
            for seq, persistent, requeues, deadline, exchange, rk, props, body, codec in rows.values():
                write_row(
                    (log_id, seq, persistent, requeues, deadline, exchange.encode(), rk.encode(), props, body, codec)
                )


def _int_array(values: list[int]) -> str:
    # A bigint[] literal: one C-speed join instead of psycopg dumping each element in Python.
    return "{" + ",".join(map(str, values)) + "}"


def _key(key: str) -> bytes:
    return key.encode()


def _rollback(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        pass
