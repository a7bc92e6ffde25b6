"""Fixtures of the worker tests: an in-process broker in the test's loop, a mailslot.client publisher,
and a table prefix in the PostgreSQL of tests/conftest.py's ``postgres_dsn``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import mailslot.client


@pytest.fixture
def pg(postgres_dsn: str) -> Iterator[tuple[str, str]]:
    """(dsn, a unique table prefix); the tables with that prefix are dropped afterwards."""
    import psycopg

    dsn = postgres_dsn
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
