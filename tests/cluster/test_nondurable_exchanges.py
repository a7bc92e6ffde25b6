"""Non-durable exchanges are cluster-wide, as in a RabbitMQ cluster: one declared on a node (pika's and
aio-pika's default) is the same exchange on every node, with its bindings; a durable declare of it is
inequivalent (406); deleting it deletes it everywhere; it lives while the cluster runs (store.py,
``drop_transient_exchanges``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import aio_pika
import psycopg
import pytest

from helpers import async_wait_for
from mailslot.storage.postgres import PostgresSettings

from .test_transient import _node
from .test_transient_bindings import _bound, pub_sub_across


async def test_pub_sub_over_a_non_durable_fanout_reaches_every_subscriber_from_either_node(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    """The pika tutorial's pattern: each side declares 'logs' (non-durable) and binds its own exclusive
    server-named queue; whatever is published on either node reaches every subscriber."""
    async with _node(cluster_settings("a")) as a, _node(cluster_settings("b")) as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            await pub_sub_across((a, b), (on_a, on_b), "logs", durable=False, rounds=10)
            assert not b.core.vhosts["/"].exchanges["logs"].durable


async def test_a_durable_declare_of_another_node_s_non_durable_exchange_is_inequivalent(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    async with _node(cluster_settings("a")) as a, _node(cluster_settings("b")) as b:
        on_a, on_b = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            await (await on_a.channel()).declare_exchange("logs", aio_pika.ExchangeType.FANOUT, durable=False)
            await async_wait_for(lambda: "logs" in b.core.vhosts["/"].exchanges, timeout=10, what="b's 'logs'")
            assert not b.core.vhosts["/"].exchanges["logs"].durable
            channel = await on_b.channel()
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed) as refused:
                await channel.declare_exchange("logs", aio_pika.ExchangeType.FANOUT, durable=True)
            assert "inequivalent arg 'durable'" in str(refused.value)
            await (await on_b.channel()).declare_exchange("logs", aio_pika.ExchangeType.FANOUT, durable=False)


async def test_a_non_durable_exchange_deleted_on_one_node_is_gone_on_the_other(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    settings = cluster_settings("a")
    async with _node(settings) as a, _node(cluster_settings("b")) as b:
        on_a = await aio_pika.connect(a.amqp_url)
        async with on_a:
            channel = await on_a.channel()
            logs = await channel.declare_exchange("logs", aio_pika.ExchangeType.FANOUT)
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(logs)
            await async_wait_for(lambda: _bound(b, "logs", queue.name), timeout=10, what="b to bind it")
            await logs.delete()
            deleted = time.monotonic()
            await async_wait_for(lambda: "logs" not in b.core.vhosts["/"].exchanges, timeout=5, interval=0.02,
                                 what="b to drop 'logs'")
            took = time.monotonic() - deleted
            print(f"\nexchange delete on a applied on b after {took:.2f} s")
            assert took < 1.5
            assert _rows(settings, "exchanges WHERE name = %s", "logs") == 0
            assert _rows(settings, "bindings WHERE source = %s", "logs") == 0


async def test_an_auto_delete_exchange_goes_everywhere_when_its_last_binding_on_another_node_goes(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    settings = cluster_settings("a")
    async with _node(settings) as a, _node(cluster_settings("b")) as b:
        on_a, subscriber = await aio_pika.connect(a.amqp_url), await aio_pika.connect(b.amqp_url)
        async with on_a:
            await (await on_a.channel()).declare_exchange("logs", aio_pika.ExchangeType.FANOUT, auto_delete=True)
            await async_wait_for(lambda: "logs" in b.core.vhosts["/"].exchanges, timeout=10, what="b's 'logs'")
            channel = await subscriber.channel()
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind("logs")
            await async_wait_for(lambda: _bound(a, "logs", queue.name), timeout=10, what="a to bind b's queue")
            await subscriber.close()  # its exclusive queue goes, so the exchange's last binding
            await async_wait_for(lambda: "logs" not in a.core.vhosts["/"].exchanges, timeout=5,
                                 what="a to drop the auto-delete exchange")
            assert _rows(settings, "exchanges WHERE name = %s", "logs") == 0


async def test_non_durable_exchanges_live_while_a_node_runs_and_go_when_the_cluster_stopped(
    cluster_settings: Callable[[str], PostgresSettings],
) -> None:
    settings = cluster_settings("a")
    async with _node(cluster_settings("b"), lease_ttl=1.0):
        async with _node(settings, lease_ttl=1.0) as a:
            on_a = await aio_pika.connect(a.amqp_url)
            async with on_a:
                channel = await on_a.channel()
                await channel.declare_exchange("logs", aio_pika.ExchangeType.FANOUT)
                await channel.declare_exchange("audit", aio_pika.ExchangeType.FANOUT, durable=True)
                await (await channel.get_exchange("audit")).bind("logs")  # an exchange-to-exchange binding from it
        async with _node(settings, lease_ttl=1.0) as a:  # b runs: the cluster did not stop
            assert not a.core.vhosts["/"].exchanges["logs"].durable
        assert _rows(settings, "exchanges WHERE name = %s", "logs") == 1
    await async_wait_for(lambda: not _running(settings), timeout=10, what="no node running")
    async with _node(settings, lease_ttl=1.0) as a:
        assert "logs" not in a.core.vhosts["/"].exchanges
        assert "audit" in a.core.vhosts["/"].exchanges
    assert _rows(settings, "exchanges WHERE name = %s", "logs") == 0
    assert _rows(settings, "bindings WHERE source = %s OR destination = %s", "logs") == 0


def _running(settings: PostgresSettings) -> bool:
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{settings.schema}".nodes '
                           "WHERE seen_at > now() - interval '1 second'").fetchone()
    return bool(row and row[0])


def _rows(settings: PostgresSettings, where: str, name: str) -> int:
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{settings.schema}".{where}',  # type: ignore[arg-type]
                           [name.encode()] * where.count("%s")).fetchone()
    assert row is not None
    return int(row[0])
