"""Policies are durable: after a graceful restart and after a kill -9, the policies and operator policies set
through the management API are still there, a queue still reports them, and their limits still hold on the
queue recovered from the store. A deleted vhost's policies stay deleted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pika
import pytest

from helpers import message_count
from mailslot.bench.broker_process import BrokerProcess
from mailslot.testing import broker_in_thread
from management.client import ManagementApi

pytestmark = pytest.mark.timeout(90)

QUEUE = "policies-restart"
POLICY = {"pattern": "^policies-", "definition": {"max-length": 3}, "priority": 2, "apply-to": "queues"}
OPERATOR = {"pattern": "^policies-", "definition": {"message-ttl": 600000}, "apply-to": "all", "priority": 0}


def _setup(amqp_url: str, api: ManagementApi) -> None:
    api.ok("PUT", "/api/vhosts/doomed")
    api.ok("PUT", "/api/policies/doomed/p", POLICY)
    api.ok("DELETE", "/api/vhosts/doomed")
    api.ok("PUT", "/api/policies/%2F/limit", POLICY)
    api.ok("PUT", "/api/operator-policies/%2F/ttl", OPERATOR)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.queue_declare(QUEUE, durable=True)
        ch.confirm_delivery()
        for i in range(10):
            ch.basic_publish("", QUEUE, str(i).encode(), pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()


def _check(amqp_url: str, api: ManagementApi) -> None:
    assert api.ok("GET", "/api/policies/%2F/limit") == {"vhost": "/", "name": "limit", **POLICY}
    assert api.ok("GET", "/api/operator-policies/%2F/ttl") == {"vhost": "/", "name": "ttl", **OPERATOR}
    assert api.get("/api/policies/doomed/p").status == 404
    policies: Any = api.ok("GET", "/api/policies")
    assert [(p["vhost"], p["name"]) for p in policies] == [("/", "limit")]
    queue = api.ok("GET", f"/api/queues/%2F/{QUEUE}")
    assert (queue["policy"], queue["operator_policy"]) == ("limit", "ttl")
    assert queue["effective_policy_definition"] == {"max-length": 3, "message-ttl": 600000}
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", QUEUE, b"after", pika.BasicProperties(delivery_mode=2))
        assert message_count(ch, QUEUE) == 3  # the recovered queue runs with the policy's limit
    finally:
        conn.close()


def test_policies_survive_a_graceful_restart(tmp_path: Path) -> None:
    with broker_in_thread(store="segments", data_dir=tmp_path, http_port=0) as broker:
        _setup(broker.amqp_url, ManagementApi(broker.http_url))
    with broker_in_thread(store="segments", data_dir=tmp_path, http_port=0) as broker:
        _check(broker.amqp_url, ManagementApi(broker.http_url))


def test_policies_survive_a_restart_on_postgres(postgres_settings: Any) -> None:
    config = {"store": "postgres", "postgres_dsn": postgres_settings.dsn, "postgres_schema": postgres_settings.schema,
              "node_name": postgres_settings.node_name, "http_port": 0}
    with broker_in_thread(**config) as broker:
        _setup(broker.amqp_url, ManagementApi(broker.http_url))
    with broker_in_thread(**config) as broker:
        _check(broker.amqp_url, ManagementApi(broker.http_url))


@pytest.mark.slow
def test_policies_survive_kill_9(tmp_path: Path) -> None:
    broker = BrokerProcess(store="segments", data_dir=tmp_path / "data")
    broker.start()
    try:
        _setup(broker.url, ManagementApi(broker.http_url))
        broker.kill()
        broker.start()
        _check(broker.url, ManagementApi(broker.http_url))
    finally:
        broker.stop()
