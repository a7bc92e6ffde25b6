"""``/api/policies`` and ``/api/operator-policies``, differentially: the same calls on mailslot and on the
reference RabbitMQ 3.10 give the same status codes, documents, refusals and effects on what queues and
exchanges report. Every object made on the shared RabbitMQ has a unique name and is deleted afterwards."""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import wait_for

from .client import ManagementApi, q
from .test_differential import SETTLE, both
from .test_rabbitmqadmin import rabbitmqadmin  # noqa: F401 -- the fixture

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


def unique(prefix: str) -> str:
    return f"policies-test.{prefix}.{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cleanup(apis: dict[str, ManagementApi]) -> Iterator[list[str]]:
    """Paths to DELETE on both brokers afterwards (policies, users: the client's own list is for queues)."""
    paths: list[str] = []
    yield paths
    for api in apis.values():
        for path in paths:
            api.delete(path)


def test_set_show_list_replace_delete(apis: dict[str, ManagementApi], cleanup: list[str]) -> None:
    for kind in ("policies", "operator-policies"):
        name = unique("crud")
        path = f"/api/{kind}/%2F/{q(name)}"
        cleanup.append(path)
        body = {"pattern": "^" + name, "definition": {"max-length": 5, "message-ttl": 1000}, "priority": 3,
                "apply-to": "queues"}
        created = both(apis, "PUT", path, body)
        assert created["mailslot"].status == created["rabbitmq"].status == 201
        shown = both(apis, "GET", path)
        assert shown["mailslot"].status == shown["rabbitmq"].status == 200
        assert shown["mailslot"].json == shown["rabbitmq"].json == {
            "vhost": "/", "name": name, "pattern": "^" + name, "apply-to": "queues",
            "definition": {"max-length": 5, "message-ttl": 1000}, "priority": 3}
        for listing in (f"/api/{kind}", f"/api/{kind}/%2F"):
            listed = both(apis, "GET", listing)
            mine = [p for p in listed["mailslot"].json if p["name"] == name]
            theirs = [p for p in listed["rabbitmq"].json if p["name"] == name]
            assert mine == theirs and len(mine) == 1
        replaced = both(apis, "PUT", path, {"pattern": ".*", "definition": {"expires": 60000}})
        assert replaced["mailslot"].status == replaced["rabbitmq"].status == 204
        defaults = both(apis, "GET", path)
        assert defaults["mailslot"].json == defaults["rabbitmq"].json  # priority 0, apply-to all
        assert defaults["mailslot"].json["apply-to"] == "all" and defaults["mailslot"].json["priority"] == 0
        deleted = both(apis, "DELETE", path)
        assert deleted["mailslot"].status == deleted["rabbitmq"].status == 204
        for method in ("GET", "DELETE"):
            gone = both(apis, method, path)
            assert gone["mailslot"].status == gone["rabbitmq"].status == 404
            assert gone["mailslot"].json == gone["rabbitmq"].json


