"""Segment compaction (storage/segments/log.py): when it runs, how much of the event loop one step takes, and
that a SIGKILL at any point of it loses no committed message and duplicates none.

Issue 15: during a long drain, compaction copied forward the live records of the segment being drained
(the very messages about to be delivered) in 4 MiB steps, and a live consumer saw delivery dips. Now a
segment is compacted only once its live bytes have stood still for ``compact_stable_commits`` commits,
and in ``compact_step_bytes`` steps, one per commit (benchmarks/compaction_latency.py measures the
latency; RESULTS.md has the figures).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mailslot.storage.api import StoredMessage
from mailslot.storage.segments import log as seglog
from mailslot.storage.segments.log import SegmentMessageLog

from .test_segments import check_accounting, seqs

SEGMENT = 64 * 1024


def msg(seq: int, queue: str = "q", size: int = 256) -> StoredMessage:
    return StoredMessage(queue, seq, "ex", "rk", b"props", seq.to_bytes(8, "big") * (size // 8), True)


def fill(log: SegmentMessageLog, upto: int, *, parked_every: int = 0, batch: int = 20) -> list[int]:
    """Appends q's messages 1..upto in commits of ``batch``; every ``parked_every``-th also goes to
    ``parked`` (same seq). Returns the parked seqs."""
    parked = []
    for first in range(1, upto + 1, batch):
        rows = [msg(s) for s in range(first, min(first + batch, upto + 1))]
        if parked_every:
            extra = [msg(s, "parked") for s in range(first, first + len(rows)) if s % parked_every == 0]
            parked += [m.seq for m in extra]
            rows += extra
        log.stage_append(rows)
        log.commit()
    return parked


def other_traffic(log: SegmentMessageLog, commits: int, start: int) -> int:
    """Commits on another queue that touch only the active segment (appended and acked at once)."""
    for i in range(commits):
        log.stage_append([msg(start + i, "other", size=16)])
        log.commit()
        log.stage_remove("other", [start + i])
    return start + commits


def test_a_segment_being_drained_is_not_compacted_it_dies(tmp_path: Path) -> None:
    """A consumer acks from the head at every commit while publishers go on: the head segment's live bytes
    change at every commit, so compaction leaves it alone and it is deleted once drained."""
    log = SegmentMessageLog(tmp_path, segment_bytes=SEGMENT, compact_stable_commits=20)
    fill(log, 1000)
    first_segments = log.segments()[:-1]
    assert len(first_segments) >= 3
    head, nxt = 1, 1001
    while head <= 1000:  # drain 20 a commit, publish 5 a commit
        log.stage_remove("q", list(range(head, head + 20)))
        log.stage_append([msg(s) for s in range(nxt, nxt + 5)])
        log.commit()
        head += 20
        nxt += 5
        assert log.stats["compacted_bytes"] == 0, f"compacted while draining, at {head}"
    assert not set(first_segments) & set(log.segments())  # drained segments died by themselves
    assert seqs(log) == list(range(1001, nxt))
    check_accounting(log)
    log.close()


def test_without_the_stability_rule_the_drained_segment_would_be_compacted(tmp_path: Path) -> None:
    """The same drain with ``compact_stable_commits=0`` (the old behaviour) copies the head segment's
    last live records forward: what the rule above prevents."""
    log = SegmentMessageLog(tmp_path, segment_bytes=SEGMENT, compact_stable_commits=0)
    fill(log, 1000)
    head, nxt = 1, 1001
    while head <= 1000:
        log.stage_remove("q", list(range(head, head + 20)))
        log.stage_append([msg(s) for s in range(nxt, nxt + 5)])
        log.commit()
        head += 20
        nxt += 5
    assert log.stats["compacted_bytes"] > 0
    log.close()


@pytest.mark.parametrize("stable", [1, 10, 50])
def test_a_pinned_segment_is_compacted_once_stable_and_not_before(tmp_path: Path, stable: int) -> None:
    """Segments left holding only a few parked messages (under 25 % live) are compacted after exactly
    ``stable`` commits without change, and then deleted; the parked messages are intact."""
    log = SegmentMessageLog(tmp_path, segment_bytes=SEGMENT, compact_stable_commits=stable)
    parked = fill(log, 1000, parked_every=50)
    pinned = log.segments()[:-1]
    log.stage_remove("q", list(range(1, 1001)))
    log.commit()  # the pinned segments' live bytes change here, for the last time
    assert log.stats["compacted_bytes"] == 0
    nxt = other_traffic(log, stable - 1, 10_000)
    assert log.stats["compacted_bytes"] == 0, "compacted before the live bytes were stable long enough"
    other_traffic(log, 1, nxt)
    assert log.stats["compacted_bytes"] > 0
    other_traffic(log, 200, nxt + 1)  # one step a commit: enough to finish them all
    assert not set(pinned) & set(log.segments())
    assert seqs(log, "parked") == parked
    assert all(m.body == m.seq.to_bytes(8, "big") * 32 for m in log.read("parked", 0, 10**6))
    check_accounting(log)
    log.close()


def test_compaction_proceeds_in_bounded_steps_interleaved_with_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One step a commit, each reading at most ``compact_step_bytes`` of the segment (batches here are
    smaller than a step); between steps the log reads and writes normally."""
    step = 8 * 1024
    log = SegmentMessageLog(tmp_path, segment_bytes=SEGMENT, compact_stable_commits=1, compact_step_bytes=step)
    parked = fill(log, 600, parked_every=7)
    first = log.segments()[0]
    log.stage_remove("q", list(range(1, 601)))
    log.commit()
    reads: list[int] = []
    real_step = SegmentMessageLog._compact_segment
    real_pread = seglog._pread_all

    def counting_pread(fd: int, size: int, offset: int) -> bytes:
        reads.append(size)
        return real_pread(fd, size, offset)

    def step_and_count(self: SegmentMessageLog, seg: int) -> None:
        reads.append(-1)  # a step starts
        real_step(self, seg)

    monkeypatch.setattr(seglog, "_pread_all", counting_pread)
    monkeypatch.setattr(SegmentMessageLog, "_compact_segment", step_and_count)
    commits = 0
    nxt = 20_000
    while first in log.segments():
        before = reads.count(-1)
        nxt = other_traffic(log, 1, nxt)
        commits += 1
        assert reads.count(-1) - before <= 1  # at most one step per commit
        assert seqs(log, "parked") == parked  # reads in between see everything
        assert commits < 100
    assert max(reads) <= step
    assert commits >= SEGMENT // step - 1  # a segment took about size/step commits, not one
    check_accounting(log)
    log.close()


