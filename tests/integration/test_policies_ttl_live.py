"""A `message-ttl` policy set through the management API applies to the messages already queued (issue 10;
a deliberate difference from RabbitMQ 3.10, docs/policies.md): they expire and are dead-lettered with
reason `expired`, also when the broker restarts right after the change (the queue's cap is durable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pika
import pytest

from helpers import get_all, message_count, wait_for
from mailslot.testing import broker_in_thread
from management.client import ManagementApi

pytestmark = pytest.mark.timeout(60)

QUEUE = "ttl-live-q"
DEAD = "ttl-live-dead"
POLICY = {"pattern": "^ttl-live-q$", "definition": {"message-ttl": 300}, "priority": 1, "apply-to": "queues"}


def _fill(amqp_url: str, count: int) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.queue_declare(DEAD, durable=True)
        ch.queue_declare(
            QUEUE, durable=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": DEAD}
        )
        ch.confirm_delivery()
        for i in range(count):
            ch.basic_publish("", QUEUE, str(i).encode(), pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()


def _expect_expired(amqp_url: str, count: int) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        wait_for(lambda: message_count(ch, DEAD) == count, timeout=10, what="the queued messages to expire")
        assert message_count(ch, QUEUE) == 0
        got = get_all(ch, DEAD)
        assert [body for _, _, body in got] == [str(i).encode() for i in range(count)]
        death = got[0][1].headers["x-death"][0]
        assert (death["reason"], death["queue"]) == ("expired", QUEUE)
    finally:
        conn.close()


def test_a_policy_ttl_expires_messages_already_queued(tmp_path: Path) -> None:
    with broker_in_thread(store="segments", data_dir=tmp_path, http_port=0) as broker:
        _fill(broker.amqp_url, 5)
        api = ManagementApi(broker.http_url)
        api.ok("PUT", "/api/policies/%2F/ttl", POLICY)
        assert api.ok("GET", f"/api/queues/%2F/{QUEUE}")["effective_policy_definition"] == {"message-ttl": 300}
        _expect_expired(broker.amqp_url, 5)


def test_the_change_holds_across_a_restart(tmp_path: Path) -> None:
    with broker_in_thread(store="segments", data_dir=tmp_path, http_port=0) as broker:
        _fill(broker.amqp_url, 5)
        ManagementApi(broker.http_url).ok("PUT", "/api/policies/%2F/ttl", {**POLICY, "definition": {"message-ttl": 1500}})
    with broker_in_thread(store="segments", data_dir=tmp_path, http_port=0) as broker:
        _expect_expired(broker.amqp_url, 5)  # recovered with the policy; the queued rows carry no deadline


def test_the_change_holds_across_a_restart_on_postgres(postgres_settings: Any) -> None:
    config = {"store": "postgres", "postgres_dsn": postgres_settings.dsn, "postgres_schema": postgres_settings.schema,
              "node_name": postgres_settings.node_name, "http_port": 0}
    with broker_in_thread(**config) as broker:
        _fill(broker.amqp_url, 5)
        ManagementApi(broker.http_url).ok("PUT", "/api/policies/%2F/ttl", {**POLICY, "definition": {"message-ttl": 1500}})
    with broker_in_thread(**config) as broker:
        _expect_expired(broker.amqp_url, 5)
