"""``mailslot ctl`` (docs/ctl.md) run as a user runs it (typer's CliRunner on the real ``mailslot`` app),
against a mailslot broker and against the reference RabbitMQ's management API on 127.0.0.1:15672: the same
commands on both, the resulting state read back through each API and compared. Offline mode
(``--data-dir``) on a stopped broker's data directory, then a pika login as the user it added."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest
from pika.exceptions import AMQPConnectionError, ProbableAccessDeniedError
from typer.testing import CliRunner

from conftest import _service_missing
from helpers import rabbitmq_management_reachable, wait_for
from mailslot.cli.main import app

RABBITMQ_API = "http://guest:guest@127.0.0.1:15672"
RABBITMQ_AMQP_PORT = 5672


@dataclass
class Target:
    """One broker as the tests drive it: its API URL with credentials (what ``--url`` gets) and AMQP port."""

    name: str
    url: str
    amqp_port: int
    created_users: list[str] = field(default_factory=list)
    created_vhosts: list[str] = field(default_factory=list)

    def ctl(self, *args: str, input: str | None = None) -> Any:
        result = CliRunner().invoke(app, ["ctl", "--url", self.url, *args], input=input)
        return result

    def ok(self, *args: str, input: str | None = None) -> Any:
        result = self.ctl(*args, input=input)
        assert result.exit_code == 0, f"{self.name}: ctl {' '.join(args)} -> {result.exit_code}: {result.stderr}"
        return result

    def api(self, method: str, path: str, body: Any = None) -> Any:
        parts = urllib.parse.urlsplit(self.url)
        auth = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
        request = urllib.request.Request(
            f"http://{parts.hostname}:{parts.port}/api{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise
        return json.loads(payload) if payload.strip() else None

    def cleanup(self) -> None:
        for user in self.created_users:
            self.api("DELETE", f"/users/{urllib.parse.quote(user, safe='')}")
        for vhost in self.created_vhosts:
            self.api("DELETE", f"/vhosts/{urllib.parse.quote(vhost, safe='')}")


@pytest.fixture
def mailslot_target() -> Iterator[Target]:
    from mailslot.testing import broker_in_thread

    with broker_in_thread() as broker:
        url = broker.http_url.replace("http://", "http://guest:guest@")
        target = Target("mailslot", url, broker.amqp_port)
        target.broker = broker  # type: ignore[attr-defined]
        yield target


@pytest.fixture
def rabbitmq_target() -> Iterator[Target]:
    if not rabbitmq_management_reachable():
        _service_missing("RabbitMQ's management API is not reachable on 127.0.0.1:15672")
    target = Target("rabbitmq", RABBITMQ_API, RABBITMQ_AMQP_PORT)
    yield target
    target.cleanup()


@pytest.fixture(params=["mailslot", pytest.param("rabbitmq", marks=pytest.mark.interop)])
def target(request: pytest.FixtureRequest) -> Target:
    return request.getfixturevalue(f"{request.param}_target")


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"ctl_user_{tag}", f"ctl_vhost_{tag}"


def _login(port: int, user: str, password: str, vhost: str) -> bool:
    params = pika.ConnectionParameters("127.0.0.1", port, vhost,
                                       pika.PlainCredentials(user, password), connection_attempts=1)
    try:
        connection = pika.BlockingConnection(params)
    except (ProbableAccessDeniedError, AMQPConnectionError):
        return False
    connection.close()
    return True


def _access_state(target: Target, user: str, vhost: str) -> dict[str, Any]:
    """What the commands changed, read back through the API, in a form both brokers answer alike."""
    u, v = urllib.parse.quote(user, safe=""), urllib.parse.quote(vhost, safe="")
    record = target.api("GET", f"/users/{u}")
    permission = target.api("GET", f"/permissions/{v}/{u}")
    topic = target.api("GET", f"/topic-permissions/{v}/{u}") or []
    vhost_limits = target.api("GET", f"/vhost-limits/{v}") or []
    user_limits = target.api("GET", f"/user-limits/{u}") or []
    vhost_record = target.api("GET", f"/vhosts/{v}")
    return {
        "user": None if record is None else sorted(record["tags"] if isinstance(record["tags"], list)
                                                   else [t for t in record["tags"].split(",") if t]),
        "vhost": None if vhost_record is None else vhost_record.get("description"),
        "permission": None if permission is None else [permission[k] for k in ("configure", "write", "read")],
        "topic": sorted((t["exchange"], t["write"], t["read"]) for t in topic),
        "vhost_limits": vhost_limits[0]["value"] if vhost_limits else {},
        "user_limits": user_limits[0]["value"] if user_limits else {},
    }


def _access_scenario(target: Target) -> dict[str, Any]:
    user, vhost = _names()
    target.created_users.append(user)
    target.created_vhosts.append(vhost)
    target.ok("add_user", user, "s3cret")
    target.ok("set_user_tags", user, "monitoring", "policymaker")
    target.ok("add_vhost", vhost, "--description", "made by ctl")
    target.ok("set_permissions", "-p", vhost, user, "^cfg", "^wr", ".*")
    target.ok("set_topic_permissions", "-p", vhost, user, "amq.topic", "^a\\.", "^b\\.")
    target.ok("set_vhost_limits", "-p", vhost, '{"max-connections": 5}')
    target.ok("set_vhost_limits", "-p", vhost, '{"max-queues": 7}')  # replaces: max-connections goes
    target.ok("set_user_limits", user, '{"max-channels": 3}')
    target.ok("set_user_limits", user, '{"max-connections": 4}')  # merges
    state: dict[str, Any] = {"after_set": _access_state(target, user, vhost)}
    state["login"] = _login(target.amqp_port, user, "s3cret", vhost)
    target.ok("change_password", user, input="n3w\n")  # read from stdin, as rabbitmqctl asks for it
    state["old_password"] = _login(target.amqp_port, user, "s3cret", vhost)
    state["new_password"] = _login(target.amqp_port, user, "n3w", vhost)
    listed = json.loads(target.ok("list_users", "--format", "json").stdout)
    state["listed"] = [row["tags"] for row in listed if row["user"] == user]
    permissions = json.loads(target.ok("list_permissions", "-p", vhost, "--format", "json").stdout)
    state["listed_permissions"] = [{k: v for k, v in row.items() if k != "user"} for row in permissions if row["user"] == user]
    target.ok("clear_topic_permissions", "-p", vhost, user)
    target.ok("clear_permissions", "-p", vhost, user)
    target.ok("clear_vhost_limits", "-p", vhost)
    target.ok("clear_user_limits", user, "max-channels")
    state["after_clear"] = _access_state(target, user, vhost)
    target.ok("delete_user", user)
    target.ok("delete_vhost", vhost)
    state["after_delete"] = _access_state(target, user, vhost)
    return state


@pytest.mark.interop
def test_access_commands_leave_the_same_state_on_both_brokers(
    mailslot_target: Target, rabbitmq_target: Target
) -> None:
    mailslot, rabbitmq = _access_scenario(mailslot_target), _access_scenario(rabbitmq_target)
    assert mailslot == rabbitmq
    # And that state is the one asked for (both brokers wrong alike would pass the comparison).
    assert mailslot["after_set"] == {
        "user": ["monitoring", "policymaker"],
        "vhost": "made by ctl",
        "permission": ["^cfg", "^wr", ".*"],
        "topic": [("amq.topic", "^a\\.", "^b\\.")],
        "vhost_limits": {"max-queues": 7},
        "user_limits": {"max-channels": 3, "max-connections": 4},
    }
    assert (mailslot["login"], mailslot["old_password"], mailslot["new_password"]) == (True, False, True)
    assert mailslot["listed"] == [["monitoring", "policymaker"]]
    assert mailslot["listed_permissions"] == [{"configure": "^cfg", "write": "^wr", "read": ".*"}]
    assert mailslot["after_clear"]["permission"] is None
    assert mailslot["after_clear"]["topic"] == []
    assert mailslot["after_clear"]["vhost_limits"] == {}
    assert mailslot["after_clear"]["user_limits"] == {"max-connections": 4}
    assert mailslot["after_delete"]["user"] is None and mailslot["after_delete"]["vhost"] is None


def _refusals(target: Target) -> dict[str, Any]:
    user, vhost = _names()
    target.created_users.append(user)
    target.ok("add_user", user, "pw")
    runs = {
        "add_existing_user": target.ctl("add_user", user, "pw"),
        "delete_missing_user": target.ctl("delete_user", user + "_missing"),
        "permissions_in_missing_vhost": target.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*"),
        "tags_of_missing_user": target.ctl("set_user_tags", user + "_missing", "administrator"),
        "bad_limits": target.ctl("set_vhost_limits", '{"max-queues": "ten"}'),
        "unknown_limit": target.ctl("set_user_limits", user, '{"max-bananas": 1}'),
        "close_missing_connection": target.ctl("close_connection", "no such connection", "bye"),
    }
    wrong_credentials = CliRunner().invoke(app, ["ctl", "--url", target.url, "--password", "wrong", "list_users"])
    runs["wrong_password"] = wrong_credentials
    for name, result in runs.items():
        lines = result.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("error: "), (target.name, name, result.stderr)
        assert "Traceback" not in result.output + result.stderr, (target.name, name)
    return {name: result.exit_code for name, result in runs.items()}


@pytest.mark.interop
def test_refusals_are_one_line_with_the_same_exit_codes(mailslot_target: Target, rabbitmq_target: Target) -> None:
    mailslot, rabbitmq = _refusals(mailslot_target), _refusals(rabbitmq_target)
    assert mailslot == rabbitmq
    assert all(code != 0 for code in mailslot.values()), mailslot


def test_unreachable_broker_is_one_line_and_exit_69() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(app, ["ctl", "--url", f"http://guest:guest@127.0.0.1:{port}", "list_vhosts"])
    assert result.exit_code == 69
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot reach the management API")


def test_credentials_from_environment(mailslot_target: Target) -> None:
    bare = mailslot_target.url.replace("guest:guest@", "nobody:nothing@")
    refused = CliRunner().invoke(app, ["ctl", "--url", bare, "list_users"])
    assert refused.exit_code == 1 and "401" in refused.stderr
    env = {"MAILSLOT_CTL_USERNAME": "guest", "MAILSLOT_CTL_PASSWORD": "guest", "MAILSLOT_URL": bare}
    result = CliRunner().invoke(app, ["ctl", "list_users", "--format", "json"], env=env)
    assert result.exit_code == 0, result.stderr
    assert {"user": "guest", "tags": ["administrator"]} in json.loads(result.stdout)


def test_list_tables(mailslot_target: Target) -> None:
    result = mailslot_target.ok("list_vhosts")
    assert "Listing vhosts" in result.stderr  # progress on stderr, the table alone on stdout
    assert "description" in result.stdout and "/" in result.stdout
    quiet = CliRunner().invoke(app, ["ctl", "--url", mailslot_target.url, "-q", "list_users"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_amqp_url_names_the_api_on_its_http_port(mailslot_target: Target) -> None:
    """The one --url convention of every mailslot command: the AMQP URL, the API on --http-port."""
    broker = mailslot_target.broker  # type: ignore[attr-defined]
    args = ["ctl", "--url", broker.amqp_url, "--http-port", str(broker.http_port), "add_vhost", "ctl-by-amqp-url"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "ctl-by-amqp-url" in broker.access.vhosts
    wrong_port = CliRunner().invoke(app, ["ctl", "--url", broker.amqp_url, "--http-port", "9", "list_vhosts"])
    assert wrong_port.exit_code == 69


def test_https_api_verified_with_cacert(tmp_path: Path) -> None:
    from mailslot.testing import broker_in_thread
    from mailslot.testing.certificates import CertificateAuthority

    ca = CertificateAuthority("ctl test CA")
    server = ca.issue("localhost", server=True).write(tmp_path, "server")
    ca_file = ca.write(tmp_path)
    with broker_in_thread(http_tls_port=0, tls_cert=server.cert, tls_key=server.key) as broker:
        url = f"https://guest:guest@127.0.0.1:{broker.https_port}"
        unverified = CliRunner().invoke(app, ["ctl", "--url", url, "list_vhosts"])
        assert unverified.exit_code == 69 and "--cacert" in unverified.stderr
        verified = CliRunner().invoke(app, ["ctl", "--url", url, "--cacert", str(ca_file), "add_vhost", "ctl-tls"])
        assert verified.exit_code == 0, verified.stderr
        assert "ctl-tls" in broker.access.vhosts
        amqps = CliRunner().invoke(app, ["ctl", "--url", "amqps://guest:guest@127.0.0.1/%2F", "--http-port",
                                         str(broker.https_port), "list_vhosts", "--format", "json"],
                                   env={"MAILSLOT_CTL_CACERT": str(ca_file)})
        assert amqps.exit_code == 0, amqps.stderr
        assert "ctl-tls" in {row["name"] for row in json.loads(amqps.stdout)}


def test_definitions_round_trip(target: Target, tmp_path: Path) -> None:
    user, vhost = _names()
    target.created_users.append(user)
    target.created_vhosts.append(vhost)
    definitions = {
        "users": [{"name": user, "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256",
                   "tags": ["management"]}],
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}],
        "queues": [{"name": "ctl-orders", "vhost": vhost, "durable": True, "auto_delete": False, "arguments": {}}],
        "exchanges": [], "bindings": [],
    }
    source = tmp_path / "in.json"
    source.write_text(json.dumps(definitions))
    target.ok("import_definitions", str(source))
    queue = target.api("GET", f"/queues/{urllib.parse.quote(vhost, safe='')}/ctl-orders")
    assert queue is not None and queue["durable"] is True
    exported = tmp_path / "out.json"
    target.ok("export_definitions", str(exported))
    data = json.loads(exported.read_text())
    assert any(u["name"] == user and u["tags"] == ["management"] for u in data["users"])
    assert any(q["name"] == "ctl-orders" and q["vhost"] == vhost for q in data["queues"])
    to_stdout = json.loads(target.ok("-q", "export_definitions", "-p", vhost, "-").stdout)
    assert [q["name"] for q in to_stdout["queues"]] == ["ctl-orders"]


def test_close_connection(target: Target) -> None:
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", target.amqp_port, credentials=pika.PlainCredentials("guest", "guest"),
        client_properties={"connection_name": "ctl-test"}))
    try:
        local_port = connection._impl._transport._sock.getsockname()[1]  # how the broker names it

        def listed() -> str | None:  # RabbitMQ lists a connection once its stats timer has run
            rows = json.loads(target.ok("list_connections", "--format", "json").stdout)
            return next((row["name"] for row in rows if row["peer_port"] == local_port), None)

        name = wait_for(listed, timeout=15, what="the connection in list_connections")
        target.ok("close_connection", str(name), "closed by ctl test")

        def closed() -> bool:
            try:
                connection.process_data_events(time_limit=0.1)
            except pika.exceptions.ConnectionClosedByBroker as error:
                return error.reply_code == 320 and "closed by ctl test" in error.reply_text
            return False

        assert wait_for(closed, what="320 CONNECTION_FORCED with the reason")
    finally:
        if connection.is_open:
            connection.close()


def _policy_scenario(target: Target) -> dict[str, Any]:
    _, vhost = _names()
    target.created_vhosts.append(vhost)
    run = target.ok
    run("add_vhost", vhost)
    run("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    run("set_policy", "-p", vhost, "--priority", "2", "--apply-to", "queues", "ctl-limit", "^orders\\.",
        '{"max-length": 10}')
    run("set_operator_policy", "-p", vhost, "ctl-cap", ".*", '{"max-length": 100}')
    state: dict[str, Any] = {
        "policies": [{k: v for k, v in p.items() if k != "vhost"}
                     for p in json.loads(run("list_policies", "-p", vhost, "--format", "json").stdout)],
        "operator": [{k: v for k, v in p.items() if k != "vhost"}
                     for p in json.loads(run("list_operator_policies", "-p", vhost, "--format", "json").stdout)],
    }
    bad = target.ctl("set_policy", "-p", vhost, "ctl-bad", "(", '{"max-length": 1}')
    state["bad_pattern"] = (bad.exit_code, bad.stderr.strip().splitlines()[-1].startswith("error: "))
    unknown = target.ctl("set_policy", "-p", vhost, "ctl-bad", ".*", '{"max-bananas": 1}')
    state["unknown_key"] = unknown.exit_code
    not_json = target.ctl("set_policy", "-p", vhost, "ctl-bad", ".*", "{max-length: 1}")
    state["not_json"] = (not_json.exit_code, "not JSON" in not_json.stderr)
    run("clear_policy", "-p", vhost, "ctl-limit")
    run("clear_operator_policy", "-p", vhost, "ctl-cap")
    state["after_clear"] = (json.loads(run("list_policies", "-p", vhost, "--format", "json").stdout),
                            json.loads(run("list_operator_policies", "-p", vhost, "--format", "json").stdout))
    state["clear_missing"] = target.ctl("clear_policy", "-p", vhost, "ctl-limit").exit_code
    run("delete_vhost", vhost)
    return state


@pytest.mark.interop
def test_policy_commands_on_both_brokers(mailslot_target: Target, rabbitmq_target: Target) -> None:
    mailslot, rabbitmq = _policy_scenario(mailslot_target), _policy_scenario(rabbitmq_target)
    assert mailslot == rabbitmq
    assert mailslot["policies"] == [{"name": "ctl-limit", "pattern": "^orders\\.", "apply-to": "queues",
                                     "definition": {"max-length": 10}, "priority": 2}]
    assert mailslot["operator"] == [{"name": "ctl-cap", "pattern": ".*", "apply-to": "queues",
                                     "definition": {"max-length": 100}, "priority": 0}]
    assert mailslot["bad_pattern"] == (1, True) and mailslot["unknown_key"] == 1
    assert mailslot["not_json"] == (1, True)
    assert mailslot["after_clear"] == ([], [])
    assert mailslot["clear_missing"] == 1


# ---- offline mode --------------------------------------------------------------------------------


def _offline(data_dir: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["ctl", "--data-dir", str(data_dir), *args])


@pytest.mark.parametrize("store", ["segments", "sqlite"])
def test_offline_user_logs_in_after_start(tmp_path: Path, store: str) -> None:
    from mailslot.testing import broker_in_thread

    data_dir = tmp_path / "data"
    with broker_in_thread(store=store, data_dir=data_dir) as broker:  # a data directory as a broker leaves it
        running = _offline(data_dir, "add_user", "ctl-offline", "pw")
        assert running.exit_code == 1  # a broker holds it
        assert running.stderr.strip().splitlines() == [running.stderr.strip()]
        assert "in use by a running broker" in running.stderr
        assert not _login(broker.amqp_port, "ctl-offline", "pw", "/")

    for args in (
        ("add_user", "ctl-offline", "pw"),
        ("set_user_tags", "ctl-offline", "management"),
        ("add_vhost", "ctl-offline-vh"),
        ("set_permissions", "-p", "ctl-offline-vh", "ctl-offline", ".*", ".*", ".*"),
        ("set_user_limits", "ctl-offline", '{"max-connections": 2}'),
        ("set_policy", "-p", "ctl-offline-vh", "--apply-to", "queues", "ctl-len", "^orders\\.", '{"max-length": 1}'),
        ("set_operator_policy", "-p", "ctl-offline-vh", "ctl-cap", ".*", '{"max-length": 100}'),
        ("set_policy", "-p", "ctl-offline-vh", "ctl-gone", ".*", '{"message-ttl": 1000}'),
        ("clear_policy", "-p", "ctl-offline-vh", "ctl-gone"),
    ):
        result = _offline(data_dir, *args)
        assert result.exit_code == 0, (args, result.stderr)
    listed = json.loads(_offline(data_dir, "list_users", "--format", "json").stdout)
    assert {"user": "ctl-offline", "tags": ["management"]} in listed
    assert _offline(data_dir, "add_user", "ctl-offline", "pw").exit_code == 1  # already exists
    policies = json.loads(_offline(data_dir, "list_policies", "-p", "ctl-offline-vh", "--format", "json").stdout)
    assert [(p["name"], p["definition"]) for p in policies] == [("ctl-len", {"max-length": 1})]
    bad = _offline(data_dir, "set_policy", "-p", "ctl-offline-vh", "ctl-bad", ".*", '{"max-priority": 5}')
    assert bad.exit_code == 1 and "max-priority" in bad.stderr  # RabbitMQ refuses it in policies
    assert _offline(data_dir, "clear_policy", "-p", "ctl-offline-vh", "ctl-gone").exit_code == 1
    refused = _offline(data_dir, "list_connections")
    assert refused.exit_code == 1 and "needs a running broker" in refused.stderr
    missing = _offline(data_dir, "set_permissions", "-p", "no-such-vhost", "ctl-offline", ".*", ".*", ".*")
    assert missing.exit_code == 1 and "vhost 'no-such-vhost' does not exist" in missing.stderr
    assert _offline(data_dir, "add_user", "ctl-gone", "pw").exit_code == 0
    assert _offline(data_dir, "change_password", "ctl-gone", "pw2").exit_code == 0
    assert _offline(data_dir, "delete_user", "ctl-gone").exit_code == 0

    with broker_in_thread(store=store, data_dir=data_dir) as broker:
        assert _login(broker.amqp_port, "ctl-offline", "pw", "ctl-offline-vh")
        assert not _login(broker.amqp_port, "ctl-offline", "wrong", "ctl-offline-vh")
        assert broker.access.limits.user_limit("ctl-offline", "max-connections") == 2
        assert broker.access.users.get("ctl-gone") is None
        # The policy set offline is in force: max-length 1 keeps one of three messages.
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", broker.amqp_port, "ctl-offline-vh", pika.PlainCredentials("ctl-offline", "pw")))
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("orders.new", durable=True)
        for body in (b"1", b"2", b"3"):
            channel.basic_publish("", "orders.new", body, pika.BasicProperties(delivery_mode=2))
        assert channel.queue_declare("orders.new", passive=True).method.message_count == 1
        connection.close()


def test_offline_refuses_what_is_not_a_data_directory(tmp_path: Path) -> None:
    result = _offline(tmp_path / "nothing-here", "list_users")
    assert result.exit_code != 0
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_offline_delete_vhost_with_queues_needs_the_broker(tmp_path: Path) -> None:
    from mailslot.testing import broker_in_thread

    data_dir = tmp_path / "data"
    with broker_in_thread(store="segments", data_dir=data_dir) as broker:
        broker.run_threadsafe(lambda: broker.access_admin.add_vhost("ctl-vh"))
        broker.run_threadsafe(lambda: broker.access_admin.add_vhost("ctl-empty"))
        broker.run_threadsafe(lambda: broker.access_admin.set_permissions("guest", "ctl-vh", ".*", ".*", ".*"))
        connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url.replace("%2F", "ctl-vh")))
        connection.channel().queue_declare("kept", durable=True)
        connection.close()
    assert _offline(data_dir, "set_policy", "-p", "ctl-empty", "ctl-p", ".*", '{"max-length": 5}').exit_code == 0
    refused = _offline(data_dir, "delete_vhost", "ctl-vh")
    assert refused.exit_code == 1 and "queue" in refused.stderr
    assert _offline(data_dir, "delete_vhost", "ctl-empty").exit_code == 0
    vhosts = {row["name"] for row in json.loads(_offline(data_dir, "list_vhosts", "--format", "json").stdout)}
    assert vhosts == {"/", "ctl-vh"}
    with broker_in_thread(store="segments", data_dir=data_dir) as broker:
        assert "ctl-empty" not in broker.access.vhosts and "ctl-vh" in broker.access.vhosts
        assert broker.policies.listed("policy", "ctl-empty") == []  # went with the vhost