# -- SIGKILL during compaction -------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from mailslot.storage.api import StoredMessage
    from mailslot.storage.segments import log as seglog
    from mailslot.storage.segments.log import SegmentMessageLog

    path, mode, at_step = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    steps = 0
    real_step = SegmentMessageLog._compact_segment

    def die(*args, where="at the end of the step"):
        print("killed", where, file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    def step(self, seg):
        # At step ``at_step``: SIGKILL half-way through its write ("torn"), after the write but before its
        # fdatasync returns ("unsynced"), or after it is synced but before the old segment is deleted
        # ("before-delete"); at the end of the step if it wrote or deleted nothing.
        global steps
        steps += 1
        if steps == at_step:
            if mode == "torn":
                real = seglog._pwrite_all
                def torn(fd, buffers, offset):
                    data = b"".join(buffers)
                    real(fd, [data[: len(data) // 2]], offset)
                    die(where="in the write")
                seglog._pwrite_all = torn
            elif mode == "unsynced":
                seglog.os.fdatasync = lambda fd: die(where="before the sync")
            elif mode == "before-delete":
                self._delete_dead = lambda candidates: die(where="before the delete")
        real_step(self, seg)
        if steps == at_step and mode != "none":
            die()

    SegmentMessageLog._compact_segment = step
    log = SegmentMessageLog(path, segment_bytes=64 * 1024, compact_stable_commits=3, compact_step_bytes=8 * 1024)
    props = b"props"
    batch = 40
    r = 0
    while True:
        r += 1
        first = (r - 1) * batch + 1
        rows = [StoredMessage("q", s, "ex", "rk", props, s.to_bytes(8, "big") * 32, True)
                for s in range(first, first + batch)]
        rows.append(StoredMessage("parked", r, "ex", "rk", props, r.to_bytes(8, "big") * 32, True))
        log.stage_append(rows)
        if r > 1:
            log.stage_remove("q", list(range(first - batch, first)))  # the previous batch, all acked
        log.commit()
        print("committed", r, log.stats["compacted_bytes"], flush=True)
    """
)


def _run_writer(path: Path, mode: str, at_step: int, kill_after_compacting: int = 0) -> tuple[int, str]:
    """Runs the writer until it kills itself (or, with ``kill_after_compacting``, until it has compacted and
    committed that many more rounds, then SIGKILLs it); returns (last reported round, where it died)."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), mode, str(at_step)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reported = 0
    compacting_rounds = 0
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            word, r, compacted = line.split()
            assert word == "committed"
            reported = int(r)
            compacting_rounds += int(compacted) > 0
            if kill_after_compacting and compacting_rounds >= kill_after_compacting:
                os.kill(proc.pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                pytest.fail("the writer neither died nor compacted in time")
    finally:
        proc.kill()
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, stderr
    return reported, stderr.strip()


def _check_recovered(path: Path, reported: int) -> None:
    """Every committed round is there exactly once: parked 1..R, and q holds round R's batch only."""
    log = SegmentMessageLog(path, segment_bytes=64 * 1024, compact_stable_commits=3, compact_step_bytes=8 * 1024)
    try:
        parked = log.read("parked", 0, 10**6)
        last = len(parked)
        assert last in (reported, reported + 1)  # the kill may come after the round's batch was synced
        assert [m.seq for m in parked] == list(range(1, last + 1))  # none lost, none twice
        assert all(m.body == m.seq.to_bytes(8, "big") * 32 for m in parked)
        assert seqs(log) == list(range((last - 1) * 40 + 1, last * 40 + 1))  # no acked message came back
        check_accounting(log)
        # The reopened log goes on compacting and stays consistent.
        for s in range(1, 40):
            log.stage_append([msg(10**6 + s, "other", size=16)])
            log.commit()
            log.stage_remove("other", [10**6 + s])
        assert [m.seq for m in log.read("parked", 0, 10**6)] == list(range(1, last + 1))
        check_accounting(log)
    finally:
        log.close()
    log = SegmentMessageLog(path)
    try:
        assert [m.seq for m in log.read("parked", 0, 10**6)] == list(range(1, last + 1))
    finally:
        log.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["torn", "unsynced", "before-delete"])
@pytest.mark.parametrize("at_step", [1, 6, 23])
def test_sigkill_inside_a_compaction_step_loses_and_doubles_nothing(tmp_path: Path, mode: str, at_step: int) -> None:
    reported, died = _run_writer(tmp_path, mode, at_step)
    assert reported > 0
    # The step copied something (the oldest segment's parked records) so the kill hit what it aimed at;
    # a segment is deleted only at the end of its last step, so most steps end before any delete.
    assert died == {"torn": "killed in the write", "unsynced": "killed before the sync",
                    "before-delete": died if died == "killed at the end of the step" else "killed before the delete"}[mode]
    _check_recovered(tmp_path, reported)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [2, 9, 40])
def test_sigkill_at_any_time_while_compacting_loses_and_doubles_nothing(tmp_path: Path, kill_after: int) -> None:
    reported, _ = _run_writer(tmp_path, "none", 0, kill_after_compacting=kill_after)
    _check_recovered(tmp_path, reported)
