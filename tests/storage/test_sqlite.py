"""What only the SQLite store can promise: durability across processes, crash safety, file format."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mailslot.storage.api import StoredMessage
from mailslot.storage.sqlite import (
    DB_FILENAME,
    SqliteMessageLog,
    SqliteMetadataStore,
    StoreFormatError,
    open_sqlite_store,
    schema_version,
)
from mailslot.storage.sqlite._schema import migrations


def msg(seq: int, queue: str = "q") -> StoredMessage:
    return StoredMessage(queue, seq, "ex", "rk", b"props", b"x" * 256, True)


def test_open_creates_the_directory_and_a_wal_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    log, meta = open_sqlite_store(data_dir)
    log.close()
    meta.close()
    with sqlite3.connect(data_dir / DB_FILENAME) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"messages", "exchanges", "queues", "bindings"} <= tables


def test_migrations_are_numbered_without_gaps() -> None:
    numbers = [n for n, _ in migrations()]
    assert numbers == list(range(1, len(numbers) + 1)) and schema_version() == len(numbers)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    SqliteMessageLog(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {schema_version() + 1}")
    with pytest.raises(StoreFormatError):
        SqliteMessageLog(path)


def test_a_version_4_database_reads_its_messages_as_amqp091(tmp_path: Path) -> None:
    """Before migration 5 no row named its codec: every one of them came from AMQP 0-9-1."""
    path = tmp_path / DB_FILENAME
    with sqlite3.connect(path) as conn:
        for _, script in migrations()[:4]:
            conn.executescript(script)
        conn.execute("PRAGMA user_version = 4")
        conn.execute("INSERT INTO messages (queue, seq, persistent, redelivered, deadline, exchange, routing_key,"
                     " properties, body) VALUES ('q', 1, 1, 0, 0, 'ex', 'rk', x'100002', x'6869')")
    log = SqliteMessageLog(path)
    assert [(m.seq, m.properties, m.body, m.codec) for m in log.read("q", 0, 10)] == [
        (1, b"\x10\x00\x02", b"hi", "amqp091")]
    log.stage_append([StoredMessage("q", 2, "", "t", b"{}", b"x", True, codec="mqtt5")])
    log.commit()
    assert [m.codec for m in log.read("q", 0, 10)] == ["amqp091", "mqtt5"]
    log.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version() >= 5


def test_a_version_1_database_is_migrated_keeping_its_messages(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    with sqlite3.connect(path) as conn:
        conn.executescript(migrations()[0][1])
        conn.execute("PRAGMA user_version = 1")
        conn.executemany(
            "INSERT INTO messages (queue, seq, persistent, redelivered, exchange, routing_key, properties, body)"
            " VALUES ('q', ?, 1, ?, 'ex', 'rk', x'', x'00')",
            [(1, 0), (2, 1)],
        )
    log = SqliteMessageLog(path)
    # Version 1 kept a flag only: a redelivered row reads as requeued once; no row has a deadline.
    assert [(m.seq, m.redelivered, m.requeues, m.deadline) for m in log.read("q", 0, 10)] == [
        (1, False, 0, 0), (2, True, 1, 0)
    ]
    log.stage_mark_redelivered("q", [2])
    log.commit()
    assert [m.requeues for m in log.read("q", 0, 10)] == [0, 2]
    log.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version() >= 2


def test_read_is_an_index_range_scan(tmp_path: Path) -> None:
    SqliteMessageLog(tmp_path / DB_FILENAME).close()
    with sqlite3.connect(tmp_path / DB_FILENAME) as conn:
        plan = " ".join(
            str(r[-1])
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT body FROM messages WHERE queue = ? AND seq > ?"
                " ORDER BY seq LIMIT ?", ("q", 0, 10)
            )
        )
    assert "SEARCH messages USING PRIMARY KEY (queue=? AND seq>?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # no sort step: the key order is the seq order


def test_a_fresh_store_object_sees_committed_data(tmp_path: Path) -> None:
    log, meta = open_sqlite_store(tmp_path)
    log.stage_append([msg(1), msg(2)])
    log.commit()
    other = SqliteMessageLog(tmp_path / DB_FILENAME)  # e.g. a second process; the first is still open
    assert [m.seq for m in other.read("q", 0, 10)] == [1, 2]
    other.close()
    log.close()
    meta.close()


def test_metadata_and_log_share_one_file_without_interfering(tmp_path: Path) -> None:
    from mailslot.storage.api import QueueDefinition

    log, meta = open_sqlite_store(tmp_path)
    log.stage_append([msg(1)])
    meta.save_queue(QueueDefinition("q"))  # must not commit the log's staged batch
    assert log.read("q", 0, 10) == []
    log.commit()
    log.close()
    meta.close()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("mailslot")] == [DB_FILENAME]
    meta2 = SqliteMetadataStore(tmp_path / DB_FILENAME)
    assert meta2.load().queues == [QueueDefinition("q")]
    meta2.close()


def test_a_failed_commit_applies_nothing_and_keeps_the_batch(tmp_path: Path) -> None:
    log, meta = open_sqlite_store(tmp_path)
    try:
        log.stage_append([msg(1)])
        log.commit()
        bad = StoredMessage("q", 4, "ex", "rk", b"", object(), True)  # type: ignore[arg-type]
        log.stage_append([msg(2), msg(3), bad])
        log.stage_remove("q", [1])
        with pytest.raises(sqlite3.Error):
            log.commit()
        assert [m.seq for m in log.read("q", 0, 10)] == [1]  # all or nothing
        assert log.has_staged()
        log.stage_purge("q")  # the caller's way out: drop the batch's messages
        log.commit()
        assert log.read("q", 0, 10) == [] and not log.has_staged()
    finally:
        log.close()
        meta.close()


# -- crash safety: SIGKILL a writer mid-stream --------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mailslot.storage.api import StoredMessage
    from mailslot.storage.sqlite import open_sqlite_store

    data_dir, batch, stage_only = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    log, meta = open_sqlite_store(data_dir)
    seq = 0
    props = b"\\x90\\x00\\x0atext/plain\\x02"
    while True:
        msgs = []
        for _ in range(batch):
            seq += 1
            msgs.append(StoredMessage("q", seq, "ex", "rk", props, seq.to_bytes(8, "big") * 32, True))
        log.stage_append(msgs)
        if seq > batch:  # ack the batch before last, as a consumer keeping up would
            log.stage_remove("q", list(range(seq - 2 * batch + 1, seq - 2 * batch + 1 + batch // 2)))
        if stage_only:
            print("staged", seq, flush=True)
            import time
            time.sleep(60)
        log.commit()
        print("committed", seq, flush=True)
    """
)


