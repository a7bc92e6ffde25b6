"""What only the segment log must show: crash safety, torn tails, segment deletion, compaction, index size.

The contract suite (test_contract.py) runs on it through the ``backend`` fixture; the hypothesis machine
below is test_property.LogMachine with tiny segments (so rolls, deletions and compaction happen every
few steps) plus a crash rule (staged work lost, a torn write left at the tail).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from mailslot.storage.api import QueueRecovery, StoredMessage
from mailslot.storage.segments import (
    LOG_DIRNAME,
    SegmentCorruptError,
    SegmentFormatError,
    SegmentMessageLog,
    open_segment_store,
)
from mailslot.storage.segments._format import SEG_MASK, SEG_SHIFT, SEGMENT_MAGIC

from .test_property import SETTINGS, LogMachine


def msg(seq: int, queue: str = "q", *, persistent: bool = True, size: int = 100) -> StoredMessage:
    return StoredMessage(queue, seq, "ex", "rk", b"props", seq.to_bytes(8, "big") * (size // 8), persistent)


def seqs(log: SegmentMessageLog, queue: str = "q") -> list[int]:
    return [m.seq for m in log.read(queue, 0, 10**9)]


def check_accounting(log: SegmentMessageLog) -> None:
    """Per-segment live counts and bytes agree with the index."""
    live: dict[int, int] = dict.fromkeys(log._live, 0)
    live_bytes: dict[int, int] = dict.fromkeys(log._live, 0)
    for idx in log._index.values():
        assert idx.live == sum(1 for _, _, _ in idx.live_entries()) > 0
        for _, loc, length in idx.live_entries():
            seg = (loc >> SEG_SHIFT) & SEG_MASK
            live[seg] += 1
            live_bytes[seg] += length
    assert live == log._live
    assert live_bytes == log._live_bytes
    on_disk = sorted(int(p.stem) for p in log.directory.glob("*.seg"))
    assert on_disk == log.segments()
    for seg, size in log._size.items():
        on_disk_size = (log.directory / f"{seg:08d}.seg").stat().st_size
        # The active segment is preallocated; closed ones are cut back to what was written.
        assert on_disk_size >= size if seg == log._active else on_disk_size == size


# -- the differential state machine, with tiny segments and crashes ---------------------------------


def _open_tiny(data_dir: Path) -> Any:
    # Segments of a few batches: compaction may start after 2 stable commits (the default 200 is sized
    # for 64 MiB segments), so that it happens within a machine's few dozen steps.
    return open_segment_store(data_dir, segment_bytes=600, compact_stable_commits=2)


class SegmentLogMachine(LogMachine):
    open_store = staticmethod(_open_tiny)

    @rule(garbage=st.binary(max_size=40))
    def crash(self, garbage: bytes) -> None:
        """SIGKILL-like: staged work is lost; possibly a torn write at the end of the last segment."""
        self.log._release()  # type: ignore[attr-defined]
        self.meta.close()
        self.ref._staged.clear()  # type: ignore[attr-defined]
        if garbage:
            last = max((self.dir / LOG_DIRNAME).glob("*.seg"))
            with open(last, "ab") as f:
                f.write(garbage)
        self.log, self.meta = self.open_store(self.dir)

    @invariant()
    def accounting(self) -> None:
        check_accounting(self.log)  # type: ignore[arg-type]


SegmentLogMachine.TestCase.settings = SETTINGS
TestSegmentLogAgainstReference = SegmentLogMachine.TestCase


# -- torn tails and corruption -------------------------------------------------------------------------


def _three_batches(path: Path) -> tuple[Path, int]:
    """A segment with three committed batches; returns it and where its last batch ends."""
    log = SegmentMessageLog(path)
    for b in range(3):
        log.stage_append([msg(s) for s in range(b * 10 + 1, b * 10 + 11)])
        if b == 2:
            log.stage_remove("q", [1, 2])
        log.commit()
    end = log._size[log._active]
    log.close()
    (seg,) = path.glob("*.seg")
    return seg, end


@pytest.mark.parametrize("cut", [1, 7, 12, 500, 1000])
def test_a_truncated_last_batch_is_dropped_whole(tmp_path: Path, cut: int) -> None:
    seg, end = _three_batches(tmp_path)
    os.truncate(seg, end - cut)  # the last write reached the disk only in part
    log = SegmentMessageLog(tmp_path)
    assert seqs(log) == list(range(1, 21))  # batches 1 and 2; none of batch 3 (not even its remove)
    assert log._size[log._active] < end - cut  # the torn part was cut off
    log.stage_append([msg(21)])
    log.commit()
    log.close()
    log = SegmentMessageLog(tmp_path)
    assert seqs(log) == list(range(1, 22))
    log.close()


@pytest.mark.parametrize("where", [-1, -100, -400])
def test_a_corrupt_byte_in_the_last_batch_drops_it(tmp_path: Path, where: int) -> None:
    seg, end = _three_batches(tmp_path)
    data = bytearray(seg.read_bytes())
    data[end + where] ^= 0x40
    seg.write_bytes(bytes(data))
    log = SegmentMessageLog(tmp_path)
    assert seqs(log) == list(range(1, 21))
    log.close()


def test_garbage_after_the_last_batch_is_cut(tmp_path: Path) -> None:
    seg, end = _three_batches(tmp_path)
    with open(seg, "r+b") as f:
        f.seek(end)
        f.write(b"MSB1" + b"\xff" * 4096)  # a torn write of a batch that never completed
    log = SegmentMessageLog(tmp_path)
    assert seqs(log) == [s for s in range(1, 31) if s not in (1, 2)]
    assert log._size[log._active] == end
    log.close()
    with open(seg, "rb") as f:
        f.seek(end)
        assert f.read(4100).strip(b"\x00") == b""  # cut off, so it can never be misread later


def test_an_empty_or_headerless_last_segment_is_recreated(tmp_path: Path) -> None:
    _three_batches(tmp_path)
    (tmp_path / "00000002.seg").write_bytes(b"MSL")  # created, header torn
    log = SegmentMessageLog(tmp_path)
    assert seqs(log) == [s for s in range(1, 31) if s not in (1, 2)]
    log.stage_append([msg(31)])
    log.commit()
    log.close()
    log = SegmentMessageLog(tmp_path)
    assert seqs(log)[-1] == 31
    log.close()


def test_corruption_in_an_older_segment_is_refused(tmp_path: Path) -> None:
    seg, end = _three_batches(tmp_path)
    log = SegmentMessageLog(tmp_path, segment_bytes=1)
    log.stage_append([msg(100)])  # goes to a new segment: the first one is now not the last
    log.commit()
    log.close()
    data = bytearray(seg.read_bytes())
    data[end - 50] ^= 1
    seg.write_bytes(bytes(data))
    with pytest.raises(SegmentCorruptError):
        SegmentMessageLog(tmp_path)


def test_a_second_process_cannot_open_the_directory(tmp_path: Path) -> None:
    log = SegmentMessageLog(tmp_path)
    with pytest.raises(RuntimeError, match="in use"):
        SegmentMessageLog(tmp_path)
    log.close()
    SegmentMessageLog(tmp_path).close()


def test_a_failed_commit_applies_nothing_and_keeps_the_batch(tmp_path: Path) -> None:
    log = SegmentMessageLog(tmp_path)
    log.stage_append([msg(1)])
    log.commit()
    log.stage_append([msg(2)])
    log.stage_remove("q", [1])
    real_fd = log._fds[log._active]
    log._fds[log._active] = 10**6  # a bad descriptor: the write fails
    with pytest.raises(OSError):
        log.commit()
    log._fds[log._active] = real_fd
    assert seqs(log) == [1] and log.has_staged()
    log.commit()
    assert seqs(log) == [2]
    log.close()
    log = SegmentMessageLog(tmp_path)
    assert seqs(log) == [2]
    log.close()


# -- segment deletion and compaction -------------------------------------------------------------------


def test_a_segment_is_deleted_once_everything_in_it_is_removed(tmp_path: Path) -> None:
    log = SegmentMessageLog(tmp_path, segment_bytes=4096, compact=False)
    for b in range(10):
        log.stage_append([msg(s) for s in range(b * 20 + 1, b * 20 + 21)])
        log.commit()
    assert len(log.segments()) >= 5
    first = log.segments()
    log.stage_remove("q", list(range(1, 201)))
    log.commit()
    assert log.segments() == [log._active]  # only the active one is left
    assert log.stats["segments_deleted"] == len(set(first) - {log._active})
    check_accounting(log)
    log.close()
    log = SegmentMessageLog(tmp_path)
    assert seqs(log) == [] and log.recover() == []
    log.close()


def test_a_dead_segment_outlives_the_messages_its_removes_point_to(tmp_path: Path) -> None:
    """Deleting the segment holding a remove record while the removed message's segment lives on
    would resurrect that message at the next restart."""
    log = SegmentMessageLog(tmp_path, segment_bytes=1, compact=False)  # every commit rolls
    log.stage_append([msg(1), msg(2)])
    log.commit()
    s1 = log._active
    log.stage_append([msg(3)])
    log.commit()
    s2 = log._active
    log.stage_remove("q", [1, 3])  # removes 1 (s1 lives on: 2) and 3 (s2 dies)
    log.commit()
    s3 = log._active
    log.stage_append([msg(4)])  # s3 is closed now, nothing live in it
    log.commit()
    assert s1 < s2 < s3 < log._active
    assert s2 not in log.segments()  # dead, and its own records point nowhere else
    assert s3 in log.segments()  # dead, but it holds the removal of seq 1 whose segment s1 lives
    log.close()
    log = SegmentMessageLog(tmp_path, segment_bytes=1, compact=False)
    assert seqs(log) == [2, 4]
    log.stage_remove("q", [2])
    log.commit()  # s1 dies: then s3 can go as well
    assert s1 not in log.segments() and s3 not in log.segments()
    check_accounting(log)
    log.close()
    log = SegmentMessageLog(tmp_path)
    assert seqs(log) == [4]
    log.close()


def test_compaction_moves_stragglers_so_disk_use_stays_bounded(tmp_path: Path) -> None:
    """A consumer that keeps one message unacked per segment would otherwise pin every segment."""
    log = SegmentMessageLog(tmp_path, segment_bytes=64 * 1024, compact_stable_commits=4)
    seq = 0
    kept: list[int] = []
    previous: list[StoredMessage] = []
    for _ in range(300):
        batch = [msg(seq + i, size=256) for i in range(1, 51)]
        seq += 50
        log.stage_append(batch)
        if previous:  # ack the previous batch but its first message, which is requeued instead
            kept.append(previous[0].seq)
            log.stage_mark_redelivered("q", [previous[0].seq])
            log.stage_remove("q", [m.seq for m in previous[1:]])
        log.commit()
        previous = batch
    log.stage_remove("q", [m.seq for m in previous])
    log.commit()
    total = sum(p.stat().st_size for p in tmp_path.glob("*.seg"))
    assert log.stats["compacted_bytes"] > 0
    assert total < 6 * 64 * 1024, (total, log.segments())
    got = log.read("q", 0, 10**6)
    assert [m.seq for m in got] == kept and all(m.redelivered for m in got)
    check_accounting(log)
    log.close()
    log = SegmentMessageLog(tmp_path)
    got = log.read("q", 0, 10**6)
    assert [m.seq for m in got] == kept and all(m.redelivered for m in got)
    assert all(m.body == m.seq.to_bytes(8, "big") * 32 for m in got)
    log.close()


def test_compaction_keeps_deadline_requeue_count_and_codec(tmp_path: Path) -> None:
    """Stragglers requeued 1-3 times, with deadlines, some from another protocol's codec, are copied
    forward by compaction and keep all three."""
    log = SegmentMessageLog(tmp_path, segment_bytes=64 * 1024, compact_stable_commits=4)
    expected: dict[int, tuple[int, int, str]] = {}  # seq -> (requeues, deadline, codec)
    previous: list[StoredMessage] = []
    seq = 0
    for r in range(300):
        batch = [msg(seq + i, size=256) for i in range(1, 51)]
        for m in batch:
            m.deadline = 1_700_000_000_000 + m.seq
            if r % 4 == 1:
                m.codec = "mqtt5"
        seq += 50
        log.stage_append(batch)
        if previous:  # keep the previous batch's first message, requeued (r % 3) + 1 times
            kept = previous[0].seq
            for _ in range(r % 3 + 1):
                log.stage_mark_redelivered("q", [kept])
            expected[kept] = (r % 3 + 1, previous[0].deadline, previous[0].codec)
            log.stage_remove("q", [m.seq for m in previous[1:]])
        log.commit()
        previous = batch
    log.stage_remove("q", [m.seq for m in previous])
    log.commit()
    assert log.stats["compacted_bytes"] > 0 and 1 not in log.segments()  # the first kept one moved

    def check(log: SegmentMessageLog) -> None:
        got = log.read("q", 0, 10**6)
        assert {m.seq: (m.requeues, m.deadline, m.codec) for m in got} == expected
        assert all(m.redelivered for m in got) and [m.seq for m in got] == sorted(expected)

    check(log)
    check_accounting(log)
    first = min(expected)
    log.stage_mark_redelivered("q", [first])  # a requeue after the copy counts on top of it
    log.commit()
    expected[first] = (expected[first][0] + 1, *expected[first][1:])
    log.close()
    log = SegmentMessageLog(tmp_path)
    check(log)
    check_accounting(log)
    log.close()


def test_a_segment_of_an_unknown_format_version_is_refused(tmp_path: Path) -> None:
    log = SegmentMessageLog(tmp_path)
    log.stage_append([msg(1)])
    log.commit()
    log.close()
    seg = tmp_path / "00000001.seg"
    for version in (b"MSLGSEG2", b"MSLGSEG9"):  # the short-lived fixed-header version 2, a future one
        with open(seg, "r+b") as f:
            f.write(version)
        with pytest.raises(SegmentFormatError, match=version.decode()):
            SegmentMessageLog(tmp_path)
        assert seg.read_bytes()[:8] == version  # refused, not reset as a headerless segment would be


def test_a_version_1_segment_is_read_as_it_is(tmp_path: Path) -> None:
    """Version 1 had no extended appends: its records are version 2 records without a deadline."""
    log = SegmentMessageLog(tmp_path)
    log.stage_append([msg(1), msg(2), msg(3)])
    log.stage_mark_redelivered("q", [2])
    log.commit()
    log.close()
    seg = tmp_path / "00000001.seg"
    with open(seg, "r+b") as f:
        f.write(b"MSLGSEG1")
    log = SegmentMessageLog(tmp_path)
    assert [(m.seq, m.redelivered, m.requeues, m.deadline) for m in log.read("q", 0, 10)] == [
        (1, False, 0, 0), (2, True, 1, 0), (3, False, 0, 0)
    ]
    log.close()


# A version-3 segment (MSLGSEG3) as mailslot wrote it before codecs were stored: queue "/\x00q", seq 1 an
# AMQP 0-9-1 message (content-type text/plain, delivery-mode 2, headers {k: v}, message-id m-1), seq 2 a
# redelivered one (requeued 3 times: an extended record) with the property block of delivery-mode 2.
V3_SEGMENT = (Path(__file__).parent / "golden" / "segment_v3.seg").read_bytes()
V3_PROPERTIES = bytes.fromhex("b0800a746578742f706c61696e00000008016b53000000017602036d2d31")


def test_a_version_3_segment_reads_as_amqp091_and_new_records_go_to_a_new_segment(tmp_path: Path) -> None:
    (tmp_path / "00000001.seg").write_bytes(V3_SEGMENT)
    log = SegmentMessageLog(tmp_path)
    got = log.read("/\x00q", 0, 10)
    assert [(m.seq, m.exchange, m.properties, m.body, m.codec) for m in got] == [
        (1, "", V3_PROPERTIES, b"hello", "amqp091"), (2, "amq.direct", b"\x10\x00\x02", b"again", "amqp091")]
    assert [(m.redelivered, m.requeues, m.deadline) for m in got] == [(False, 0, 0), (True, 3, 0)]
    log.stage_append([StoredMessage("/\x00q", 3, "", "q", b"{}", b"new", True, codec="mqtt5")])
    log.commit()
    assert log.segments() == [1, 2]  # an older reader refuses version 5: it never sees an F_CODEC record
    assert (tmp_path / "00000002.seg").read_bytes()[:8] == b"MSLGSEG5"
    assert (tmp_path / "00000001.seg").read_bytes()[:8] == b"MSLGSEG3"
    log.close()
    log = SegmentMessageLog(tmp_path)
    assert [(m.seq, m.codec) for m in log.read("/\x00q", 0, 10)] == [(1, "amqp091"), (2, "amqp091"), (3, "mqtt5")]
    log.close()


def test_an_older_version_segment_gets_a_new_segment_for_new_record_types(tmp_path: Path) -> None:
    """A version 3 segment cannot hold a delivery watermark record: the next batch goes into a new one."""
    log = SegmentMessageLog(tmp_path)
    log.stage_append([msg(1), msg(2)])
    log.commit()
    log.close()
    old = tmp_path / "00000001.seg"
    with open(old, "r+b") as f:
        f.write(b"MSLGSEG3")
    log = SegmentMessageLog(tmp_path)
    assert log.segments() == [1, 2]
    log.stage_delivered("q", 1)
    log.commit()
    log.close()
    assert old.read_bytes()[:8] == b"MSLGSEG3" and (tmp_path / "00000002.seg").read_bytes()[:8] == SEGMENT_MAGIC
    log = SegmentMessageLog(tmp_path)
    assert [(m.seq, m.redelivered) for m in log.read("q", 0, 10)] == [(1, True), (2, False)]
    log.close()


# -- delivery watermarks ---------------------------------------------------------------------------------


def flagged(log: SegmentMessageLog, queue: str = "q") -> list[int]:
    return [m.seq for m in log.read(queue, 0, 10**9) if m.redelivered]


def churn(log: SegmentMessageLog, rounds: int, start: int) -> int:
    """Traffic on another queue, published and acked in separate commits: segments roll and die."""
    for r in range(rounds):
        batch = [msg(s, "other") for s in range(start + r * 5, start + r * 5 + 5)]
        log.stage_append(batch)
        log.commit()
        log.stage_remove("other", [m.seq for m in batch])
        log.commit()
    return start + rounds * 5


def test_a_watermark_outlives_the_segment_it_was_written_in(tmp_path: Path) -> None:
    log = SegmentMessageLog(tmp_path, segment_bytes=2048, compact_stable_commits=2)
    log.stage_append([msg(s) for s in (1, 2, 3)])
    log.commit()
    nxt = churn(log, 10, 1)
    log.stage_delivered("q", 2)
    log.commit()
    written_in = log._active
    churn(log, 30, nxt)
    assert written_in not in log.segments()  # the record's segment is gone (compaction moved q's messages)
    log._release()  # a crash: nothing more is written
    log = SegmentMessageLog(tmp_path, segment_bytes=2048, compact_stable_commits=2)
    assert flagged(log) == [1, 2]
    check_accounting(log)
    log.close()


def test_a_roll_then_a_crash_before_the_first_batch_keeps_the_watermarks(tmp_path: Path) -> None:
    """A segment that dies when the log rolls away from it is deleted only after the new segment holds the
    watermarks; a crash in between must not lose them, nor a second crash right after the restart."""
    log = SegmentMessageLog(tmp_path, segment_bytes=1, compact=False)  # every commit rolls
    log.stage_append([msg(1), msg(2)])
    log.commit()
    log.stage_delivered("q", 1)
    log.commit()
    watermark_segment = log._active  # holds the watermark and no message: dead once the log rolls on
    log.stage_append([msg(1, "other")])

    def fail_after_the_roll(*_: Any) -> None:
        raise OSError("disk gone")

    import mailslot.storage.segments.log as segment_log

    real_write = segment_log._pwrite_all
    segment_log._pwrite_all = fail_after_the_roll  # type: ignore[assignment]
    try:
        with pytest.raises(OSError):
            log.commit()  # rolled to a new, empty segment; its first batch never made it
    finally:
        segment_log._pwrite_all = real_write  # type: ignore[assignment]
    assert watermark_segment in log.segments()  # not deleted before a batch of the new segment held the marks
    log._release()
    log = SegmentMessageLog(tmp_path, segment_bytes=1, compact=False)
    assert flagged(log) == [1]
    log._release()  # a second crash at once
    log = SegmentMessageLog(tmp_path, segment_bytes=1, compact=False)
    assert flagged(log) == [1]
    check_accounting(log)
    log.close()


def test_common_records_carry_no_deadline_or_count_bytes(tmp_path: Path) -> None:
    """A message with no deadline and no requeue count costs the 26-byte header, as in version 1."""
    plain = SegmentMessageLog(tmp_path / "plain")
    plain.stage_append([msg(1)])
    plain.commit()
    timed = SegmentMessageLog(tmp_path / "timed")
    m = msg(1)
    m.deadline = 1
    timed.stage_append([m])
    timed.commit()
    assert timed.stats["bytes_written"] - plain.stats["bytes_written"] == 12  # i64 deadline + u32 count
    other = SegmentMessageLog(tmp_path / "other")
    m = msg(1)
    m.codec = "mqtt5"  # another protocol's codec: extended, plus a length octet and the name
    other.stage_append([m])
    other.commit()
    assert other.stats["bytes_written"] - plain.stats["bytes_written"] == 12 + 1 + len("mqtt5")
    plain.close()
    timed.close()
    other.close()


# -- index memory --------------------------------------------------------------------------------------


def test_index_costs_about_20_bytes_per_live_message(tmp_path: Path) -> None:
    n = 200_000
    log = SegmentMessageLog(tmp_path, compact=False)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for start in range(1, n + 1, 10_000):
        log.stage_append([msg(s, size=8) for s in range(start, start + 10_000)])
        log.commit()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_message = log.index_bytes() / n
    assert per_message <= 24, per_message
    assert (after - before) / n <= 32, (after - before) / n  # everything the log keeps per message
    # Acks in order free the memory again.
    for start in range(1, n + 1, 10_000):
        log.stage_remove("q", list(range(start, start + 10_000)))
        log.commit()
    assert log.index_bytes() == 0
    log.close()


# -- recovery --------------------------------------------------------------------------------------------


def test_recover_removes_transient_messages_durably(tmp_path: Path) -> None:
    log = SegmentMessageLog(tmp_path)
    log.stage_append([msg(1), msg(2, persistent=False), msg(3)])
    log.commit()
    log.close()
    log = SegmentMessageLog(tmp_path)
    assert seqs(log) == [1, 2, 3]  # until recover(), the log is as it was left
    assert log.recover() == [QueueRecovery("q", 2, 3)]
    log.close()
    log = SegmentMessageLog(tmp_path)
    assert seqs(log) == [1, 3]
    log.close()


# -- crash safety: SIGKILL a writer mid-stream -------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mailslot.storage.api import StoredMessage
    from mailslot.storage.segments import open_segment_store

    data_dir, batch, stage_only = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    log, meta = open_segment_store(data_dir, segment_bytes=int(sys.argv[4]))
    seq = 0
    props = b"\\x90\\x00\\x0atext/plain\\x02"
    while True:
        msgs = []
        for _ in range(batch):
            seq += 1
            msgs.append(StoredMessage("q", seq, "ex", "rk", props, seq.to_bytes(8, "big") * 32, True))
        log.stage_append(msgs)
        if seq > batch:  # ack half of the batch before last, as a consumer keeping up would
            log.stage_remove("q", list(range(seq - 2 * batch + 1, seq - 2 * batch + 1 + batch // 2)))
        if stage_only:
            print("staged", seq, flush=True)
            time.sleep(60)
        log.commit()
        print("committed", seq, flush=True)
    """
)


