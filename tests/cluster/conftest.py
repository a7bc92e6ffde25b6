"""Fixtures of the cluster tests: several nodes on one PostgreSQL schema of the test's own.

``cluster_settings(name)`` gives PostgresSettings for node ``name`` on this test's schema (made and
dropped by tests/conftest.py's ``new_postgres_schema``; the PostgreSQL at 127.0.0.1:5432, skipped when
it is absent unless MAILSLOT_REQUIRE_SERVICES=1). ``node_process(name, ...)`` starts ``mailslot serve
--store postgres --cluster`` on that schema as a real process (stopped after the test).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailslot.bench.broker_process import BrokerProcess
from mailslot.storage.postgres import PostgresSettings


@pytest.fixture
def cluster_settings(new_postgres_schema: Callable[[], PostgresSettings]) -> Callable[[str], PostgresSettings]:
    base = new_postgres_schema()

    def settings(name: str) -> PostgresSettings:
        return PostgresSettings(base.dsn, base.schema, name)

    return settings


@pytest.fixture
def node_process(cluster_settings: Callable[[str], PostgresSettings]) -> Iterator[Callable[..., BrokerProcess]]:
    started: list[BrokerProcess] = []

    def start(name: str, *more: str, lease_ttl: float = 3.0, **_: Any) -> BrokerProcess:
        settings = cluster_settings(name)
        process = BrokerProcess(
            store="postgres",
            extra_args=("--postgres-dsn", settings.dsn, "--postgres-schema", settings.schema, "--node-name", name,
                        "--cluster", "--lease-ttl", str(lease_ttl), *more),
        )
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()