def _spawn_writer(data_dir: Path, batch: int, stage_only: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data_dir), str(batch), "1" if stage_only else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _expected_seqs(last_committed: int, batch: int) -> list[int]:
    """What the writer's log holds after its commit of ``last_committed``."""
    acked: set[int] = set()
    seq = 0
    while seq < last_committed:
        seq += batch
        if seq > batch:
            acked.update(range(seq - 2 * batch + 1, seq - 2 * batch + 1 + batch // 2))
    return [s for s in range(1, last_committed + 1) if s not in acked]


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [1, 37, 150])
def test_sigkill_mid_stream_loses_no_committed_message(tmp_path: Path, kill_after: int) -> None:
    batch = 50
    proc = _spawn_writer(tmp_path, batch, stage_only=False)
    reported = 0
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while reported < kill_after * batch and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer exited early: {proc.stderr.read() if proc.stderr else ''}")
            word, n = line.split()
            assert word == "committed"
            reported = int(n)
        os.kill(proc.pid, signal.SIGKILL)
        # Lines already in the pipe were printed after their commit returned: they count too.
        rest = proc.stdout.read()
        for line in rest.splitlines():
            if line.startswith("committed "):
                reported = int(line.split()[1])
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert reported >= kill_after * batch

    with sqlite3.connect(tmp_path / DB_FILENAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    log, meta = open_sqlite_store(tmp_path)
    try:
        recovery = log.recover()
        got = [m.seq for m in log.read("q", 0, 10**9)]
        # Every reported commit is there; at most one more (committed, killed before printing).
        last = max(got)
        assert last in (reported, reported + batch)
        assert got == _expected_seqs(last, batch)  # whole batches only: commits are atomic
        assert [(r.queue, r.count, r.max_seq) for r in recovery] == [("q", len(got), last)]
        for m in log.read("q", 0, 10**9):
            assert m.body == m.seq.to_bytes(8, "big") * 32
    finally:
        log.close()
        meta.close()


@pytest.mark.slow
def test_sigkill_before_commit_loses_only_the_staged_batch(tmp_path: Path) -> None:
    log, meta = open_sqlite_store(tmp_path)
    log.stage_append([msg(s, "earlier") for s in (1, 2)])
    log.close()
    meta.close()
    proc = _spawn_writer(tmp_path, 10, stage_only=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["staged", "10"]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    log, meta = open_sqlite_store(tmp_path)
    try:
        assert log.read("q", 0, 100) == []
        assert [m.seq for m in log.read("earlier", 0, 100)] == [1, 2]
    finally:
        log.close()
        meta.close()