def _spawn_writer(data_dir: Path, batch: int, stage_only: bool, segment_bytes: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data_dir), str(batch), "1" if stage_only else "0", str(segment_bytes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _expected_seqs(last_committed: int, batch: int) -> list[int]:
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
    proc = _spawn_writer(tmp_path, batch, stage_only=False, segment_bytes=128 * 1024)  # rolls often
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
        rest = proc.stdout.read()
        for line in rest.splitlines():
            if line.startswith("committed "):
                reported = int(line.split()[1])
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert reported >= kill_after * batch

    log, meta = open_segment_store(tmp_path)
    try:
        recovery = log.recover()
        got_msgs = log.read("q", 0, 10**9)
        got = [m.seq for m in got_msgs]
        last = max(got)
        assert last in (reported, reported + batch)
        assert got == _expected_seqs(last, batch)  # whole batches only: commits are atomic
        assert [(r.queue, r.count, r.max_seq) for r in recovery] == [("q", len(got), last)]
        for m in got_msgs:
            assert m.body == m.seq.to_bytes(8, "big") * 32
        check_accounting(log)
    finally:
        log.close()
        meta.close()


@pytest.mark.slow
def test_sigkill_before_commit_loses_only_the_staged_batch(tmp_path: Path) -> None:
    log, meta = open_segment_store(tmp_path)
    log.stage_append([msg(s, "earlier") for s in (1, 2)])
    log.close()
    meta.close()
    proc = _spawn_writer(tmp_path, 10, stage_only=True, segment_bytes=64 * 1024 * 1024)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["staged", "10"]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    log, meta = open_segment_store(tmp_path)
    try:
        assert log.read("q", 0, 100) == []
        assert [m.seq for m in log.read("earlier", 0, 100)] == [1, 2]
    finally:
        log.close()
        meta.close()
