"""Users, vhosts, permissions, topic permissions and limits through the management API, differentially
against the reference RabbitMQ: the same calls give the same status codes, fields and effects, and what
each tag may see and do is RabbitMQ's. Every user and vhost made on the shared RabbitMQ has a unique
name and is deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .client import ManagementApi, q

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


def unique(prefix: str) -> str:
    return f"mailslot-test.acc.{prefix}.{uuid.uuid4().hex[:10]}"


def both(apis: dict[str, ManagementApi], method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
    return {name: api.request(method, path, body, **kwargs) for name, api in apis.items()}


def same(replies: dict[str, Any], status: int, *, body: bool = True) -> None:
    mine, theirs = replies["mailslot"], replies["rabbitmq"]
    assert mine.status == theirs.status == status, (mine.status, mine.body, theirs.status, theirs.body)
    if body:
        assert (mine.json if mine.body else None) == (theirs.json if theirs.body else None)


@pytest.fixture
def names(apis: dict[str, ManagementApi]) -> Iterator[dict[str, str]]:
    """A fresh user and vhost name per test, removed from both brokers afterwards."""
    made = {"user": unique("u"), "vhost": unique("v"), "other": unique("o")}
    yield made
    for api in apis.values():
        for kind, name in (("users", made["user"]), ("users", made["other"]), ("vhosts", made["vhost"])):
            api.delete(f"/api/{kind}/{q(name)}")


def test_users_are_created_shown_changed_and_deleted_alike(apis: dict[str, ManagementApi], names: dict[str, str]) -> None:
    user = q(names["user"])
    same(both(apis, "PUT", f"/api/users/{user}", {"password": "pw", "tags": "management,monitoring"}), 201)
    shown = {n: api.ok("GET", f"/api/users/{user}") for n, api in apis.items()}
    assert set(shown["mailslot"]) == set(shown["rabbitmq"]) == {"name", "password_hash", "hashing_algorithm", "tags", "limits"}
    for document in shown.values():
        assert document["tags"] == ["management", "monitoring"]
        assert document["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    # a hash exported from RabbitMQ logs in on mailslot: same scheme, same bytes
    apis["mailslot"].ok("PUT", f"/api/users/{user}", {"password_hash": shown["rabbitmq"]["password_hash"],
                                                      "tags": ["management"]})
    assert apis["mailslot"].get("/api/whoami", user=(names["user"], "pw")).json == {
        "name": names["user"], "tags": ["management"]}
    same(both(apis, "PUT", f"/api/users/{user}", {"password": "pw2", "tags": ["policymaker"]}), 204)
    same(both(apis, "PUT", f"/api/users/{user}", {}), 400)  # tags are required
    same(both(apis, "PUT", f"/api/users/{user}", {"password": "x", "password_hash": "", "tags": ""}), 400)
    same(both(apis, "PUT", f"/api/users/{user}", {"password_hash": "not base64!", "tags": ""}), 400, body=False)
    without = {n: [u["name"] for u in api.ok("GET", "/api/users/without-permissions")] for n, api in apis.items()}
    assert names["user"] in without["mailslot"] and names["user"] in without["rabbitmq"]
    same(both(apis, "POST", "/api/users/bulk-delete", {"users": [unique("nobody")]}), 400, body=False)
    same(both(apis, "DELETE", f"/api/users/{user}"), 204)
    same(both(apis, "DELETE", f"/api/users/{user}"), 404)
    same(both(apis, "GET", f"/api/users/{user}"), 404)


def test_vhosts_permissions_and_topic_permissions(apis: dict[str, ManagementApi], names: dict[str, str]) -> None:
    user, vhost = q(names["user"]), q(names["vhost"])
    same(both(apis, "PUT", f"/api/users/{user}", {"password": "pw", "tags": "management"}), 201)
    same(both(apis, "PUT", f"/api/vhosts/{vhost}", {"description": "d", "tags": "a,b"}), 201)
    same(both(apis, "PUT", f"/api/vhosts/{vhost}", {"description": "d2"}), 204)
    shown = {n: api.ok("GET", f"/api/vhosts/{vhost}") for n, api in apis.items()}
    for field in ("name", "description", "tags", "metadata", "tracing"):
        assert shown["mailslot"][field] == shown["rabbitmq"][field], field

    path = f"/api/permissions/{vhost}/{user}"
    same(both(apis, "PUT", path, {"configure": ".*", "write": "^x"}), 400, body=False)  # read missing
    same(both(apis, "PUT", path, {"configure": ".*", "write": "^x", "read": "("}), 400, body=False)  # bad regex
    same(both(apis, "PUT", f"/api/permissions/{vhost}/{q(unique('nobody'))}", {"configure": "", "write": "", "read": ""}), 400)
    same(both(apis, "PUT", path, {"configure": ".*", "write": "^x", "read": ".*"}), 201)
    same(both(apis, "PUT", path, {"configure": ".*", "write": "^x", "read": ".*"}), 204)
    same(both(apis, "GET", path), 200)
    same(both(apis, "GET", f"/api/users/{user}/permissions"), 200)
    in_vhost = {n: sorted(p["user"] for p in api.ok("GET", f"/api/vhosts/{vhost}/permissions")) for n, api in apis.items()}
    assert in_vhost["mailslot"] == [names["user"]]  # a vhost made through the API grants nobody else anything
    assert names["user"] in in_vhost["rabbitmq"]

    topic = f"/api/topic-permissions/{vhost}/{user}"
    same(both(apis, "PUT", topic, {"exchange": "amq.topic", "write": "^a", "read": ".*"}), 201)
    same(both(apis, "GET", topic), 200)
    same(both(apis, "DELETE", topic), 204)
    same(both(apis, "DELETE", topic), 404)

    # the user sees only its vhost; an administrator sees both; a vhost it has no rights in is refused
    login = (names["user"], "pw")
    for api in apis.values():
        seen = [v["name"] for v in api.request("GET", "/api/vhosts", user=login).json]
        assert seen == [names["vhost"]], api.name
        refused = api.request("GET", "/api/queues/%2F", user=login)
        assert refused.status == 401 and refused.json == {
            "error": "not_authorised", "reason": "User not authorised to access virtual host"}, api.name
        assert api.request("GET", f"/api/queues/{vhost}", user=login).status == 200
        assert api.request("GET", "/api/users", user=login).status == 401
        assert api.request("GET", "/api/nodes", user=login).json == {"error": "not_authorised", "reason": "Not monitor user"}

    same(both(apis, "DELETE", path), 204)
    same(both(apis, "DELETE", path), 404)
    same(both(apis, "DELETE", f"/api/vhosts/{vhost}"), 204)
    same(both(apis, "DELETE", f"/api/vhosts/{vhost}"), 404)


def test_tags_decide_what_a_user_may_use(apis: dict[str, ManagementApi], names: dict[str, str]) -> None:
    user, other = q(names["user"]), q(names["other"])
    for api in apis.values():
        api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": "monitoring"})
        api.ok("PUT", f"/api/users/{other}", {"password": "pw", "tags": ""})
    monitoring, plain = (names["user"], "pw"), (names["other"], "pw")
    for api in apis.values():
        assert api.request("GET", "/api/nodes", user=monitoring).status == 200, api.name
        assert api.request("GET", "/api/vhosts", user=monitoring).status == 200
        assert "/" in [v["name"] for v in api.request("GET", "/api/vhosts", user=monitoring).json]
        assert api.request("GET", "/api/definitions", user=monitoring).status == 401  # administrators only
        assert api.request("PUT", f"/api/vhosts/{q(unique('x'))}", {}, user=monitoring).status == 401
        denied = api.request("GET", "/api/overview", user=plain)
        assert denied.status == 401 and denied.json == {"error": "not_authorised", "reason": "Not management user"}


def test_limits(apis: dict[str, ManagementApi], names: dict[str, str]) -> None:
    user, vhost = q(names["user"]), q(names["vhost"])
    for api in apis.values():
        api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": ""})
        api.ok("PUT", f"/api/vhosts/{vhost}", {})
    same(both(apis, "PUT", f"/api/vhost-limits/{vhost}/max-connections", {"value": 10}), 204)
    same(both(apis, "PUT", f"/api/vhost-limits/{vhost}/max-queues", {"value": "x"}), 400, body=False)
    same(both(apis, "PUT", f"/api/vhost-limits/{vhost}/bogus", {"value": 1}), 400, body=False)
    same(both(apis, "GET", f"/api/vhost-limits/{vhost}"), 200)
    same(both(apis, "DELETE", f"/api/vhost-limits/{vhost}/max-connections"), 204)
    same(both(apis, "PUT", f"/api/user-limits/{user}/max-channels", {"value": 5}), 204)
    same(both(apis, "GET", f"/api/user-limits/{user}"), 200)
    limits = {n: api.ok("GET", f"/api/users/{user}")["limits"] for n, api in apis.items()}
    assert limits["mailslot"] == limits["rabbitmq"] == {"max-channels": 5}
    same(both(apis, "DELETE", f"/api/user-limits/{user}/max-channels"), 204)
