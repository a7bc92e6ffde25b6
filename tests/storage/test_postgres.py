"""What only the PostgreSQL store has: migrations (against schema.sql, concurrent starts), fencing,
commits that survive a broken connection or an outage, and the differential machines of
test_property.py run against it. The contract suite (test_contract.py) runs on it too.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import settings as hsettings
from psycopg import sql

from mailslot.storage.api import StoredMessage
from mailslot.storage.postgres import (
    FencedError,
    PostgresMessageLog,
    PostgresSettings,
    StoreFormatError,
    StoreUnavailable,
    _migrate,
    open_postgres_store,
    schema_version,
)
from mailslot.storage.postgres.log import _Write

from .tcp_proxy import TcpProxy
from .test_property import SETTINGS, LogMachine, MetadataMachine


@pytest.fixture(autouse=True)
def _postgres(postgres_dsn: str) -> None:
    """Every test here needs the server (skipped, or failed under MAILSLOT_REQUIRE_SERVICES=1)."""
    PostgresLogMachine.dsn = PostgresMetadataMachine.dsn = postgres_dsn


def msg(seq: int, queue: str = "q") -> StoredMessage:
    return StoredMessage(queue, seq, "ex", f"rk{seq}", b"props", f"body {seq}".encode(), True)


def seqs(log: PostgresMessageLog, queue: str = "q") -> list[int]:
    return [m.seq for m in log.read(queue, 0, 10_000)]


@pytest.fixture
def store(postgres_settings: PostgresSettings) -> Iterator[tuple[PostgresMessageLog, Any]]:
    log, meta = open_postgres_store(postgres_settings)
    yield log, meta
    log.close()
    meta.close()


# -- migrations ---------------------------------------------------------------------------------------


def test_migrations_produce_exactly_the_reference_schema(new_postgres_schema: Any) -> None:
    """procrastinate's check: all migrations applied in order == schema.sql applied at once."""
    migrated, reference = new_postgres_schema(), new_postgres_schema()
    assert _migrate.migrate(migrated) == schema_version()
    with psycopg.connect(migrated.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(reference.schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(reference.schema)))
        conn.execute(_migrate.reference_schema())  # type: ignore[arg-type]
        got = _migrate.describe(conn, migrated.schema)
        want = _migrate.describe(conn, reference.schema)
    assert got["columns"] and got["functions"]  # the description sees the tables and fence()
    assert got == want


def test_two_nodes_migrating_at_once_apply_each_migration_once(postgres_settings: PostgresSettings) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            _migrate.migrate(postgres_settings)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(postgres_settings.dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY version").format(
                sql.Identifier(postgres_settings.schema)
            )
        ).fetchall()
    assert [r[0] for r in rows] == list(range(1, schema_version() + 1))


def test_a_schema_from_a_newer_mailslot_is_refused(postgres_settings: PostgresSettings) -> None:
    _migrate.migrate(postgres_settings)
    with psycopg.connect(postgres_settings.dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES (%s, 'future.sql')").format(
                sql.Identifier(postgres_settings.schema)
            ),
            (schema_version() + 1,),
        )
    with pytest.raises(StoreFormatError, match="this mailslot knows up to"):
        open_postgres_store(postgres_settings)


@pytest.mark.parametrize("name", ["Mailslot", "a-b", "1abc", "a;drop", "", "x" * 64])
def test_schema_names_are_plain_identifiers(name: str) -> None:
    with pytest.raises(ValueError, match="invalid PostgreSQL schema name"):
        PostgresSettings("postgresql://x@127.0.0.1/test", schema=name)


def test_an_unreachable_server_is_one_clear_error() -> None:
    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        dsn = proxy.dsn(user="postgres")
    settings = PostgresSettings(dsn.replace("postgres@", "postgres:secret@"), schema="never_created")
    with pytest.raises(StoreUnavailable, match="cannot use PostgreSQL") as info:
        open_postgres_store(settings)
    assert isinstance(info.value, OSError) and "secret" not in str(info.value)


# -- fencing ------------------------------------------------------------------------------------------


def test_a_new_start_under_the_same_node_name_fences_the_old_process(store: Any) -> None:
    old, _ = store
    old.stage_append([msg(1)])
    old.commit()
    new = PostgresMessageLog(old.settings)  # the same name started again (the old one was paused)
    try:
        old.stage_append([msg(2)])
        with pytest.raises(FencedError, match="superseded"):
            old.commit()
        old.stage_append([msg(4)])
        with pytest.raises(FencedError):  # and every later batch, at once
            old.commit()
        new.stage_append([msg(3)])
        new.commit()
        assert seqs(new) == [1, 3]
    finally:
        new.close()


