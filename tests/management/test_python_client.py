"""A Python management client written for RabbitMQ (pyrabbit2, on PyPI) works against mailslot unchanged:
the same calls, in a vhost of its own on each broker, give the same answers as on the reference."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pyrabbit2.api as pyrabbit2  # a test extra (pyproject.toml)
import pytest

from .client import ManagementApi

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


@pytest.fixture
def clients(apis: dict[str, ManagementApi]) -> Iterator[dict[str, Any]]:
    vhost = f"mailslot-test.pyrabbit.{uuid.uuid4().hex[:10]}"
    made = {}
    for name, api in apis.items():
        client = pyrabbit2.Client(api.base.removeprefix("http://"), "guest", "guest", timeout=30)
        client.create_vhost(vhost)
        client.set_vhost_permissions(vhost, "guest", ".*", ".*", ".*")
        client.vhost = vhost
        made[name] = client
    yield made
    for client in made.values():
        try:
            client.delete_vhost(vhost)
        except Exception:
            pass


def test_pyrabbit2_does_the_same_on_both(clients: dict[str, Any]) -> None:
    def both(call: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {name: getattr(client, call)(*args, **kwargs) for name, client in clients.items()}

    vhost = clients["mailslot"].vhost
    for name, client in clients.items():
        assert client.is_alive(vhost), name
        assert client.get_whoami()["name"] == "guest"
        assert vhost in client.get_vhost_names()
    both("create_queue", vhost, "jobs", durable=True, arguments={"x-max-length": 10})
    both("create_exchange", vhost, "events", "topic", durable=True)
    both("create_binding", vhost, "events", "jobs", "order.new")  # pyrabbit2 puts the key in the path unquoted: no "#"
    routed = both("publish", vhost, "events", "order.new", "hello")
    assert routed["mailslot"] == routed["rabbitmq"] is True
    bindings = both("get_bindings_between_exch_and_queue", vhost, "events", "jobs")
    assert bindings["mailslot"] == bindings["rabbitmq"]
    exchange = both("get_exchange", vhost, "events")
    assert {k: exchange["mailslot"][k] for k in ("name", "type", "durable")} == {
        k: exchange["rabbitmq"][k] for k in ("name", "type", "durable")}
    messages = both("get_messages", vhost, "jobs", count=5, requeue=False)
    assert messages["mailslot"] == messages["rabbitmq"] and [m["payload"] for m in messages["mailslot"]] == ["hello"]
    both("publish", vhost, "amq.default", "jobs", "again")
    both("purge_queue", vhost, "jobs")
    assert both("get_messages", vhost, "jobs", count=5) == {"mailslot": [], "rabbitmq": []}
    both("delete_binding", vhost, "events", "jobs", "order.new")
    assert both("get_queue_bindings", vhost, "jobs")["mailslot"] == both("get_queue_bindings", vhost, "jobs")["rabbitmq"]
    both("delete_queue", vhost, "jobs")
    both("delete_exchange", vhost, "events")
    assert [q["name"] for q in clients["mailslot"].get_queues(vhost)] == ["aliveness-test"]  # is_alive made it
    assert clients["mailslot"].get_cluster_name()
    assert len(clients["mailslot"].get_nodes()) == 1