BAD_BODIES: list[dict[str, Any]] = [
    {"pattern": ".*", "definition": {"max-priority": 10}},
    {"pattern": ".*", "definition": {"bogus": 1, "max-length": 1, "other": "x"}},
    {"pattern": ".*", "definition": {"max-length": -1}},
    {"pattern": ".*", "definition": {"max-length": "ten"}},
    {"pattern": ".*", "definition": {"max-length-bytes": 1.5}},
    {"pattern": ".*", "definition": {"message-ttl": -5}},
    {"pattern": ".*", "definition": {"expires": 0}},
    {"pattern": ".*", "definition": {"overflow": "explode"}},
    {"pattern": ".*", "definition": {"delivery-limit": -1}},
    {"pattern": ".*", "definition": {"dead-letter-exchange": 7}},
    {"pattern": ".*", "definition": {"queue-mode": "eager"}},
    {"pattern": ".*", "definition": {}},
    {"pattern": ".*", "definition": {"max-length": 1}, "priority": "high"},
    {"pattern": 5, "definition": {"max-length": 1}},
    {"definition": {"max-length": 1}},
    {"pattern": ".*"},
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_refusals_as_rabbitmq_words_them(apis: dict[str, ManagementApi], cleanup: list[str],
                                         body: dict[str, Any]) -> None:
    path = f"/api/policies/%2F/{q(unique('bad'))}"
    cleanup.append(path)
    replies = both(apis, "PUT", path, body)
    assert replies["mailslot"].status == replies["rabbitmq"].status == 400
    mine, theirs = replies["mailslot"].json, replies["rabbitmq"].json
    assert mine["error"] == theirs["error"] == "bad_request"
    assert mine["reason"] == html.unescape(theirs["reason"])  # RabbitMQ HTML-escapes its policy texts
    for api in apis.values():
        assert api.get(path).status == 404  # nothing was set


def test_invalid_regex_and_apply_to_are_refused(apis: dict[str, ManagementApi], cleanup: list[str]) -> None:
    path = f"/api/policies/%2F/{q(unique('regex'))}"
    cleanup.append(path)
    for body, word in (({"pattern": "(unclosed", "definition": {"max-length": 1}}, "pattern"),
                       ({"pattern": ".*", "definition": {"max-length": 1}, "apply-to": "queuez"}, "apply-to 'queuez'")):
        replies = both(apis, "PUT", path, body)
        assert replies["mailslot"].status == replies["rabbitmq"].status == 400
        for reply in replies.values():
            assert reply.json["reason"].startswith("Validation failed")
            assert word in reply.json["reason"]
    for api in apis.values():
        assert api.get(path).status == 404


@pytest.mark.parametrize("key", ["overflow", "dead-letter-exchange", "alternate-exchange", "queue-mode"])
def test_operator_policies_take_only_limits(apis: dict[str, ManagementApi], cleanup: list[str], key: str) -> None:
    path = f"/api/operator-policies/%2F/{q(unique('op'))}"
    cleanup.append(path)
    value = "lazy" if key == "queue-mode" else "drop-head" if key == "overflow" else "x"
    replies = both(apis, "PUT", path, {"pattern": ".*", "definition": {key: value}})
    assert replies["mailslot"].status == replies["rabbitmq"].status == 400
    assert replies["mailslot"].json["reason"] == html.unescape(replies["rabbitmq"].json["reason"])


def test_unknown_vhost(apis: dict[str, ManagementApi]) -> None:
    vhost = q(unique("novhost"))
    for kind in ("policies", "operator-policies"):
        put = both(apis, "PUT", f"/api/{kind}/{vhost}/p", {"pattern": ".*", "definition": {"max-length": 1}})
        assert put["mailslot"].status == put["rabbitmq"].status == 404
        assert put["mailslot"].json == put["rabbitmq"].json
        for method, path in (("GET", f"/api/{kind}/{vhost}"), ("GET", f"/api/{kind}/{vhost}/p"),
                             ("DELETE", f"/api/{kind}/{vhost}/p")):
            replies = both(apis, method, path)
            assert replies["mailslot"].status == replies["rabbitmq"].status == 404
            assert replies["mailslot"].json == replies["rabbitmq"].json


def test_queues_and_exchanges_report_the_policy_in_force(apis: dict[str, ManagementApi], cleanup: list[str]) -> None:
    prefix = unique("report")
    queue, exchange = prefix + ".q", prefix + ".x"
    low, high, operator = prefix + ".low", prefix + ".high", prefix + ".op"
    for api in apis.values():
        api.queue(queue, durable=False)
        api.exchange(exchange, durable=False)
    cleanup.extend(f"/api/policies/%2F/{q(n)}" for n in (low, high))
    cleanup.append(f"/api/operator-policies/%2F/{q(operator)}")
    for api in apis.values():
        api.ok("PUT", f"/api/policies/%2F/{q(low)}", {"pattern": "^" + prefix, "priority": 1,
                                                      "definition": {"max-length": 100}})
        api.ok("PUT", f"/api/policies/%2F/{q(high)}", {"pattern": "^" + prefix, "priority": 7,
                                                       "definition": {"max-length": 10, "alternate-exchange": "ae",
                                                                      "overflow": "reject-publish"}})
        api.ok("PUT", f"/api/operator-policies/%2F/{q(operator)}", {"pattern": "^" + prefix, "apply-to": "queues",
                                                                    "definition": {"max-length": 4,
                                                                                   "message-ttl": 60000}})
    reported: dict[str, Any] = {}
    for name, api in apis.items():
        def seen(api: ManagementApi = api) -> Any:
            doc = api.get(f"/api/queues/%2F/{q(queue)}").json
            return doc if doc.get("operator_policy") == operator and doc.get("policy") == high else None

        doc = wait_for(seen, SETTLE, 0.2, what=f"{name} reporting the policy")
        reported[name] = {k: doc[k] for k in ("policy", "operator_policy", "effective_policy_definition", "arguments")}
    assert reported["mailslot"] == reported["rabbitmq"] == {
        "policy": high, "operator_policy": operator, "arguments": {},
        "effective_policy_definition": {"alternate-exchange": "ae", "max-length": 4, "message-ttl": 60000,
                                        "overflow": "reject-publish"},
    }
    exchanges = {name: api.get(f"/api/exchanges/%2F/{q(exchange)}").json for name, api in apis.items()}
    assert exchanges["mailslot"]["policy"] == exchanges["rabbitmq"]["policy"] == high
    assert "operator_policy" not in exchanges["mailslot"] and "operator_policy" not in exchanges["rabbitmq"]
    for api in apis.values():
        api.ok("DELETE", f"/api/policies/%2F/{q(high)}")
        api.ok("DELETE", f"/api/operator-policies/%2F/{q(operator)}")
    for name, api in apis.items():
        def lowered(api: ManagementApi = api) -> Any:
            doc = api.get(f"/api/queues/%2F/{q(queue)}").json
            return doc if doc.get("policy") == low else None

        doc = wait_for(lowered, SETTLE, 0.2, what=f"{name} falling back to the lower priority")
        assert doc["effective_policy_definition"] == {"max-length": 100}
        assert not doc["operator_policy"]  # RabbitMQ: null or absent


def test_who_may_do_what(apis: dict[str, ManagementApi], cleanup: list[str]) -> None:
    users = {tag: unique(tag) for tag in ("policymaker", "management")}
    for tag, user in users.items():
        cleanup.append(f"/api/users/{q(user)}")
        for api in apis.values():
            api.ok("PUT", f"/api/users/{q(user)}", {"password": "pw", "tags": tag})
            api.ok("PUT", f"/api/permissions/%2F/{q(user)}", {"configure": ".*", "write": ".*", "read": ".*"})
    name = unique("auth")
    body = {"pattern": "^" + name, "definition": {"max-length": 1}}
    cleanup.extend([f"/api/policies/%2F/{q(name)}", f"/api/operator-policies/%2F/{q(name)}"])
    calls = [
        ("PUT", f"/api/policies/%2F/{q(name)}", body),
        ("GET", f"/api/policies/%2F/{q(name)}", None),
        ("GET", "/api/policies", None),
        ("GET", "/api/policies/%2F", None),
        ("PUT", f"/api/operator-policies/%2F/{q(name)}", body),
        ("GET", f"/api/operator-policies/%2F/{q(name)}", None),
        ("GET", "/api/operator-policies", None),
        ("DELETE", f"/api/operator-policies/%2F/{q(name)}", None),
        ("DELETE", f"/api/policies/%2F/{q(name)}", None),
    ]
    for user in (users["management"], users["policymaker"]):
        for method, path, payload in calls:
            replies = both(apis, method, path, payload, user=(user, "pw"))
            mine, theirs = replies["mailslot"], replies["rabbitmq"]
            assert mine.status == theirs.status, (user, method, path, mine.body, theirs.body)
            if mine.status >= 400:
                assert mine.json == theirs.json


def test_rabbitmqadmin_declares_lists_and_deletes_policies(
    rabbitmqadmin: Any,  # noqa: F811 -- the fixture imported above
    apis: dict[str, ManagementApi],
) -> None:
    """RabbitMQ's own rabbitmqadmin (v1), unchanged: the same commands, the same outputs, in a vhost of its
    own on each broker (deleting the vhost deletes its policies, on both)."""
    from .test_rabbitmqadmin import FORMATS, Admin

    vhost = unique("cli")
    admins = {name: Admin(rabbitmqadmin, api) for name, api in apis.items()}
    try:
        for admin in admins.values():
            admin.run("declare", "vhost", f"name={vhost}")
            admin.run("declare", "permission", f"vhost={vhost}", "user=guest", "configure=.*", "write=.*", "read=.*")
            admin.run("declare", "policy", "name=cap", "pattern=^jobs", 'definition={"max-length": 5}',
                      "priority=2", "apply-to=queues", vhost=vhost)
            admin.run("declare", "operator_policy", "name=ttl", "pattern=.*", 'definition={"message-ttl": 1000}',
                      vhost=vhost)
        for fmt in FORMATS:
            for what in ("policies", "operator_policies"):
                out = {n: a.run("list", what, "name", "pattern", "apply-to", "definition", "priority", vhost=vhost,
                                fmt=fmt).stdout for n, a in admins.items()}
                assert out["mailslot"] == out["rabbitmq"], (fmt, what, out)
        refused = {n: a.run("declare", "policy", "name=bad", "pattern=.*", 'definition={"max-length": -1}',
                            vhost=vhost, check=False) for n, a in admins.items()}
        assert refused["mailslot"].returncode == refused["rabbitmq"].returncode != 0
        assert "not a valid maximum length" in refused["mailslot"].stderr
        for admin in admins.values():
            admin.run("delete", "policy", "name=cap", vhost=vhost)
            admin.run("delete", "operator_policy", "name=ttl", vhost=vhost)
        listed = {n: a.run("list", "policies", "name", vhost=vhost, fmt="raw_json").stdout for n, a in admins.items()}
        assert json.loads(listed["mailslot"]) == json.loads(listed["rabbitmq"]) == []
    finally:
        for admin in admins.values():
            admin.run("delete", "vhost", f"name={vhost}", check=False)


def test_listing_order_and_precedence_whatever_the_order_of_creation(
    apis: dict[str, ManagementApi], cleanup: list[str]
) -> None:
    """Lists are by priority, lowest first; the highest priority applies, whether made first or last."""
    vhost = unique("order")
    cleanup.append(f"/api/vhosts/{q(vhost)}")
    queue = "jobs"
    for api in apis.values():
        api.ok("PUT", f"/api/vhosts/{q(vhost)}")
        api.ok("PUT", f"/api/permissions/{q(vhost)}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        for name, priority in (("top", 9), ("bottom", 1), ("middle", 4)):
            api.ok("PUT", f"/api/policies/{q(vhost)}/{name}",
                   {"pattern": "^jobs", "definition": {"max-length": priority}, "priority": priority})
        api.ok("PUT", f"/api/queues/{q(vhost)}/{queue}", {"durable": False})
    listed = both(apis, "GET", f"/api/policies/{q(vhost)}")
    assert [p["name"] for p in listed["mailslot"].json] == [p["name"] for p in listed["rabbitmq"].json] == [
        "bottom", "middle", "top"]
    for name, api in apis.items():
        def applied(api: ManagementApi = api) -> Any:
            return api.get(f"/api/queues/{q(vhost)}/{queue}").json.get("policy")

        assert wait_for(applied, SETTLE, 0.2, what=f"{name}: the policy in force") == "top"


def test_deleting_a_vhost_deletes_its_policies(apis: dict[str, ManagementApi], cleanup: list[str]) -> None:
    vhost = unique("gone")
    cleanup.append(f"/api/vhosts/{q(vhost)}")
    for api in apis.values():
        api.ok("PUT", f"/api/vhosts/{q(vhost)}")
        api.ok("PUT", f"/api/policies/{q(vhost)}/p", {"pattern": ".*", "definition": {"max-length": 1}})
        api.ok("PUT", f"/api/operator-policies/{q(vhost)}/o", {"pattern": ".*", "definition": {"max-length": 1}})
        api.ok("DELETE", f"/api/vhosts/{q(vhost)}")
        api.ok("PUT", f"/api/vhosts/{q(vhost)}")
    for kind, name in (("policies", "p"), ("operator-policies", "o")):
        again = both(apis, "GET", f"/api/{kind}/{q(vhost)}/{name}")
        assert again["mailslot"].status == again["rabbitmq"].status == 404
        listed = both(apis, "GET", f"/api/{kind}/{q(vhost)}")
        assert listed["mailslot"].json == listed["rabbitmq"].json == []


def test_policies_move_between_the_two_brokers_in_definitions(apis: dict[str, ManagementApi],
                                                              cleanup: list[str]) -> None:
    """A vhost's definitions exported from RabbitMQ carry its policies into mailslot, and back."""
    rabbit, mine = apis["rabbitmq"], apis["mailslot"]
    vhost = unique("defs")
    cleanup.append(f"/api/vhosts/{q(vhost)}")
    policy = {"pattern": "^orders\\.", "definition": {"max-length": 50, "overflow": "reject-publish",
                                                      "ha-mode": "all"}, "priority": 3, "apply-to": "queues"}
    for api in apis.values():
        api.ok("PUT", f"/api/vhosts/{q(vhost)}")
    rabbit.ok("PUT", f"/api/policies/{q(vhost)}/cap", policy)
    exported = rabbit.ok("GET", f"/api/definitions/{q(vhost)}")
    assert mine.post(f"/api/definitions/{q(vhost)}", exported).status == 204
    assert mine.ok("GET", f"/api/policies/{q(vhost)}/cap") == rabbit.ok("GET", f"/api/policies/{q(vhost)}/cap")
    ours = mine.ok("GET", f"/api/definitions/{q(vhost)}")
    assert ours["policies"] == exported["policies"]
    rabbit.ok("DELETE", f"/api/policies/{q(vhost)}/cap")
    assert rabbit.post(f"/api/definitions/{q(vhost)}", ours).status == 204
    assert rabbit.ok("GET", f"/api/policies/{q(vhost)}/cap") == {"vhost": vhost, "name": "cap", **policy}


def test_list_query_parameters_as_rabbitmq_takes_them(apis: dict[str, ManagementApi], cleanup: list[str]) -> None:
    """Policy lists sort and select columns, but are neither paged nor filtered by name, as RabbitMQ's."""
    vhost = unique("query")
    cleanup.append(f"/api/vhosts/{q(vhost)}")
    for api in apis.values():
        api.ok("PUT", f"/api/vhosts/{q(vhost)}")
        for name in ("a", "b", "c"):
            api.ok("PUT", f"/api/policies/{q(vhost)}/{name}", {"pattern": "x", "definition": {"max-length": 1}})
    for query in ("?page=2&page_size=1", "?sort=name&sort_reverse=true&columns=name", "?name=b", ""):
        replies = both(apis, "GET", f"/api/policies/{q(vhost)}{query}")
        assert replies["mailslot"].status == replies["rabbitmq"].status == 200
        assert replies["mailslot"].json == replies["rabbitmq"].json, query
