"""The message history on disk: what the in-memory history (core/tracing.py) forgets, kept a while longer.

When the broker has a data directory (every store but ``memory``), a vhost's history writes each message it
forgets (its capacity is reached) as one JSON line to ``<data dir>/trace/<vhost>.jsonl``. Bounded: when that
file passes ``MAX_FILE_BYTES`` it becomes ``<vhost>.1.jsonl`` (replacing the one before, whose messages are
counted as dropped) and a new file starts, so a vhost keeps at most twice ``MAX_FILE_BYTES`` on disk.
Lookups read both files, newest last; lines are written through a buffer and flushed before a lookup.
The files are removed when the vhost is deleted or tracing is turned on again (a new history).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

log = logging.getLogger("mailslot.http")

# 32 MiB a file, two files a vhost: a few hundred thousand messages' histories.
MAX_FILE_BYTES = 32 * 1024 * 1024


class TraceArchive:
    def __init__(self, directory: Path, vhost: str, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        name = quote(vhost, safe="") or "%2F"
        self.current = directory / f"{name}.jsonl"
        self.previous = directory / f"{name}.1.jsonl"
        self.max_file_bytes = max_file_bytes
        self.bytes = 0
        self.lines = 0
        self.previous_lines = 0
        self.archived = 0  # messages written
        self.dropped = 0  # messages dropped with a rotated-out file
        self.failed = False  # the disk refused a write: the archive stops (the in-memory history goes on)
        self._file: IO[str] | None = None
        self._directory = directory
        # Files of an earlier run (tracing stayed on across a restart): appended to, counted once.
        self.lines, self.bytes = _count(self.current), _size(self.current)
        self.previous_lines = _count(self.previous)

    def append(self, document: dict[str, Any]) -> None:
        if self.failed:
            return
        line = json.dumps(document, separators=(",", ":"), default=str) + "\n"
        try:
            if self._file is None:
                self._directory.mkdir(parents=True, exist_ok=True)
                self._file = self.current.open("a", encoding="utf-8")
            self._file.write(line)
        except OSError as error:
            log.warning("trace archive %s: %s; messages the history forgets are dropped from now on", self.current, error)
            self.failed = True
            return
        self.bytes += len(line)
        self.lines += 1
        self.archived += 1
        if self.bytes > self.max_file_bytes:
            self._rotate()

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        self.dropped += self.previous_lines
        self.current.replace(self.previous)
        self.previous_lines, self.lines, self.bytes = self.lines, 0, 0

    def search(self, matches: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Archived message histories for which ``matches`` is true, oldest first."""
        if self._file is not None:
            self._file.flush()
        return [document for document in self._documents() if matches(document)]

    def _documents(self) -> Iterator[dict[str, Any]]:
        for path in (self.previous, self.current):
            try:
                with path.open(encoding="utf-8") as lines:
                    for line in lines:
                        try:
                            yield json.loads(line)
                        except ValueError:
                            continue  # a torn last line after a crash
            except FileNotFoundError:
                continue

    def status(self) -> dict[str, Any]:
        return {
            "path": str(self.current),
            "messages": self.lines + self.previous_lines,
            "bytes": self.bytes + _size(self.previous),
            "dropped_messages": self.dropped,
            "failed": self.failed,
        }

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for path in (self.current, self.previous):
            path.unlink(missing_ok=True)


def _count(path: Path) -> int:
    try:
        with path.open("rb") as lines:
            return sum(1 for _ in lines)
    except OSError:
        return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