def test_a_node_that_claimed_the_logs_fences_their_former_owner(store: Any) -> None:
    old, _ = store
    old.stage_append([msg(1, "a"), msg(1, "b")])
    old.commit()
    other = PostgresMessageLog(PostgresSettings(old.settings.dsn, old.settings.schema, node_name="other"))
    try:
        other.recover()  # single-node start: takes every log
        old.stage_append([msg(2, "b")])
        with pytest.raises(FencedError, match="no longer owns"):
            old.commit()
        assert seqs(other, "b") == [1]
    finally:
        other.close()


def test_a_takeover_waits_for_a_batch_in_flight(store: Any, postgres_settings: PostgresSettings) -> None:
    """fence() holds the log rows FOR SHARE: the takeover's UPDATE waits for COMMIT, then sees the rows."""
    log, _ = store
    log.stage_append([msg(1)])
    log.commit()
    with psycopg.connect(postgres_settings.dsn, autocommit=True) as holder, \
            psycopg.connect(postgres_settings.dsn, autocommit=True) as taker:
        for conn in (holder, taker):
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(postgres_settings.schema)))
        holder.execute("BEGIN")
        row = holder.execute("SELECT id, epoch FROM logs").fetchone()
        assert row is not None
        holder.execute("SELECT fence(%s, %s, 999, %s, %s)", (log.node, log.epoch, [row[0]], [row[1]]))
        taken = threading.Event()

        def takeover() -> None:
            taker.execute("UPDATE logs SET owner = 'thief', epoch = epoch + 1")
            taken.set()

        thread = threading.Thread(target=takeover)
        thread.start()
        assert not taken.wait(0.5)  # blocked behind the batch's FOR SHARE
        holder.execute("COMMIT")
        assert taken.wait(10)
        thread.join()
    log.stage_append([msg(2)])
    with pytest.raises(FencedError):
        log.commit()


