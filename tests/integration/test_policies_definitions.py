"""Definitions carry policies: a file given at boot sets them, ``GET /api/definitions`` exports them in
RabbitMQ's shape, ``POST /api/definitions`` imports them, and a refused policy fails the import with the
key named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailslot.core.access.passwords import hash_password
from mailslot.testing import broker_in_thread
from management.client import ManagementApi

pytestmark = pytest.mark.timeout(60)

POLICY = {"vhost": "/", "name": "ttl", "pattern": "^orders", "apply-to": "queues",
          "definition": {"message-ttl": 60000, "dead-letter-exchange": "dlx"}, "priority": 4}


def test_definitions_file_at_boot_and_export(tmp_path: Path) -> None:
    path = tmp_path / "definitions.json"
    guest = {"name": "guest", "password_hash": hash_password("guest"), "tags": ["administrator"]}
    everything = {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
    path.write_text(json.dumps({"users": [guest], "vhosts": [{"name": "/"}], "permissions": [everything],
                                "policies": [POLICY],
                                "queues": [{"name": "orders.eu", "vhost": "/", "durable": True,
                                            "auto_delete": False, "arguments": {}}]}))
    with broker_in_thread(definitions=str(path)) as broker:
        api = ManagementApi(broker.http_url)
        assert api.ok("GET", "/api/policies") == [POLICY]
        assert api.ok("GET", "/api/queues/%2F/orders.eu")["policy"] == "ttl"
        assert api.ok("GET", "/api/definitions")["policies"] == [POLICY]
        per_vhost = api.ok("GET", "/api/definitions/%2F")["policies"]
        assert per_vhost == [POLICY]  # RabbitMQ keeps the vhost of policies in a vhost's file
        assert [p["name"] for p in broker.export_definitions()["policies"]] == ["ttl"]  # type: ignore[union-attr]


def test_import_through_the_api(tmp_path: Path) -> None:
    with broker_in_thread() as broker:
        api = ManagementApi(broker.http_url)
        api.ok("POST", "/api/definitions", {"policies": [POLICY]})
        assert api.ok("GET", "/api/policies/%2F/ttl") == POLICY
        bad = {**POLICY, "name": "bad", "definition": {"max-length": -1}}
        reply = api.post("/api/definitions", {"vhosts": [{"name": "not-made"}], "policies": [bad]})
        assert reply.status == 400
        assert "policy 'bad'" in reply.json["reason"] and "-1 is not a valid maximum length" in reply.json["reason"]
        assert api.get("/api/policies/%2F/bad").status == 404
        assert api.get("/api/vhosts/not-made").status == 404  # nothing of the refused file was applied
        api.ok("POST", "/api/definitions/%2F", {"policies": [{k: v for k, v in POLICY.items() if k != "vhost"}
                                                             | {"name": "scoped"}]})
        assert api.ok("GET", "/api/policies/%2F/scoped")["pattern"] == "^orders"


def test_a_refused_policy_in_the_boot_file_stops_the_start_naming_it(tmp_path: Path) -> None:
    from mailslot.config import ConfigError

    path = tmp_path / "definitions.json"
    path.write_text(json.dumps({"vhosts": [{"name": "/"}],
                                "policies": [{**POLICY, "definition": {"max-priority": 10}}]}))
    with pytest.raises(ConfigError) as refused, broker_in_thread(definitions=str(path)):
        pass
    assert "max-priority" in str(refused.value) and "not recognised policy settings" in str(refused.value)
