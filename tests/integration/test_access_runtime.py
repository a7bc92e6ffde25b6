"""Vhosts and users made at runtime are fully usable over AMQP (timers included), isolated from each
other, and definitions given at boot are there when the broker starts."""

from __future__ import annotations

import json
from pathlib import Path

import pika
import pytest

from helpers import get_when_there, outcome
from mailslot.config import ConfigError
from mailslot.testing import broker_in_thread

pytestmark = pytest.mark.timeout(60)


def test_a_vhost_made_at_runtime_is_isolated_and_runs_its_timers() -> None:
    with broker_in_thread() as broker:
        admin = broker.access_admin
        broker.run_threadsafe(lambda: (admin.add_vhost("shop"), admin.set_permissions("guest", "shop", ".*", ".*", ".*")))
        shop = pika.BlockingConnection(pika.URLParameters(broker.amqp_url.replace("%2F", "shop")))
        ch = shop.channel()
        ch.queue_declare("orders")
        ch.exchange_declare("later", "x-delayed-message", arguments={"x-delayed-type": "direct"})
        ch.queue_bind("orders", "later", "o")
        ch.basic_publish("later", "o", b"delayed", pika.BasicProperties(headers={"x-delay": 200}))
        _method, _props, body = get_when_there(ch, "orders")  # released by the broker's delay timer
        assert body == b"delayed"
        root = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
        assert outcome(lambda: root.channel().queue_declare("orders", passive=True))[:2] == ("channel", 404)
        root.close()
        shop.close()


def test_definitions_at_boot(tmp_path: Path) -> None:
    definitions = tmp_path / "definitions.json"
    definitions.write_text(json.dumps({
        "users": [{"name": "app", "password": "s3cret", "tags": ["management"]}],
        "vhosts": [{"name": "prod"}],
        "permissions": [{"user": "app", "vhost": "prod", "configure": ".*", "write": ".*", "read": ".*"}],
        "queues": [{"name": "jobs", "vhost": "prod", "durable": True, "auto_delete": False, "arguments": {}}],
    }))
    with broker_in_thread(store="sqlite", data_dir=tmp_path / "data", definitions=definitions) as broker:
        url = f"amqp://app:s3cret@127.0.0.1:{broker.amqp_port}/prod"
        conn = pika.BlockingConnection(pika.URLParameters(url))
        assert conn.channel().queue_declare("jobs", passive=True).method.queue == "jobs"
        conn.close()
        # no default user when definitions are loaded (as RabbitMQ)
        assert broker.run_threadsafe(lambda: broker.access.users.get("guest")) is None


def test_a_bad_definitions_file_stops_the_start(tmp_path: Path) -> None:
    definitions = tmp_path / "definitions.json"
    definitions.write_text(json.dumps({"permissions": [{"user": "ghost", "vhost": "/", "configure": ".*",
                                                        "write": ".*", "read": ".*"}]}))
    with pytest.raises(ConfigError, match="cannot be imported: .*user 'ghost' does not exist"), \
            broker_in_thread(definitions=definitions):
        pass
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"), broker_in_thread(definitions=tmp_path / "broken.json"):
        pass


def test_default_user_for_containers() -> None:
    with broker_in_thread(default_user="admin", default_pass="pw") as broker:
        url = broker.amqp_url.replace("guest:guest", "admin:pw")
        pika.BlockingConnection(pika.URLParameters(url)).close()
        assert broker.run_threadsafe(lambda: [u.name for u in broker.access_admin.list_users()]) == ["admin"]
