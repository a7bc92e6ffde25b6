"""A message's failed-delivery count survives a SIGKILL of the broker (x-delivery-limit, x-delivery-count,
x-retry-delays), on both embedded stores."""

from __future__ import annotations

from typing import Any

import pika
import pytest

from .broker_process import BrokerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STORES = ["segments", "sqlite"]


def _nack_then_sync(url: str, arguments: dict[str, Any], nacks: int) -> None:
    """Declares ``work`` (and ``dlq``), publishes one persistent message and nacks it ``nacks`` times.
    A confirmed publish afterwards proves the nacks' writes are committed: its group commit holds every
    write staged before it."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("dlq", durable=True)
    ch.queue_declare("work", durable=True, arguments=arguments)
    ch.queue_declare("sync", durable=True)
    ch.basic_publish("", "work", b"m", pika.BasicProperties(delivery_mode=2))
    for _ in range(nacks):
        method, _, _ = ch.basic_get("work")
        assert method is not None
        ch.basic_nack(method.delivery_tag, requeue=True)
    ch.basic_publish("", "sync", b"s", pika.BasicProperties(delivery_mode=2))
    conn.close()


def _first_delivery(url: str, queue: str) -> tuple[pika.BlockingConnection, Any, Any]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    for method, properties, _ in ch.consume(queue, inactivity_timeout=5):
        assert method is not None, f"nothing delivered from {queue}"
        return conn, method, properties
    raise AssertionError("unreachable")


@pytest.mark.parametrize("store", STORES)
def test_delivery_count_and_limit_survive_sigkill(tmp_path, store):
    broker = BrokerProcess(store=store, data_dir=tmp_path / "data")
    broker.start()
    try:
        arguments = {"x-delivery-limit": 2, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}
        _nack_then_sync(broker.url, arguments, nacks=2)
        broker.kill()
        broker.start()
        conn, method, properties = _first_delivery(broker.url, "work")
        assert (method.redelivered, (properties.headers or {}).get("x-delivery-count")) == (True, 2)
        conn.close()  # the third failed delivery (requeued on close): past the limit
        conn, method, properties = _first_delivery(broker.url, "dlq")
        assert properties.headers["x-death"][0]["reason"] == "delivery_limit"
        conn.close()
    finally:
        broker.kill()


@pytest.mark.parametrize("store", STORES)
def test_a_held_retry_is_ready_at_once_after_sigkill_and_keeps_its_count(tmp_path, store):
    broker = BrokerProcess(store=store, data_dir=tmp_path / "data")
    broker.start()
    try:
        _nack_then_sync(broker.url, {"x-retry-delays": [600_000]}, nacks=1)  # held for 10 minutes
        broker.kill()
        broker.start()
        conn, method, properties = _first_delivery(broker.url, "work")  # within 5 s, not 10 minutes
        assert (method.redelivered, properties.headers["x-delivery-count"]) == (True, 1)
        conn.close()
    finally:
        broker.kill()