def test_the_store_vacuums_its_message_table_itself(
    postgres_settings: PostgresSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Autovacuum may be off (it is on the shared test server): every VACUUM_EVERY_ROWS deletes, the
    store runs VACUUM on a connection of its own."""
    monkeypatch.setattr("mailslot.storage.postgres.log.VACUUM_EVERY_ROWS", 50)
    log, meta = open_postgres_store(postgres_settings)

    def vacuums() -> int:
        with psycopg.connect(postgres_settings.dsn) as conn:
            row = conn.execute(
                "SELECT vacuum_count FROM pg_stat_user_tables WHERE schemaname = %s AND relname = 'messages'",
                (postgres_settings.schema,),
            ).fetchone()
        return int(row[0]) if row else 0

    try:
        log.stage_append([msg(s) for s in range(1, 41)])
        log.commit()
        log.stage_remove("q", list(range(1, 41)))
        log.commit()
        time.sleep(0.2)
        assert vacuums() == 0  # 40 deleted: below the threshold
        log.stage_append([msg(s) for s in range(41, 61)])
        log.commit()
        log.stage_remove("q", list(range(41, 61)))
        log.commit()
        deadline = time.monotonic() + 10
        while vacuums() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vacuums() >= 1
    finally:
        log.close()
        meta.close()


# -- broken connections and outages -------------------------------------------------------------------


def _lose_the_first_commit_reply(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first batch transaction commits, then its connection 'breaks'; returns the call count."""
    real = PostgresMessageLog._transaction
    calls: list[int] = []

    def commit_then_break(self: PostgresMessageLog, *args: Any) -> None:
        calls.append(1)
        real(self, *args)
        if len(calls) == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(PostgresMessageLog, "_transaction", commit_then_break)
    return calls


def test_a_commit_whose_reply_was_lost_is_not_written_twice(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """COMMIT landed but the connection broke before its reply: the retry reads the node's
    committed_batch and does not write the batch again (the COPY would hit the primary key)."""
    log, _ = store
    calls = _lose_the_first_commit_reply(monkeypatch)
    log.stage_append([msg(1), msg(2)])
    log.commit()
    assert len(calls) == 1  # resolved by reading committed_batch, no second transaction
    log.stage_append([msg(3)])
    log.commit()
    assert seqs(log) == [1, 2, 3]


def test_a_lost_commit_reply_at_the_deadline_is_resolved_by_the_next_batch(
    postgres_settings: PostgresSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, when the write gives up at once (no time left to retry): its batch is kept, and the
    next write learns from the node row that it landed and does not write it again."""
    log, meta = open_postgres_store(postgres_settings, commit_timeout=0.0)
    try:
        _lose_the_first_commit_reply(monkeypatch)
        log.stage_append([msg(1), msg(2)])
        with pytest.raises(StoreUnavailable):
            log.commit()
        assert log.has_staged()  # kept: its outcome is unknown
        log.stage_append([msg(3)])
        log.stage_remove("q", [1])
        log.commit()
        assert seqs(log) == [2, 3]
    finally:
        log.close()
        meta.close()


def test_a_batch_the_server_refuses_is_dropped_not_retried_forever(store: Any) -> None:
    log, _ = store
    log.stage_append([msg(1)])
    log.commit()
    log.stage_append([msg(1)])  # the same (queue, seq) again: breaks the contract, the server refuses it
    with pytest.raises(psycopg.errors.UniqueViolation):
        log.commit()
    assert not log.has_staged()
    log.stage_append([msg(2)])
    log.commit()
    assert seqs(log) == [1, 2]


def test_a_terminated_backend_is_replaced_and_the_batch_written(store: Any) -> None:
    log, _ = store
    log.stage_append([msg(1)])
    log.commit()
    assert seqs(log) == [1]
    with psycopg.connect(log.settings.dsn, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"mailslot {log.node}%",),
        ).fetchone()
    assert killed is not None and killed[0] == 2  # writer and reader
    log.stage_append([msg(2)])
    log.stage_remove("q", [1])
    log.commit()
    assert seqs(log) == [2]  # the reader reconnected too (on the second try: the first finds it dead)


def test_an_outage_fails_the_batch_after_the_timeout_and_keeps_it(postgres_settings: PostgresSettings) -> None:
    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        settings = PostgresSettings(proxy.dsn(), postgres_settings.schema, node_name="outage")
        log, meta = open_postgres_store(settings, commit_timeout=0.5)
        try:
            log.stage_append([msg(1), msg(2)])
            log.commit()
            proxy.stop()
            log.stage_append([msg(3)])
            log.stage_remove("q", [1])
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                log.commit()
            assert time.monotonic() - started < 5
            assert log.has_staged()  # the failed batch is kept for the next write
            log.stage_mark_redelivered("q", [3])
            proxy.start()
            log.commit()
            assert [(m.seq, m.requeues) for m in log.read("q", 0, 10)] == [(2, 0), (3, 1)]
        finally:
            log.close()
            meta.close()


def test_a_read_waits_for_the_batch_in_flight_that_holds_its_rows(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    log, _ = store
    log.stage_append([msg(1)])
    write = log.prepare_commit()
    assert isinstance(write, _Write)
    writer = threading.Timer(0.3, write)
    writer.start()
    assert seqs(log) == [1]  # waited for the commit thread instead of reading too early
    writer.join()


# -- the differential machines of test_property.py, on PostgreSQL -------------------------------------

POSTGRES_SETTINGS = hsettings(SETTINGS, max_examples=25)


class _OnPostgres:
    """Mixed into a machine of test_property.py: its store is a fresh schema, dropped at teardown."""

    dsn = ""  # set by the _postgres fixture

    def open_store(self, _dir: Path) -> Any:
        if not hasattr(self, "settings"):
            self.settings = PostgresSettings(self.dsn, f"mailslot_test_{uuid.uuid4().hex[:16]}", node_name="prop")
        return open_postgres_store(self.settings)

    def teardown(self) -> None:
        super().teardown()  # type: ignore[misc]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.settings.schema)))


class PostgresLogMachine(_OnPostgres, LogMachine):
    pass


class PostgresMetadataMachine(_OnPostgres, MetadataMachine):
    pass


PostgresLogMachine.TestCase.settings = POSTGRES_SETTINGS
TestPostgresLogAgainstReference = PostgresLogMachine.TestCase
PostgresMetadataMachine.TestCase.settings = POSTGRES_SETTINGS
TestPostgresMetadataAgainstReference = PostgresMetadataMachine.TestCase
