"""pika fixtures shared by the integration suites (the broker under test comes from ``broker_url``)."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection


@pytest.fixture
def conn(broker_url: str) -> Iterator[BlockingConnection]:
    c = pika.BlockingConnection(pika.URLParameters(broker_url))
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def ch(conn: BlockingConnection) -> BlockingChannel:
    return conn.channel()
