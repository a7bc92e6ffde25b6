"""The ``backend`` fixture: every test in test_contract.py runs once per store implementation.

The PostgreSQL backend gets a schema of its own per test (tests/conftest.py's ``postgres_settings``),
dropped after it, on the PostgreSQL at 127.0.0.1:5432 (database ``test``); it is skipped when that
server is absent, unless MAILSLOT_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailslot.storage.api import MessageLog, MetadataStore
from mailslot.storage.memory import open_memory_store
from mailslot.storage.postgres import PostgresSettings, open_postgres_store
from mailslot.storage.segments import open_segment_store
from mailslot.storage.sqlite import open_sqlite_store

BACKENDS = ["memory", "sqlite", "segments", "postgres"]


class Backend:
    """A store pair plus ``reopen()``: a clean restart of the broker process.

    For SQLite that closes both stores and opens new ones on the same directory. The memory store keeps
    nothing across a real restart, so its ``reopen()`` closes (which commits what is staged) and goes on
    with the same objects: the contract tests then check everything but durability, which
    test_sqlite.py checks on its own.
    """

    def __init__(self, name: str, data_dir: Path, postgres: PostgresSettings | None = None) -> None:
        self.name = name
        self.data_dir = data_dir
        self.postgres = postgres
        self.log: MessageLog
        self.meta: MetadataStore
        self._open()

    def _open(self) -> None:
        if self.name == "memory":
            self.log, self.meta = open_memory_store()
        elif self.name == "segments":
            self.log, self.meta = open_segment_store(self.data_dir)
        elif self.name == "postgres":
            assert self.postgres is not None
            self.log, self.meta = open_postgres_store(self.postgres)
        else:
            self.log, self.meta = open_sqlite_store(self.data_dir)

    def reopen(self) -> None:
        self.log.close()
        self.meta.close()
        if self.name != "memory":
            self._open()

    def close(self) -> None:
        self.log.close()
        self.meta.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    settings = request.getfixturevalue("postgres_settings") if request.param == "postgres" else None
    b = Backend(request.param, tmp_path / "data", settings)
    yield b
    b.close()
