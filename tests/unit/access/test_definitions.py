"""RabbitMQ's definitions JSON in and out: a file exported by RabbitMQ 3.10 loads and gives the same users,
permissions, limits and topology; a bad file changes nothing; export -> import round-trips."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from mailslot.core.access.records import NoSuchVhost
from mailslot.core.definitions import (
    DefinitionsError,
    export_definitions,
    import_definitions,
    read_definitions_file,
)
from mailslot.core.errors import AccessRefused, NotAllowed
from mailslot.core.message import Message
from mailslot.frontends.amqp091 import AMQP_CODEC

from .conftest import World

# Exported by RabbitMQ 3.10.8 with `rabbitmqctl export_definitions` (its other vhosts and users cut out):
# user defs-user / password "p4ss", vhost defs-sample with limits, a policy, topic permissions, topology.
SAMPLE = Path(__file__).parent / "data" / "rabbitmq-3.10-definitions.json"


def sample() -> dict[str, Any]:
    return json.loads(SAMPLE.read_text())


def test_rabbitmq_export_loads_with_users_permissions_limits_and_topology(world: World) -> None:
    report = import_definitions(sample(), world.admin, world.core)
    assert report.imported == {"users": 1, "vhosts": 1, "permissions": 1, "topic_permissions": 1,
                               "exchanges": 2, "queues": 3, "bindings": 2, "vhost_limits": 1}
    assert sorted(report.skipped) == [
        "binding of exchange 'orders.internal' to exchange 'orders' in vhost 'defs-sample': "
        "no exchange 'orders.internal' in vhost 'defs-sample'",
        "global parameter 'cluster_name': not used by mailslot",
        "policy 'ttl' in vhost 'defs-sample': no policy engine was given to this import",
    ]
    user = world.access.authenticate("defs-user", "p4ss", "10.1.1.1")  # RabbitMQ's hash, RabbitMQ's password
    assert user.tags == frozenset({"monitoring", "management"})
    assert world.access.limits.of_user("defs-user") == {"max-channels": 9, "max-connections": 3}
    assert world.access.limits.of_vhost("defs-sample") == {"max-connections": 10, "max-queues": 20}
    assert world.core.vhosts["defs-sample"].max_queues == 20
    session, _ = world.login("defs-user", "p4ss", "defs-sample")
    vhost = session.vhost
    assert {n: (x.type, x.durable) for n, x in vhost.exchanges.items() if n.startswith("orders")} == {
        "orders": ("topic", True), "orders.ae": ("fanout", True)}
    assert vhost.queues["orders.eu"].arguments == {"x-dead-letter-exchange": "orders.ae", "x-max-length": 1000}
    routed = vhost.route(vhost.exchanges["orders"], "eu.de", Message("orders", "eu.de", b"\x00\x00", b"", False, AMQP_CODEC))
    assert [q.name for q in routed] == ["orders.eu"]
    with pytest.raises(AccessRefused):  # write is '^(amq\.default|out-.*)$'
        session.publish("orders", "x", Message("orders", "x", b"\x00\x00", b"", False, AMQP_CODEC), False)
    with pytest.raises(AccessRefused, match="access to topic 'someone.x' in exchange 'amq.topic'"):
        world.admin.set_permissions("defs-user", "defs-sample", ".*", ".*", ".*")
        session.publish("amq.topic", "someone.x", Message("amq.topic", "someone.x", b"\x00\x00", b"", False, AMQP_CODEC), False)
    session.publish("amq.topic", "defs-user.x", Message("amq.topic", "defs-user.x", b"\x00\x00", b"", False, AMQP_CODEC), False)


def test_export_then_import_gives_the_same_definitions(world: World) -> None:
    import_definitions(sample(), world.admin, world.core)
    world.admin.add_vhost("extra", "described", ["prod", "eu"])
    world.core.vhosts["extra"].declare_exchange("hidden", "direct", passive=False, durable=True, auto_delete=False,
                                                internal=True, arguments={"alternate-exchange": "ae"})
    exported = export_definitions(world.access, world.core)
    assert {"name": "hidden", "vhost": "extra", "type": "direct", "durable": True, "auto_delete": False,
            "internal": True, "arguments": {"alternate-exchange": "ae"}} in exported["exchanges"]
    fresh = World()
    import_definitions(json.loads(json.dumps(exported)), fresh.admin, fresh.core)
    again = export_definitions(fresh.access, fresh.core)

    def canonical(body: dict[str, Any]) -> dict[str, Any]:
        return {k: sorted(json.dumps(i, sort_keys=True) for i in v) for k, v in body.items() if isinstance(v, list)}

    assert canonical(again) == canonical(exported)
    fresh.access.authenticate("defs-user", "p4ss", "10.1.1.1")  # hashes travel unchanged


def test_a_bad_file_changes_nothing_and_names_every_problem(world: World) -> None:
    body = sample()
    body["permissions"].append({"user": "defs-user", "vhost": "nowhere", "configure": "(?!x)", "write": ".*",
                                "read": ".*"})
    body["users"].append({"name": "md", "password_hash": "short", "hashing_algorithm": "rabbit_password_hashing_md5",
                          "tags": []})
    body["exchanges"].append({"name": "weird", "vhost": "defs-sample", "type": "x-nonsense", "durable": True,
                              "auto_delete": False, "arguments": {}})
    body["queues"].append({"name": "bad", "vhost": "defs-sample", "durable": True, "auto_delete": False,
                           "arguments": {"x-max-length": "lots"}})
    body["bindings"].append({"source": "orders", "vhost": "defs-sample", "destination": "q",
                             "destination_type": "topic", "routing_key": "", "arguments": {}})
    with pytest.raises(DefinitionsError) as error:
        import_definitions(body, world.admin, world.core)
    text = "\n".join(error.value.problems)
    assert "vhost 'nowhere' does not exist" in text
    assert "backreferences and lookaround" in text
    assert "user 'md': password hash is not base64 of a rabbit_password_hashing_md5 salted hash" in text
    assert "unknown exchange type 'x-nonsense'" in text
    assert "queue 'bad' in vhost 'defs-sample'" in text
    assert "'destination_type' must be queue or exchange" in text
    assert world.access.users.get("defs-user") is None
    assert "defs-sample" not in world.core.vhosts


def test_legacy_and_sha512_hashes_log_in(world: World) -> None:
    def made(digest: Any, password: bytes) -> str:  # RabbitMQ's layout, computed without mailslot's code
        salt = b"\x01\x02\x03\x04"
        return base64.b64encode(salt + digest(salt + password).digest()).decode()

    body = {"rabbit_version": "3.5.7", "users": [
        {"name": "old", "password_hash": made(hashlib.md5, b"legacy"), "tags": "management,monitoring"},
        {"name": "big", "password_hash": made(hashlib.sha512, b"wide"),
         "hashing_algorithm": "rabbit_password_hashing_sha512", "tags": ["administrator"]},
        {"name": "nopass", "tags": []},
    ]}
    import_definitions(body, world.admin, world.core)
    assert world.access.authenticate("old", "legacy", "127.0.0.1").tags == frozenset({"management", "monitoring"})
    assert world.access.authenticate("big", "wide", "127.0.0.1").name == "big"
    with pytest.raises(AccessRefused):
        world.access.authenticate("nopass", "", "127.0.0.1")
    assert world.access.authenticate_external("nopass", "127.0.0.1").name == "nopass"


def test_queue_limit_aborts_the_import_as_rabbitmq(world: World) -> None:
    world.admin.set_vhost_limits("/", {"max-queues": 1})
    body = {"queues": [{"name": f"q{i}", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}
                       for i in range(3)]}
    with pytest.raises(DefinitionsError) as error:
        import_definitions(body, world.admin, world.core)
    assert error.value.problems == [
        'Adding 3 queue(s) to virtual host "/" would exceed the limit of 1 queue(s).\n\n'
        "This virtual host currently has 0 queue(s) defined.\n\nImport aborted!"
    ]
    assert world.core.vhosts["/"].queues == {}


def test_import_twice_keeps_what_exists(world: World) -> None:
    import_definitions(sample(), world.admin, world.core)
    report = import_definitions(sample(), world.admin, world.core)
    assert "queues" not in report.imported
    assert any("orders.eu" in line and "exists already" in line for line in report.skipped)


def test_vhost_scoped_import_and_export(world: World) -> None:
    body = {"queues": [{"name": "scoped", "durable": True, "auto_delete": False, "arguments": {}}],
            "exchanges": [{"name": "sx", "type": "fanout", "durable": True, "auto_delete": False, "arguments": {}}],
            "bindings": [{"source": "sx", "destination": "scoped", "destination_type": "queue", "routing_key": "",
                          "arguments": {}}],
            "users": [{"name": "ignored", "password_hash": "", "tags": []}]}
    import_definitions(body, world.admin, world.core, vhost="/")
    assert "scoped" in world.core.vhosts["/"].queues
    assert world.access.users.get("ignored") is None  # a vhost-scoped document holds no users
    exported = export_definitions(world.access, world.core, vhost="/")
    assert "users" not in exported
    assert exported["queues"] == [{"name": "scoped", "durable": True, "auto_delete": False, "arguments": {},
                                   "type": "classic"}]
    with pytest.raises(DefinitionsError, match="vhost 'elsewhere' does not exist"):
        import_definitions(body, world.admin, world.core, vhost="elsewhere")


def test_policies_go_to_the_policy_engine_when_there_is_one(world: World) -> None:
    class Policies:
        def __init__(self) -> None:
            self.set: list[tuple[Any, ...]] = []

        def set_policy(self, *args: Any) -> None:
            self.set.append(args)

        def list_policies(self) -> list[dict[str, Any]]:
            return [{"vhost": "defs-sample", "name": "ttl"}]

    policies = Policies()
    report = import_definitions(sample(), world.admin, world.core, policies)
    assert policies.set == [("defs-sample", "ttl", "^ttl\\.", {"message-ttl": 60000}, 3, "queues")]
    assert report.imported["policies"] == 1
    assert export_definitions(world.access, world.core, policies)["policies"] == [{"vhost": "defs-sample", "name": "ttl"}]


def test_reading_files(tmp_path: Path) -> None:
    with pytest.raises(DefinitionsError, match="No such file"):
        read_definitions_file(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DefinitionsError, match="not valid JSON"):
        read_definitions_file(broken)
    assert read_definitions_file(SAMPLE)["rabbitmq_version"] == "3.10.8"


def test_structural_problems_are_reported_not_raised(world: World) -> None:
    with pytest.raises(DefinitionsError, match="must be a JSON object"):
        import_definitions([1, 2], world.admin, world.core)
    body = copy.deepcopy(sample())
    body["users"] = "nope"
    body["vhosts"] = [42]
    with pytest.raises(DefinitionsError) as error:
        import_definitions(body, world.admin, world.core)
    assert "'users' must be a list" in error.value.problems
    assert "vhosts[0]: expected an object" in error.value.problems


def test_imported_limits_apply(world: World) -> None:
    import_definitions(sample(), world.admin, world.core)
    world.admin.set_vhost_limits("defs-sample", {"max-connections": 0})
    with pytest.raises(NotAllowed, match="connection limit \\(0\\) is reached"):
        world.login("defs-user", "p4ss", "defs-sample")
    with pytest.raises(NoSuchVhost):
        world.admin.set_vhost_limits("none", {})
