"""Fixtures of the worker tests: an in-process broker in the test's loop, a mailslot.client publisher,
and the PostgreSQL at 127.0.0.1:5432 (database ``test``; skipped when absent unless
MAILSLOT_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import mailslot.client

POSTGRES_DSN = os.environ.get("MAILSLOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_dsn_or_skip() -> str:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_DSN, connect_timeout=2):
            return POSTGRES_DSN
    except Exception as exc:
        msg = f"PostgreSQL not reachable at {POSTGRES_DSN}: {exc}"
        if os.environ.get("MAILSLOT_REQUIRE_SERVICES", "") == "1":
            pytest.fail(msg + " and MAILSLOT_REQUIRE_SERVICES=1")
        pytest.skip(msg)


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    """(dsn, a unique table prefix); the tables with that prefix are dropped afterwards."""
    import psycopg

    dsn = postgres_dsn_or_skip()
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield dsn, prefix
    with psycopg.connect(dsn, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s",
                                    (prefix + "%",)).fetchall():
            conn.execute(f'DROP TABLE IF EXISTS "{name}"')


@pytest.fixture
async def broker_url() -> AsyncIterator[str]:
    from mailslot.testing import running_broker

    async with running_broker(store="memory") as broker:
        yield str(broker.amqp_url)


@pytest.fixture
async def channel(broker_url: str) -> AsyncIterator[Any]:
    async with await mailslot.client.connect(broker_url) as conn:
        ch = await conn.channel()
        await ch.confirm_select()
        yield ch
