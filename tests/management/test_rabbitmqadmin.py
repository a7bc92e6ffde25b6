"""RabbitMQ's own command line tool, ``rabbitmqadmin`` (the v1 Python script RabbitMQ 3.x ships), unchanged
against mailslot: the same commands in every output format give the same answers as against the reference.

The script is downloaded from the reference's management plugin at test time (it is RabbitMQ's, not
ours: it is never committed). Each test works in a vhost of its own on both brokers (created with the
tool itself), so the reference's other objects never show in the outputs compared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for

from .client import RABBITMQ_API, ManagementApi, q

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]
FORMATS = ("raw_json", "pretty_json", "tsv", "long", "table", "kvp", "bash")


@pytest.fixture(scope="module")
def rabbitmqadmin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .conftest import rabbitmq_management_reachable

    if not rabbitmq_management_reachable():
        from conftest import _service_missing

        _service_missing("RabbitMQ's management API is not reachable on 127.0.0.1:15672")
    path = tmp_path_factory.mktemp("cli") / "rabbitmqadmin"
    request = urllib.request.Request(RABBITMQ_API + "/cli/rabbitmqadmin")
    with urllib.request.urlopen(request, timeout=30) as response:
        path.write_bytes(response.read())
    return path


class Admin:
    """rabbitmqadmin pointed at one broker."""

    def __init__(self, script: Path, api: ManagementApi) -> None:
        self.script, self.api = script, api
        self.port = api.base.rsplit(":", 1)[1]

    def run(self, *args: str, vhost: str | None = None, fmt: str | None = None, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(self.script), "-H", "127.0.0.1", "-P", self.port, "-u", "guest", "-p", "guest"]
        if vhost is not None:
            command += ["-V", vhost]
        if fmt is not None:
            command += ["-f", fmt]
        result = subprocess.run(command + list(args), check=False, capture_output=True, text=True, timeout=60,
                                input=stdin)
        if check:
            assert result.returncode == 0, (self.api.name, args, result.stdout, result.stderr)
        return result


@pytest.fixture
def admins(rabbitmqadmin: Path, apis: dict[str, ManagementApi]) -> Iterator[dict[str, Admin]]:
    vhost = f"mailslot-test.cli.{uuid.uuid4().hex[:10]}"
    made = {name: Admin(rabbitmqadmin, api) for name, api in apis.items()}
    for admin in made.values():
        admin.run("declare", "vhost", f"name={vhost}")
        admin.run("declare", "permission", f"vhost={vhost}", "user=guest", "configure=.*", "write=.*", "read=.*")
        admin.vhost = vhost  # type: ignore[attr-defined]
    yield made
    for admin in made.values():
        admin.run("delete", "vhost", f"name={vhost}", check=False)


def both(admins: dict[str, Admin], *args: str, **kwargs: object) -> dict[str, subprocess.CompletedProcess[str]]:
    return {name: admin.run(*args, vhost=admin.vhost, **kwargs) for name, admin in admins.items()}  # type: ignore[attr-defined,arg-type]


def test_declare_list_publish_get_purge_and_delete_in_every_format(admins: dict[str, Admin]) -> None:
    both(admins, "declare", "queue", "name=jobs", "durable=true", 'arguments={"x-max-length": 100}')
    both(admins, "declare", "queue", "name=other", "durable=false")
    both(admins, "declare", "exchange", "name=fan", "type=fanout")
    both(admins, "declare", "binding", "source=fan", "destination=jobs", "routing_key=k")
    both(admins, "publish", "routing_key=jobs", "payload=hello")
    both(admins, "publish", "exchange=fan", "routing_key=x", "payload=world")
    both(admins, "publish", "routing_key=jobs", stdin="from stdin")  # no payload: read stdin, sent as base64

    for fmt in FORMATS:
        for args in (("list", "queues", "name", "durable", "auto_delete", "arguments"),
                     ("list", "exchanges", "name", "type", "durable"),
                     ("list", "bindings", "source", "destination", "routing_key", "destination_type"),
                     ("list", "vhosts", "name")):
            out = both(admins, *args, fmt=fmt)
            mine, theirs = out["mailslot"].stdout, out["rabbitmq"].stdout
            if args[1] == "vhosts":  # every vhost is listed: compare ours, present on both
                assert admins["mailslot"].vhost in mine and admins["rabbitmq"].vhost in theirs  # type: ignore[attr-defined]
                continue
            assert mine == theirs, (fmt, args, mine, theirs)

    # counts reach RabbitMQ's listing after its stats interval; compare once both show 3 messages
    for name, admin in admins.items():
        def listed(admin: Any = admin) -> bool:
            rows = json.loads(admin.run("list", "queues", "name", "messages", vhost=admin.vhost, fmt="raw_json").stdout)
            return {r["name"]: r.get("messages") for r in rows}.get("jobs") == 3

        wait_for(listed, 30, 0.25, what=f"{name} listing 3 messages")
    table = both(admins, "list", "queues", "name", "messages", fmt="table")
    assert table["mailslot"].stdout == table["rabbitmq"].stdout

    got = both(admins, "get", "queue=jobs", "ackmode=ack_requeue_false", "count=2", fmt="raw_json")
    mine, theirs = json.loads(got["mailslot"].stdout), json.loads(got["rabbitmq"].stdout)
    assert mine == theirs and [m["payload"] for m in mine] == ["hello", "world"]
    for fmt in ("table", "tsv", "kvp", "long", "bash", "pretty_json"):
        # one message per format, taken (a requeued one would carry mailslot's x-delivery-count header)
        both(admins, "publish", "routing_key=jobs", f"payload={fmt} message", 'properties={"app_id": "cli"}')
        out = both(admins, "get", "queue=jobs", "ackmode=ack_requeue_false", fmt=fmt)
        assert out["mailslot"].stdout == out["rabbitmq"].stdout, fmt
    both(admins, "purge", "queue", "name=jobs")
    both(admins, "delete", "binding", "source=fan", "destination_type=queue", "destination=jobs", "properties_key=k")
    assert both(admins, "list", "bindings", "source", fmt="tsv")["mailslot"].stdout == both(
        admins, "list", "bindings", "source", fmt="tsv")["rabbitmq"].stdout
    both(admins, "delete", "queue", "name=jobs")
    both(admins, "delete", "exchange", "name=fan")
    missing = {name: admin.run("delete", "queue", "name=jobs", vhost=admin.vhost, check=False)  # type: ignore[attr-defined]
               for name, admin in admins.items()}
    assert missing["mailslot"].returncode == missing["rabbitmq"].returncode == 1
    assert missing["mailslot"].stderr.replace(admins["mailslot"].port, "P") == missing["rabbitmq"].stderr.replace(
        admins["rabbitmq"].port, "P")


def test_users_permissions_limits_and_the_server_wide_lists(admins: dict[str, Admin]) -> None:
    user = f"mailslot-test.cli-user.{uuid.uuid4().hex[:8]}"
    try:
        for admin in admins.values():
            admin.run("declare", "user", f"name={user}", "password=pw", "tags=monitoring")
            admin.run("declare", "permission", f"vhost={admin.vhost}", f"user={user}",  # type: ignore[attr-defined]
                      "configure=^$", "write=.*", "read=.*")
            admin.run("declare", "vhost_limit", f"vhost={admin.vhost}", "name=max-queues", "value=50")  # type: ignore[attr-defined]
        for fmt in FORMATS:
            out = {name: admin.run("list", "permissions", "user", "vhost", "configure", "write", "read", fmt=fmt)
                   for name, admin in admins.items()}
            if fmt == "bash":  # the bash format prints names only, and permissions have none
                assert out["mailslot"].stdout == out["rabbitmq"].stdout == ""
                continue
            for name, result in out.items():
                assert user in result.stdout and admins[name].vhost in result.stdout, (name, fmt)  # type: ignore[attr-defined]
            rows = {name: [line for line in result.stdout.splitlines() if user in line] for name, result in out.items()}
            if fmt not in ("raw_json", "pretty_json", "long", "bash"):
                mine = [r.replace(admins["mailslot"].vhost, "V") for r in rows["mailslot"]]  # type: ignore[attr-defined]
                theirs = [r.replace(admins["rabbitmq"].vhost, "V") for r in rows["rabbitmq"]]  # type: ignore[attr-defined]
                assert mine == theirs, fmt
        limits = {name: json.loads(admin.run("list", "vhost_limits", fmt="raw_json").stdout) for name, admin in admins.items()}
        for name, rows in limits.items():
            assert {"vhost": admins[name].vhost, "value": {"max-queues": 50}} in rows, name  # type: ignore[attr-defined]
        users = {name: json.loads(admin.run("list", "users", "name", "tags", fmt="raw_json").stdout)
                 for name, admin in admins.items()}
        for rows in users.values():
            assert {"name": user, "tags": ["monitoring"]} in rows
        for listing in ("nodes", "connections", "channels", "consumers", "parameters", "overview"):
            verb = "show" if listing == "overview" else "list"
            for fmt in ("table", "raw_json", "kvp"):  # every format is exercised on the listings above
                for name, admin in admins.items():
                    admin.run(verb, listing, fmt=fmt)  # exits 0 and prints what it parsed
        overview = {name: admin.run("show", "overview", fmt="tsv").stdout.splitlines()[0] for name, admin in admins.items()}
        assert overview["mailslot"] == overview["rabbitmq"]  # the same columns
        for admin in admins.values():
            admin.run("delete", "vhost_limit", f"vhost={admin.vhost}", "name=max-queues")  # type: ignore[attr-defined]
            admin.run("delete", "permission", f"vhost={admin.vhost}", f"user={user}")  # type: ignore[attr-defined]
    finally:
        for admin in admins.values():
            admin.run("delete", "user", f"name={user}", check=False)


def test_export_and_import(admins: dict[str, Admin], tmp_path: Path) -> None:
    for name, admin in admins.items():
        admin.run("declare", "queue", "name=kept", "durable=true", vhost=admin.vhost)  # type: ignore[attr-defined]
        admin.run("declare", "exchange", "name=routed", "type=topic", vhost=admin.vhost)  # type: ignore[attr-defined]
        admin.run("declare", "binding", "source=routed", "destination=kept", "routing_key=a.#",
                  vhost=admin.vhost)  # type: ignore[attr-defined]
        exported = tmp_path / f"{name}.json"
        admin.run("export", str(exported), vhost=admin.vhost)  # type: ignore[attr-defined]
        admin.run("delete", "queue", "name=kept", vhost=admin.vhost)  # type: ignore[attr-defined]
        admin.run("delete", "exchange", "name=routed", vhost=admin.vhost)  # type: ignore[attr-defined]
    # each broker imports the other's file
    for name, other in (("mailslot", "rabbitmq"), ("rabbitmq", "mailslot")):
        admins[name].run("import", str(tmp_path / f"{other}.json"), vhost=admins[name].vhost)  # type: ignore[attr-defined]
    out = both(admins, "list", "bindings", "source", "destination", "routing_key", fmt="tsv")
    assert out["mailslot"].stdout == out["rabbitmq"].stdout and "a.#" in out["mailslot"].stdout
    queues = both(admins, "list", "queues", "name", "durable", fmt="tsv")
    assert queues["mailslot"].stdout == queues["rabbitmq"].stdout


def test_closing_a_connection(admins: dict[str, Admin]) -> None:
    import pika

    for admin in admins.values():
        url = getattr(admin.api, "amqp_url", "amqp://guest:guest@127.0.0.1:5672/%2F")
        tag = f"mailslot-test.cli-conn.{uuid.uuid4().hex[:8]}"
        params = pika.URLParameters(url)
        params.client_properties = {"connection_name": tag}
        connection = pika.BlockingConnection(params)
        try:
            listed: list[dict[str, object]] = []
            for _ in range(120):
                rows = json.loads(admin.run("list", "connections", "name", "client_properties", fmt="raw_json").stdout)
                listed = [r for r in rows if (r.get("client_properties") or {}).get("connection_name") == tag]  # type: ignore[union-attr]
                if listed:
                    break
                connection.process_data_events(0.25)
            [row] = listed
            admin.run("close", "connection", f"name={row['name']}")
            with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
                for _ in range(40):
                    connection.process_data_events(0.25)
        finally:
            if connection.is_open:
                connection.close()
        assert q(str(row["name"]))
