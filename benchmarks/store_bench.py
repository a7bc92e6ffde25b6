"""Storage benchmark (not a test): the message logs side by side, memory / SQLite WAL / segment log.

    python benchmarks/store_bench.py [--dir DIR] [--seconds S] [--index-messages N]

Every workload runs on each backend in the same process, one after the other, so the ratios
(segments / SQLite) hold even when the machine's absolute speed swings. A bare "floor" is measured
too: each batch framed as length + crc32 records, one os.write and one os.fdatasync, no index, no acks.
Run it on the disk the broker will use (--dir); tmpfs would hide the fsync cost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailslot.storage.api import MessageLog, StoredMessage
from mailslot.storage.memory import open_memory_store
from mailslot.storage.segments import SegmentMessageLog, open_segment_store
from mailslot.storage.sqlite import open_sqlite_store

BODY = b"x" * 256
PROPS = b"\x90\x00\x0atext/plain\x02"
_HEADER = struct.Struct(">II")
BACKENDS = ["memory", "sqlite", "segments"]


def messages(queue: str, start: int, n: int) -> list[StoredMessage]:
    return [StoredMessage(queue, s, "amq.direct", "jobs", PROPS, BODY, True) for s in range(start, start + n)]


class FloorLog:
    """The floor: append-only file, records = length + crc32 + payload, one fdatasync per batch."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append_commit(self, batch: list[StoredMessage]) -> None:
        parts = []
        for m in batch:
            payload = b"".join(
                (m.queue.encode(), struct.pack(">Q", m.seq), m.routing_key.encode(), m.properties, m.body)
            )
            parts.append(_HEADER.pack(len(payload), zlib.crc32(payload)))
            parts.append(payload)
        os.write(self.fd, b"".join(parts))
        os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def rate(fn: Callable[[int], int], seconds: float) -> float:
    """Run fn(i) repeatedly for about ``seconds``; fn returns the units it did. Units per second."""
    fn(-1)  # warm-up
    done, i, t0 = 0, 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        done += fn(i)
        i += 1
    return done / elapsed


def open_backend(name: str, root: Path) -> tuple[MessageLog, Any]:
    if name == "memory":
        return open_memory_store()
    if name == "sqlite":
        return open_sqlite_store(root / "sqlite")
    return open_segment_store(root / "segments")


def run_backend(name: str, root: Path, secs: float) -> dict[str, float]:
    out: dict[str, float] = {}
    log, meta = open_backend(name, root)
    nxt = {"q": 1}

    def append(n: int, *, ack_previous: bool = False, cancel: bool = False, one_by_one: bool = False) -> Callable[[int], int]:
        def run(_: int) -> int:
            start = nxt["q"]
            batch = messages("q", start, n)
            if one_by_one:  # as the core stages: one message per call, one ack per call
                for m in batch:
                    log.stage_append([m])
            else:
                log.stage_append(batch)
            nxt["q"] += n
            if cancel:
                log.stage_remove("q", list(range(start, start + n)))
            elif ack_previous and start > n:
                if one_by_one:
                    for s in range(start - n, start):
                        log.stage_remove("q", [s])
                else:
                    log.stage_remove("q", list(range(start - n, start)))
            log.commit()
            return n
        return run

    out["append+commit, batches of 1000 x 256 B (rows/s)"] = rate(append(1000), secs)
    out["append+commit, batches of 1 (commits/s)"] = rate(append(1), secs)
    out["append 1000 + remove previous 1000 per commit (rows/s)"] = rate(append(1000, ack_previous=True), secs)
    out["same, one message / one ack per stage call (rows/s)"] = rate(
        append(1000, ack_previous=True, one_by_one=True), secs
    )
    out["append+remove in one batch, cancelled (rows/s)"] = rate(append(1000, cancel=True), secs)

    batch = messages("s", 1, 1000)
    t0 = time.perf_counter()
    for _ in range(200):
        log.stage_append(batch)
        log.stage_remove("s", list(range(1, 1001)))
    out["stage_append + cancelling stage_remove, no I/O (msgs/s)"] = 200 * 1000 / (time.perf_counter() - t0)
    log.commit()

    log.stage_append(messages("r", 1, 100_000))
    log.commit()

    def read_all(_: int) -> int:
        after, n = 0, 0
        while page := log.read("r", after, 1000):
            after = page[-1].seq
            n += len(page)
        return n

    out["read(queue, after, 1000) paging (rows/s)"] = rate(read_all, secs)
    log.close()
    meta.close()

    if name != "memory":
        log, meta = open_backend(name, root)
        t0 = time.perf_counter()
        rec = log.recover()
        t_open_rec = time.perf_counter() - t0
        total = sum(r.count for r in rec)
        out["recover() (rows/s)"] = total / t_open_rec
        log.close()
        meta.close()
        t0 = time.perf_counter()
        log, meta = open_backend(name, root)
        log.recover()
        out["open + recover() wall time (ms)"] = (time.perf_counter() - t0) * 1000
        out["live rows at the end"] = total
        log.close()
        meta.close()
        path = root / name
        out["bytes on disk (MB)"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
    return out


def index_memory(root: Path, n: int) -> tuple[float, float, float]:
    """Segment log with ``n`` live messages in one queue: index bytes/message, traced bytes/message,
    and open+replay time in seconds for that log."""
    path = root / "index"
    log = SegmentMessageLog(path, compact=False)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for start in range(1, n + 1, 10_000):
        log.stage_append([StoredMessage("q", s, "", "k", b"", b"x" * 16, True) for s in range(start, start + 10_000)])
        log.commit()
    traced = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    per = log.index_bytes() / n
    log.close()
    t0 = time.perf_counter()
    log = SegmentMessageLog(path)
    t = time.perf_counter() - t0
    log.close()
    shutil.rmtree(path)
    return per, traced, t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--index-messages", type=int, default=1_000_000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailslot-bench-", dir=args.dir))
    secs = args.seconds

    floor = FloorLog(root / "floor.log")
    seq = [0]

    def floor_batch(n: int) -> Callable[[int], int]:
        def run(_: int) -> int:
            floor.append_commit(messages("q", seq[0] + 1, n))
            seq[0] += n
            return n
        return run

    floor_rows = rate(floor_batch(1000), secs)
    floor_commits = rate(floor_batch(1), secs)
    floor.close()

    results = {name: run_backend(name, root, secs) for name in BACKENDS}
    print(f"dir: {root}")
    print(f"floor (bare write+fdatasync): {floor_rows:,.0f} rows/s (1000/batch), {floor_commits:,.0f} commits/s (1/batch)")
    head = f"{'':<58}" + "".join(f"{n:>14}" for n in BACKENDS) + f"{'seg/sqlite':>12}"
    print(head)
    for key in results["sqlite"]:
        row = [results[n].get(key) for n in BACKENDS]
        cells = "".join(f"{v:>14,.0f}" if v is not None and v >= 100 else (f"{v:>14.2f}" if v is not None else f"{'-':>14}") for v in row)
        sq, sg = results["sqlite"].get(key), results["segments"].get(key)
        ratio = f"{sg / sq:>11.2f}x" if sq and sg else ""
        print(f"{key:<58}{cells}{ratio}")
    if args.index_messages:
        per, traced, t = index_memory(root, args.index_messages)
        print(
            f"segment index, {args.index_messages:,} live messages: {per:.1f} B/msg in the arrays,"
            f" {traced:.1f} B/msg traced in total ({per * args.index_messages / 1e6:.1f} MB);"
            f" reopen (replay) {t:.2f} s"
        )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
