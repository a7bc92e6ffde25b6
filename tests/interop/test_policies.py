"""A policy set through the management API changes a live queue at once, the same on mailslot and on the
reference RabbitMQ 3.10: lowering ``max-length`` drops the head (dead-lettering it when the queue has a
dead-letter exchange), an operator policy caps a queue's own argument, and clearing the policy lifts the
limit. Clients speak AMQP through pika; policies go through each broker's HTTP API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pika
import pytest

from conftest import BROKERS, _rabbitmq_url_or_skip, _service_missing
from helpers import drain, get_all, message_count, wait_for
from management.client import RABBITMQ_API, ManagementApi
from management.conftest import rabbitmq_management_reachable

pytestmark = [pytest.mark.timeout(120)]


@dataclass
class Side:
    name: str
    url: str
    api: ManagementApi


@pytest.fixture(params=BROKERS)
def side(request: pytest.FixtureRequest) -> Iterator[Side]:
    if request.param == "rabbitmq":
        url = _rabbitmq_url_or_skip()
        if not rabbitmq_management_reachable():
            _service_missing("RabbitMQ's management API is not reachable on 127.0.0.1:15672")
        yield Side("rabbitmq", url, ManagementApi(RABBITMQ_API, name="rabbitmq"))
        return
    from mailslot.testing import broker_in_thread

    with broker_in_thread() as broker:
        yield Side("mailslot", broker.amqp_url, ManagementApi(broker.http_url, name="mailslot"))


@pytest.fixture
def names(side: Side) -> Iterator[dict[str, str]]:
    """Unique names for this test; queues and policies deleted afterwards."""
    tag = uuid.uuid4().hex[:10]
    made = {key: f"policies-live.{key}.{tag}" for key in ("queue", "dlq", "policy", "operator")}
    yield made
    for key in ("queue", "dlq"):
        side.api.delete(f"/api/queues/%2F/{quote(made[key], safe='')}")
    side.api.delete(f"/api/policies/%2F/{quote(made['policy'], safe='')}")
    side.api.delete(f"/api/operator-policies/%2F/{quote(made['operator'], safe='')}")


def _publish(url: str, queue: str, bodies: list[bytes], arguments: dict[str, object] | None = None) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True, arguments=arguments or {})
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()


def _policy(side: Side, kind: str, name: str, pattern: str, definition: dict[str, object]) -> None:
    side.api.ok("PUT", f"/api/{kind}/%2F/{quote(name, safe='')}",
                {"pattern": pattern, "definition": definition, "apply-to": "queues"})


def _count(url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return message_count(conn.channel(), queue)
    finally:
        conn.close()


def test_max_length_policy_drops_the_head_of_a_live_queue_and_clearing_lifts_it(
    side: Side, names: dict[str, str]
) -> None:
    queue = names["queue"]
    _publish(side.url, queue, [str(i).encode() for i in range(10)])
    assert _count(side.url, queue) == 10
    _policy(side, "policies", names["policy"], f"^{queue}$", {"max-length": 3})
    wait_for(lambda: _count(side.url, queue) == 3, timeout=15, what=lambda: f"{side.name}: {_count(side.url, queue)}")
    conn = pika.BlockingConnection(pika.URLParameters(side.url))
    try:
        ch = conn.channel()
        assert drain(ch, queue) == [b"7", b"8", b"9"]  # drop-head: the oldest went
        side.api.ok("DELETE", f"/api/policies/%2F/{quote(names['policy'], safe='')}")
        ch.confirm_delivery()

        def lifted() -> bool:  # RabbitMQ applies a cleared policy asynchronously: publish until it holds 5
            ch.queue_purge(queue)
            for i in range(5):
                ch.basic_publish("", queue, f"n{i}".encode())
            return message_count(ch, queue) == 5

        wait_for(lifted, timeout=15, interval=0.2, what=f"{side.name}: the limit lifted")
    finally:
        conn.close()


def test_lowered_limit_dead_letters_the_excess(side: Side, names: dict[str, str]) -> None:
    queue, dlq = names["queue"], names["dlq"]
    _publish(side.url, dlq, [])
    _publish(side.url, queue, [str(i).encode() for i in range(5)],
             {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    _policy(side, "policies", names["policy"], f"^{queue}$", {"max-length": 2})
    wait_for(lambda: _count(side.url, dlq) == 3, timeout=15, what=lambda: f"{side.name}: dlq {_count(side.url, dlq)}")
    conn = pika.BlockingConnection(pika.URLParameters(side.url))
    try:
        ch = conn.channel()
        dead = get_all(ch, dlq)
        assert [body for _m, _p, body in dead] == [b"0", b"1", b"2"]
        assert {p.headers["x-death"][0]["reason"] for _m, p, _b in dead} == {"maxlen"}
        assert drain(ch, queue) == [b"3", b"4"]
    finally:
        conn.close()


def test_operator_policy_caps_the_queues_own_argument(side: Side, names: dict[str, str]) -> None:
    queue = names["queue"]
    _publish(side.url, queue, [str(i).encode() for i in range(6)], {"x-max-length": 5})
    assert _count(side.url, queue) == 5
    _policy(side, "policies", names["policy"], f"^{queue}$", {"max-length": 100})  # the argument's 5 wins
    _policy(side, "operator-policies", names["operator"], f"^{queue}$", {"max-length": 2})  # lower: wins
    wait_for(lambda: _count(side.url, queue) == 2, timeout=15, what=lambda: f"{side.name}: {_count(side.url, queue)}")
    conn = pika.BlockingConnection(pika.URLParameters(side.url))
    try:
        assert drain(conn.channel(), queue) == [b"4", b"5"]
    finally:
        conn.close()
