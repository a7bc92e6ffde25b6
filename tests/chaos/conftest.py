"""The PostgreSQL run needs 127.0.0.1:5432 (database ``test``): skipped when absent unless
MAILSLOT_REQUIRE_SERVICES=1 (same rule as tests/worker_guarantees)."""

from __future__ import annotations

import os

import pytest

POSTGRES_DSN = os.environ.get("MAILSLOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_dsn() -> str:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_DSN, connect_timeout=2):
            return POSTGRES_DSN
    except Exception as exc:
        msg = f"PostgreSQL not reachable at {POSTGRES_DSN}: {exc}"
        if os.environ.get("MAILSLOT_REQUIRE_SERVICES", "") == "1":
            pytest.fail(msg + " and MAILSLOT_REQUIRE_SERVICES=1")
        pytest.skip(msg)
