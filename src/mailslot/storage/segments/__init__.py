"""Segment message log: append-only checksummed segment files plus an in-memory index.

Metadata stays in SQLite (``<data_dir>/mailslot.db``); the log lives in ``<data_dir>/log/``.
See docs/storage-format.md ("Segment log") and docs/decisions/0002-segment-log.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mailslot.storage.segments.log import (
    SEGMENT_BYTES,
    SegmentCorruptError,
    SegmentFormatError,
    SegmentMessageLog,
)
from mailslot.storage.sqlite import DB_FILENAME, SqliteMetadataStore

LOG_DIRNAME = "log"


def open_segment_store(
    data_dir: Path | str, **log_options: Any
) -> tuple[SegmentMessageLog, SqliteMetadataStore]:
    """Create ``data_dir`` if needed; the log in ``data_dir/log/``, metadata in ``data_dir/mailslot.db``.

    ``log_options`` go to :class:`SegmentMessageLog` (``segment_bytes``, ``compact``; tests use them).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    log = SegmentMessageLog(data_dir / LOG_DIRNAME, **log_options)
    try:
        meta = SqliteMetadataStore(data_dir / DB_FILENAME)
    except BaseException:
        log.close()
        raise
    return log, meta


__all__ = [
    "LOG_DIRNAME",
    "SEGMENT_BYTES",
    "SegmentCorruptError",
    "SegmentFormatError",
    "SegmentMessageLog",
    "open_segment_store",
]
