"""Storage benchmark (not a test): SQLite WAL message log against a minimal home-made segment log.

    python benchmarks/store_bench.py [--dir DIR] [--seconds S]

The reference measured in the same run is the floor any file-based log pays: each batch framed as
length + crc32 records, one os.write and one os.fdatasync. Ratios are SQLite / reference.
Run it on the disk the broker will use (--dir); tmpfs would hide the fsync cost.
"""

from __future__ import annotations

import argparse
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from mailslot.storage.api import StoredMessage
from mailslot.storage.sqlite import open_sqlite_store

BODY = b"x" * 256
PROPS = b"\x90\x00\x0atext/plain\x02"
_HEADER = struct.Struct(">II")


def messages(queue: str, start: int, n: int) -> list[StoredMessage]:
    return [StoredMessage(queue, s, "amq.direct", "jobs", PROPS, BODY, True) for s in range(start, start + n)]


class SegmentLog:
    """The reference: append-only file, records = length + crc32 + payload, one fdatasync per batch."""

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailslot-bench-", dir=args.dir))
    secs = args.seconds
    results: list[tuple[str, float, str, float | None]] = []

    # Reference: segment log.
    seg = SegmentLog(root / "segment.log")
    seq = [0]

    def seg_batch(n: int) -> Callable[[int], int]:
        def run(_: int) -> int:
            seg.append_commit(messages("q", seq[0] + 1, n))
            seq[0] += n
            return n
        return run

    ref_rows = rate(seg_batch(1000), secs)
    ref_commits = rate(seg_batch(1), secs)
    seg.close()

    log, meta = open_sqlite_store(root / "sqlite")
    nxt = {"q": 1}

    def sql_append(n: int, ack_previous: bool = False, cancel: bool = False) -> Callable[[int], int]:
        def run(_: int) -> int:
            start = nxt["q"]
            log.stage_append(messages("q", start, n))
            nxt["q"] += n
            if cancel:
                log.stage_remove("q", list(range(start, start + n)))
            elif ack_previous and start > n:
                log.stage_remove("q", list(range(start - n, start)))
            log.commit()
            return n
        return run

    rows = rate(sql_append(1000), secs)
    results.append(("append+commit, batches of 1000 x 256 B", rows, "rows/s", rows / ref_rows))
    commits = rate(sql_append(1), secs)
    results.append(("append+commit, batches of 1", commits, "commits/s", commits / ref_commits))
    steady = rate(sql_append(1000, ack_previous=True), secs)
    results.append(("append 1000 + remove previous 1000, per commit", steady, "rows/s", steady / ref_rows))
    cancel = rate(sql_append(1000, cancel=True), secs)
    results.append(("append+remove in same batch (cancelled)", cancel, "rows/s", cancel / ref_rows))

    # Staging cost alone (Python side of the hot path).
    batch = messages("s", 1, 1000)
    t0 = time.perf_counter()
    for _ in range(200):
        log.stage_append(batch)
        log.stage_remove("s", list(range(1, 1001)))
    stage = 200 * 1000 / (time.perf_counter() - t0)
    log.commit()
    results.append(("stage_append + cancelling stage_remove (no I/O)", stage, "msgs/s", None))

    # Reads: page through a 100k-message queue 1000 at a time.
    log.stage_append(messages("r", 1, 100_000))
    log.commit()

    def read_all(_: int) -> int:
        after, n = 0, 0
        while page := log.read("r", after, 1000):
            after = page[-1].seq
            n += len(page)
        return n

    reads = rate(read_all, secs)
    results.append(("read(queue, after, 1000) paging", reads, "rows/s", None))
    log.close()
    meta.close()

    # Recovery of what is on disk now.
    log, meta = open_sqlite_store(root / "sqlite")
    t0 = time.perf_counter()
    rec = log.recover()
    t_rec = time.perf_counter() - t0
    total = sum(r.count for r in rec)
    results.append(("recover() rows scanned per second", total / t_rec, "rows/s", None))
    log.close()
    meta.close()

    db = root / "sqlite" / "mailslot.db"
    print(f"dir: {root}  db size: {db.stat().st_size / 1e6:.1f} MB  ({total} rows)")
    print(f"reference segment log: {ref_rows:,.0f} rows/s (1000/batch), {ref_commits:,.0f} commits/s (1/batch)")
    for name, value, unit, ratio in results:
        r = f"   x{ratio:.2f} of reference" if ratio is not None else ""
        print(f"{name:<50} {value:>12,.0f} {unit}{r}")


if __name__ == "__main__":
    main()
