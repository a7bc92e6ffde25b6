"""The broker on ``--store postgres``: SIGKILL loses no confirmed message, and PostgreSQL going away
(backends terminated, the server unreachable for a while) blocks or nacks publishers, never confirms
without a COMMIT, crashes nothing, and service resumes on its own when the database is back.

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

from .broker_process import BrokerProcess
from .test_kill9 import QUEUE, _drain, _publish_until_killed

pytestmark = pytest.mark.slow


def _serve_args(settings: PostgresSettings) -> list[str]:
    return ["--postgres-dsn", settings.dsn, "--postgres-schema", settings.schema, "--node-name", settings.node_name]


@pytest.mark.parametrize("kill_after", [300, 2000])
async def test_confirmed_messages_survive_sigkill(tmp_path: Any, postgres_settings: PostgresSettings,
                                                  kill_after: int) -> None:
    broker = BrokerProcess(store="postgres", data_dir=tmp_path / "data", extra_args=_serve_args(postgres_settings))
    broker.start()
    try:
        confirmed = await _publish_until_killed(broker, kill_after)
        assert len(confirmed) >= kill_after - 50, "the publisher should have been confirmed before the kill"
        broker.start()
        recovered = await _drain(broker.url)
    finally:
        broker.kill()
    missing = set(confirmed) - set(recovered)
    assert not missing, f"{len(missing)} confirmed messages lost: {sorted(missing)[:10]}"
    assert len(recovered) == len(set(recovered)), "a message was recovered twice"
    assert recovered == sorted(recovered), "recovered messages are out of publish order"


async def _publish(channel: aio_pika.abc.AbstractChannel, body: bytes) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=QUEUE
    )


async def test_an_unreachable_database_nacks_then_service_resumes(postgres_settings: PostgresSettings) -> None:
    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        config = {
            "store": "postgres",
            "postgres_dsn": proxy.dsn(),
            "postgres_schema": postgres_settings.schema,
            "node_name": postgres_settings.node_name,
            "postgres_commit_timeout": 1.0,
        }
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
        async with running_broker(**config) as broker:  # a restart: what was confirmed is there
            connection = await aio_pika.connect(broker.amqp_url)
            async with connection:
                channel = await connection.channel()
                queue = await channel.declare_queue(QUEUE, durable=True, passive=True)
                got = []
                while (message := await queue.get(no_ack=True, fail=False)) is not None:
                    got.append(message.body)
    assert set(confirmed) <= set(got), f"confirmed {confirmed}, recovered {got}"
    assert set(got) <= {b"before", b"during", b"after-1", b"after-2"}  # a nacked one may be kept, never lost twice


async def test_terminated_backends_are_replaced_while_publishing(postgres_settings: PostgresSettings) -> None:
    config = {
        "store": "postgres",
        "postgres_dsn": postgres_settings.dsn,
        "postgres_schema": postgres_settings.schema,
        "node_name": postgres_settings.node_name,
    }
    confirmed: list[int] = []
    async with running_broker(**config) as broker:
        connection = await aio_pika.connect(broker.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.declare_queue(QUEUE, durable=True)

            async def publish(i: int) -> None:
                try:
                    await _publish(channel, str(i).encode())
                    confirmed.append(i)
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
    async with running_broker(**config) as broker:
        connection = await aio_pika.connect(broker.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(QUEUE, durable=True, passive=True)
            got = []
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                got.append(int(message.body))
    assert not set(confirmed) - set(got)
    assert len(got) == len(set(got)), "a message was stored twice"
