"""Loaded by the broker child of benchmarks/compaction_latency.py (its PYTHONPATH holds this directory):
times every compaction step of the segment log, in whichever mailslot tree the child imports, and appends
``<start ns> <end ns> <segment>`` (CLOCK_MONOTONIC, shared with the benchmark's process) to the file named
by MAILSLOT_COMPACTION_PROBE. Benchmark instrumentation only: nothing in mailslot knows it exists."""

from __future__ import annotations

import os
import time

_path = os.environ.get("MAILSLOT_COMPACTION_PROBE")
if _path:
    import mailslot
    from mailslot.storage.segments import log as _log

    _out = open(_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the broker
    _out.write(f"# {mailslot.__file__}\n")
    _step = _log.SegmentMessageLog._compact_segment

    def _timed(self: _log.SegmentMessageLog, seg: int) -> None:
        start = time.monotonic_ns()
        try:
            _step(self, seg)
        finally:
            _out.write(f"{start} {time.monotonic_ns()} {seg}\n")

    _log.SegmentMessageLog._compact_segment = _timed  # type: ignore[method-assign]
