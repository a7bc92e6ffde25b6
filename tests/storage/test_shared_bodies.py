"""A message routed to several queues is stored once (segment log and SQLite), and a batch with a large
body is written off the event loop (the segment log's prepare_commit). The contract suite checks what
every store returns; this checks what the embedded stores write."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from mailslot.storage.api import StoredMessage
from mailslot.storage.segments import SegmentMessageLog
from mailslot.storage.segments.log import THREADED_COMMIT_BYTES
from mailslot.storage.sqlite import DB_FILENAME, SqliteMessageLog

MB = 1_000_000


def fanout(body: bytes, queues: list[str], seq: int = 1) -> list[StoredMessage]:
    return [StoredMessage(q, seq, "amq.fanout", "", b"", body, True) for q in queues]


QUEUES = [f"q{i}" for i in range(5)]


def test_segment_log_writes_a_20_mb_body_for_five_queues_once(tmp_path: Path) -> None:
    log = SegmentMessageLog(tmp_path)
    body = b"\xab" * (20 * MB)
    log.stage_append(fanout(body, QUEUES))
    before = log.stats["bytes_written"]
    log.commit()
    written = log.stats["bytes_written"] - before
    assert 20 * MB < written < 20 * MB + 4096, written  # five copies would be 100 MB
    log.close()
    log = SegmentMessageLog(tmp_path)
    assert all(log.read(q, 0, 1)[0].body == body for q in QUEUES)
    log.close()


def test_segment_log_shares_only_the_same_body_object(tmp_path: Path) -> None:
    """Equal bodies of different messages are different messages: each is written."""
    log = SegmentMessageLog(tmp_path)
    log.stage_append([StoredMessage("a", 1, "", "", b"", b"x" * MB, True), StoredMessage("b", 1, "", "", b"", b"x" * MB, True)])
    log.commit()
    assert log.stats["bytes_written"] > 2 * MB
    log.close()


def test_compaction_copies_a_shared_body_once_and_frees_its_segment(tmp_path: Path) -> None:
    log = SegmentMessageLog(tmp_path, segment_bytes=64 * 1024)
    body = bytes(range(256)) * 80  # 20 KiB
    log.stage_append(fanout(body, ["a", "b", "c"]))
    log.commit()
    log.stage_remove("a", [1])  # the queue whose record holds the bytes lets go first
    log.commit()
    first = log.segments()[0]
    filler = 2
    while first in log.segments():  # traffic that rolls segments until compaction moves b and c forward
        log.stage_append([StoredMessage("z", filler, "", "", b"", b"f" * 2000, True)])
        log.stage_remove("z", [filler - 1])
        log.commit()
        filler += 1
        assert filler < 10_000, "the first segment was never compacted away"
    # b and c were copied forward together: one record carries the body, the other refers to it.
    lengths = sorted(log._index[q].lens[log._index[q].head] for q in ("b", "c"))
    assert lengths[0] < 100 < len(body) < lengths[1] < len(body) + 100, lengths
    for q in ("b", "c"):
        assert log.read(q, 0, 10)[0].body == body
    log.close()
    log = SegmentMessageLog(tmp_path)
    assert [log.read(q, 0, 10)[0].body for q in ("b", "c")] == [body, body]
    assert log.read("a", 0, 10) == []
    log.close()


def test_sqlite_keeps_a_20_mb_body_for_five_queues_once(tmp_path: Path) -> None:
    log = SqliteMessageLog(tmp_path / DB_FILENAME)
    body = b"\xcd" * (20 * MB)
    log.stage_append(fanout(body, QUEUES))
    log.commit()
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        inline = db.execute("SELECT coalesce(sum(length(body)), 0) FROM messages").fetchone()[0]
        shared, refs = db.execute("SELECT sum(length(body)), sum(refs) FROM bodies").fetchone()
        pages = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
    assert (inline, shared, refs) == (0, 20 * MB, 5)
    wal = (tmp_path / (DB_FILENAME + "-wal")).stat().st_size
    assert pages + wal < 50 * MB  # database + WAL on disk: one copy (twice at most while in the WAL), not five
    for i, q in enumerate(QUEUES):
        assert log.read(q, 0, 1)[0].body == body
        log.stage_remove(q, [1])
        log.commit()
        with sqlite3.connect(tmp_path / DB_FILENAME) as db:
            left = db.execute("SELECT count(*), coalesce(sum(refs), 0) FROM bodies").fetchone()
        assert left == ((1, 4 - i) if i < 4 else (0, 0))  # the last reference frees the body
    log.close()


def test_sqlite_purge_and_recovery_release_shared_bodies(tmp_path: Path) -> None:
    log = SqliteMessageLog(tmp_path / DB_FILENAME)
    body = b"\x01" * 10_000
    rows = fanout(body, ["a", "b", "c"])
    rows[2].persistent = False
    log.stage_append(rows)
    log.commit()
    log.stage_purge("a")
    log.commit()
    log.close()
    log = SqliteMessageLog(tmp_path / DB_FILENAME)
    log.recover()  # the transient copy in c goes
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        assert db.execute("SELECT refs FROM bodies").fetchall() == [(1,)]
    assert log.read("b", 0, 1)[0].body == body
    log.stage_append([StoredMessage("b", 1, "", "", b"", b"replaced", True)])  # same seq: the old row goes
    log.commit()
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        assert db.execute("SELECT count(*) FROM bodies").fetchone() == (0,)
    log.close()


def test_a_batch_with_a_large_body_is_written_in_the_commit_thread(tmp_path: Path) -> None:
    log = SegmentMessageLog(tmp_path)
    log.stage_append([StoredMessage("q", 1, "", "", b"", b"s" * 1000, True)])
    assert log.prepare_commit() is None  # small: the broker commits it on the loop
    log.commit()
    log.stage_append([StoredMessage("q", 2, "", "", b"", b"L" * THREADED_COMMIT_BYTES, True)])
    write = log.prepare_commit()
    assert write is not None and not log.has_staged()  # detached: the loop stages the next batch meanwhile
    log.stage_append([StoredMessage("q", 3, "", "", b"", b"next", True)])
    reads: list[list[int]] = []
    writer = threading.Thread(target=write)
    writer.start()
    while writer.is_alive():  # reads during the write see committed data only, never half a batch
        reads.append([m.seq for m in log.read("q", 0, 10)])
        time.sleep(0.001)
    writer.join()
    assert all(r in ([1], [1, 2]) for r in reads), reads
    assert [m.seq for m in log.read("q", 0, 10)] == [1, 2]
    log.commit()
    log.close()
    log = SegmentMessageLog(tmp_path)
    assert [(m.seq, len(m.body)) for m in log.read("q", 0, 10)] == [(1, 1000), (2, THREADED_COMMIT_BYTES), (3, 4)]
    log.close()
