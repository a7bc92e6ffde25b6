"""The broker on ``--store postgres`` when PostgreSQL goes away: backends terminated, the server
unreachable for a while. Publishers are blocked or nacked, never confirmed without a COMMIT; nothing
crashes; service resumes on its own when the database is back; every confirmed message is still there
after a restart. (SIGKILL of the broker on PostgreSQL: test_kill9.py, store "postgres".)

The server is reached through a TCP proxy (tests/storage/tcp_proxy.py) that the test stops and starts:
the shared PostgreSQL itself is never restarted.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import psycopg
import pytest

from mailslot.storage.postgres import PostgresSettings
from mailslot.testing import running_broker
from storage.tcp_proxy import TcpProxy

from .test_kill9 import QUEUE, _drain_named

pytestmark = pytest.mark.slow


def _config(settings: PostgresSettings, dsn: str = "", **more: Any) -> dict[str, Any]:
    return {"store": "postgres", "postgres_dsn": dsn or settings.dsn, "postgres_schema": settings.schema,
            "node_name": settings.node_name, **more}


async def _publish(channel: aio_pika.abc.AbstractChannel, body: bytes) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=QUEUE
    )


async def _after_restart(config: dict[str, Any]) -> list[bytes]:
    """Start the broker again on the same schema and take everything the queue holds."""
    async with running_broker(**config) as broker:
        return await _drain_named(broker.amqp_url, QUEUE)


async def test_an_unreachable_database_nacks_then_service_resumes(postgres_settings: PostgresSettings) -> None:
    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        config = _config(postgres_settings, proxy.dsn(), postgres_commit_timeout=1.0)
        confirmed: list[bytes] = []
        async with running_broker(**config) as broker:
            connection = await aio_pika.connect(broker.amqp_url)
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                await channel.declare_queue(QUEUE, durable=True)
                await _publish(channel, b"before")
                confirmed.append(b"before")

                proxy.stop()  # the database is gone: no confirm may arrive now
                pending = asyncio.ensure_future(_publish(channel, b"during"))
                done, _ = await asyncio.wait([pending], timeout=0.5)
                assert not done, "confirmed while PostgreSQL was unreachable"
                with pytest.raises(aio_pika.exceptions.DeliveryError):  # nacked after the commit timeout
                    await asyncio.wait_for(pending, 10)
                # Still serving: what is in memory is delivered, the connection and the loop are alive.
                queue = await channel.declare_queue(QUEUE, durable=True, passive=True)
                assert (await queue.get(no_ack=False)).body == b"before"  # unacked: requeued at close

                proxy.start()  # back: the next publishes are confirmed without any restart
                for body in (b"after-1", b"after-2"):
                    await asyncio.wait_for(_publish(channel, body), 15)
                    confirmed.append(body)
        got = await _after_restart(config)
    assert set(confirmed) <= set(got), f"confirmed {confirmed}, recovered {got}"
    assert set(got) <= {b"before", b"during", b"after-1", b"after-2"}  # a nacked one may have been kept
    assert len(got) == len(set(got)), "a message was stored twice"


async def test_terminated_backends_are_replaced_while_publishing(postgres_settings: PostgresSettings) -> None:
    config = _config(postgres_settings)
    confirmed: list[bytes] = []
    async with running_broker(**config) as broker:
        connection = await aio_pika.connect(broker.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.declare_queue(QUEUE, durable=True)

            async def publish(i: int) -> None:
                try:
                    await _publish(channel, str(i).encode())
                    confirmed.append(str(i).encode())
                except aio_pika.exceptions.DeliveryError:
                    pass  # nacked: allowed, never counted as confirmed

            with psycopg.connect(postgres_settings.dsn, autocommit=True) as admin:
                for round_ in range(5):
                    await asyncio.gather(*(publish(round_ * 200 + i) for i in range(200)))
                    killed = admin.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE %s",
                        (f"mailslot {postgres_settings.node_name} %",),
                    ).fetchone()
                    assert killed is not None and killed[0] >= 1
            await asyncio.gather(*(publish(1000 + i) for i in range(200)))
    assert len(confirmed) >= 1000  # the retry on a new connection hides a terminated backend
    got = await _after_restart(config)
    assert not set(confirmed) - set(got)
    assert len(got) == len(set(got)), "a message was stored twice"
