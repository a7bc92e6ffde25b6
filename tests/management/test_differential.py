"""The management API, differentially: the same calls on mailslot and on the reference RabbitMQ 3.10 return
the same status codes, the same field names and the same effects.

Where mailslot's documents differ from RabbitMQ's on purpose, the difference is listed here and in
docs/management-api.md ("Where mailslot differs"): Erlang process internals are left out, mailslot's
forecasts are added. RabbitMQ's statistics lag up to 5 s (collect_statistics_interval), so effects on
counts are polled for, never slept on.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pika
import pytest

from helpers import wait_for

from .client import ManagementApi, q

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

# Fields RabbitMQ has that mailslot leaves out (Erlang internals, or data mailslot does not keep); see
# docs/management-api.md.
RABBITMQ_ONLY = {
    "queue": {"garbage_collection", "reductions", "reductions_details", "backing_queue_status",
              "consumer_capacity", "consumer_utilisation", "idle_since", "messages_persistent",
              "message_bytes_persistent", "message_bytes_unacknowledged"},
    "exchange": {"user_who_performed_action"},
    "connection": {"garbage_collection", "reductions", "reductions_details", "user_provided_name"},
    "channel": {"garbage_collection", "reductions", "reductions_details", "idle_since"},
    "overview": {"erlang_full_version"},
    "message_stats": {"disk_reads", "disk_reads_details", "disk_writes", "disk_writes_details"},
}
MAILSLOT_ONLY = {
    "queue": {"drain_seconds", "full_seconds"},
    "overview": {"python_version", "rss_bytes"},
    "consumer": {"messages_unacknowledged"},
}
SETTLE = 45.0  # seconds to wait for RabbitMQ's statistics to catch up (over 20 s seen under a full CI run)


def unique(prefix: str) -> str:
    return f"mailslot-test.mgmt.{prefix}.{uuid.uuid4().hex[:10]}"


def same_fields(kind: str, mailslot: dict[str, Any], rabbitmq: dict[str, Any]) -> None:
    missing = set(rabbitmq) - set(mailslot) - RABBITMQ_ONLY.get(kind, set())
    extra = set(mailslot) - set(rabbitmq) - MAILSLOT_ONLY.get(kind, set())
    assert not missing, f"{kind}: mailslot lacks {sorted(missing)}"
    assert not extra, f"{kind}: mailslot adds undocumented {sorted(extra)}"


def without_delivery_count(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """mailslot sets x-delivery-count on every redelivery (docs/lifecycle-redelivery.md); RabbitMQ's classic
    queues do not: compare the rest."""
    out = []
    for message in messages:
        properties = dict(message["properties"] or {})
        headers = {k: v for k, v in (properties.pop("headers", None) or {}).items() if k != "x-delivery-count"}
        if headers:
            properties["headers"] = headers
        out.append({**message, "properties": properties or []})
    return out


def both(apis: dict[str, ManagementApi], method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
    return {name: api.request(method, path, body, **kwargs) for name, api in apis.items()}


# ---- authentication and errors -------------------------------------------------------------------------


def test_missing_or_wrong_credentials_and_unknown_paths(apis: dict[str, ManagementApi]) -> None:
    results = {}
    for name, api in apis.items():
        results[name] = (
            api.request("GET", "/api/overview", user=()),  # no Authorization header at all
            api.get("/api/overview", user=("guest", "wrong-password")),
            api.get("/api/no-such-endpoint"),
            api.post("/api/overview", {}),
            api.get("/api/queues/no-such-vhost-" + uuid.uuid4().hex),
        )
    for mine, theirs in zip(results["mailslot"], results["rabbitmq"], strict=True):
        assert mine.status == theirs.status, (mine, theirs)
        assert (mine.json if mine.body else None) == (theirs.json if theirs.body else None)
    no_auth, wrong, _, not_allowed, _ = results["mailslot"]
    assert no_auth.headers["www-authenticate"] == 'Basic realm="RabbitMQ Management"'
    assert wrong.json == {"error": "not_authorized", "reason": "Login failed"}
    allowed = {n: set(r[3].headers["allow"].replace(" ", "").split(",")) - {"OPTIONS"} for n, r in results.items()}
    assert allowed["mailslot"] == allowed["rabbitmq"] == {"GET", "HEAD"}


def test_bodies_that_are_not_json_objects(apis: dict[str, ManagementApi]) -> None:
    name = unique("badbody")
    for raw in (b"{bad", b'"a string"', b"[1, 2]"):
        replies = both(apis, "PUT", f"/api/queues/%2F/{q(name)}", raw=raw)
        assert replies["mailslot"].status == replies["rabbitmq"].status == 400
        assert replies["mailslot"].json == replies["rabbitmq"].json
    bad_field = both(apis, "PUT", f"/api/queues/%2F/{q(name)}", {"durable": "maybe"})
    assert bad_field["mailslot"].status == bad_field["rabbitmq"].status == 400
    assert bad_field["mailslot"].json["error"] == bad_field["rabbitmq"].json["error"] == "bad_request"
    assert "durable" in bad_field["mailslot"].json["reason"]  # mailslot names the field
    for api in apis.values():
        assert api.get(f"/api/queues/%2F/{q(name)}").status == 404  # nothing was created


# ---- queues ----------------------------------------------------------------------------------------------


def test_queue_declare_show_publish_get_purge_delete(apis: dict[str, ManagementApi]) -> None:
    name = unique("q")
    path = f"/api/queues/%2F/{q(name)}"
    for api in apis.values():
        api.created.append(path)
    assert {n: r.status for n, r in both(apis, "PUT", path, {"durable": True, "arguments": {"x-max-length": 50}}).items()} == {
        "mailslot": 201, "rabbitmq": 201}
    again = both(apis, "PUT", path, {"durable": True, "arguments": {"x-max-length": 50}})
    assert again["mailslot"].status == again["rabbitmq"].status == 204
    different = both(apis, "PUT", path, {"durable": False, "arguments": {"x-max-length": 50}})
    assert different["mailslot"].status == different["rabbitmq"].status == 400
    assert different["mailslot"].json == different["rabbitmq"].json  # RabbitMQ's "inequivalent arg" text

    for api in apis.values():
        assert api.publish(name, "one") == {"routed": True}
        assert api.publish(name, "two", properties={"delivery_mode": 2, "headers": {"k": "v"}}) == {"routed": True}
        assert api.publish(name, "\u00e9t\u00e9") == {"routed": True}
        assert api.publish(unique("nowhere"), "lost") == {"routed": False}

    # RabbitMQ adds message_stats to a queue only once its stats timer has run after the first publish.
    docs = {n: wait_for(lambda api=api: (d := api.ok("GET", path)) and d.get("messages") == 3 and "memory" in d
                    and "message_stats" in d and d, SETTLE, 0.2, what=f"3 messages and their stats in {n}")
            for n, api in apis.items()}
    same_fields("queue", docs["mailslot"], docs["rabbitmq"])
    same_fields("message_stats", docs["mailslot"]["message_stats"], docs["rabbitmq"]["message_stats"])
    for field in ("name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "messages", "messages_ready",
                  "messages_unacknowledged", "consumers", "type", "state", "policy"):
        assert docs["mailslot"][field] == docs["rabbitmq"][field], field
    assert docs["mailslot"]["message_stats"]["publish"] == docs["rabbitmq"]["message_stats"]["publish"] == 3

    get = {"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto"}
    first = both(apis, "POST", f"{path}/get", get)
    second = both(apis, "POST", f"{path}/get", {**get, "count": 5, "truncate": 2})
    for result in (first, second):
        assert result["mailslot"].status == result["rabbitmq"].status == 200
        assert without_delivery_count(result["mailslot"].json) == result["rabbitmq"].json
    assert [m["payload"] for m in first["mailslot"].json] == ["one", "two"]
    assert [m["redelivered"] for m in second["mailslot"].json] == [True, True, False]
    base64 = both(apis, "POST", f"{path}/get", {**get, "count": 1, "encoding": "base64"})
    assert without_delivery_count(base64["mailslot"].json) == base64["rabbitmq"].json
    assert base64["mailslot"].json[0]["payload_encoding"] == "base64"

    bad = both(apis, "POST", f"{path}/get", {**get, "encoding": "hex"})
    assert bad["mailslot"].status == bad["rabbitmq"].status == 400
    assert bad["mailslot"].json == bad["rabbitmq"].json

    not_empty = both(apis, "DELETE", f"{path}?if-empty=true")
    assert not_empty["mailslot"].status == not_empty["rabbitmq"].status == 400
    taken = both(apis, "POST", f"{path}/get", {**get, "ackmode": "ack_requeue_false", "count": 1})
    assert without_delivery_count(taken["mailslot"].json) == taken["rabbitmq"].json
    purge = both(apis, "DELETE", f"{path}/contents")
    assert purge["mailslot"].status == purge["rabbitmq"].status == 204
    for n, api in apis.items():
        wait_for(lambda api=api: api.ok("GET", path)["messages"] == 0, SETTLE, 0.2, what=f"empty queue in {n}")
    deleted = both(apis, "DELETE", f"{path}?if-empty=true")
    assert deleted["mailslot"].status == deleted["rabbitmq"].status == 204
    gone = both(apis, "DELETE", path)
    assert gone["mailslot"].status == gone["rabbitmq"].status == 404
    assert gone["mailslot"].json == gone["rabbitmq"].json


def test_reserved_names_and_node_parameter(apis: dict[str, ManagementApi]) -> None:
    for path, body in (
        ("/api/queues/%2F/amq.reserved-" + uuid.uuid4().hex, {}),
        ("/api/exchanges/%2F/amq.reserved-" + uuid.uuid4().hex, {"type": "direct"}),
        ("/api/exchanges/%2F/amq.direct", {"type": "fanout", "durable": True}),
        ("/api/exchanges/%2F/" + unique("badtype"), {"type": "no-such-type"}),
        ("/api/queues/%2F/" + unique("node"), {"node": "nobody@nowhere"}),
    ):
        replies = both(apis, "PUT", path, body)
        assert replies["mailslot"].status == replies["rabbitmq"].status, path
        assert replies["mailslot"].json == replies["rabbitmq"].json, path
    for path in ("/api/exchanges/%2F/amq.direct", "/api/exchanges/%2F/amq.default"):
        replies = both(apis, "DELETE", path)
        assert replies["mailslot"].status == replies["rabbitmq"].status == 401
        assert replies["mailslot"].json == replies["rabbitmq"].json


# ---- listings ---------------------------------------------------------------------------------------------


def test_paging_sorting_filtering_and_columns(apis: dict[str, ManagementApi]) -> None:
    prefix = unique("page")
    names = [f"{prefix}.b", f"{prefix}.a", f"{prefix}.c", f"{prefix}xd"]
    for api in apis.values():
        for name in names:
            api.queue(name)
    base = f"/api/queues/%2F?page=1&page_size=2&name={q(prefix + '.')}"
    pages = {n: api.ok("GET", base) for n, api in apis.items()}
    for page in pages.values():
        assert set(page) == {"filtered_count", "item_count", "items", "page", "page_count", "page_size", "total_count"}
        # "." is a character here, not a regex: the "xd" queue does not match
        assert (page["filtered_count"], page["item_count"], page["page_count"]) == (3, 2, 2)
        assert [item["name"] for item in page["items"]] == [f"{prefix}.a", f"{prefix}.b"]
    regex = {n: api.ok("GET", base.replace("page_size=2", "page_size=10") + "&use_regex=true") for n, api in apis.items()}
    assert regex["mailslot"]["filtered_count"] == regex["rabbitmq"]["filtered_count"] == 4  # "." matches "x" now
    reverse = {n: api.ok("GET", f"/api/queues/%2F?page=1&page_size=10&name={q(prefix)}&sort=name&sort_reverse=true"
                          "&columns=name,messages") for n, api in apis.items()}
    for page in reverse.values():  # RabbitMQ leaves out "messages" until its first stats sample
        assert [i["name"] for i in page["items"]] == sorted(names, reverse=True)
        assert all(set(i) <= {"name", "messages"} for i in page["items"])
    assert all(set(i) == {"name", "messages"} for i in reverse["mailslot"]["items"])
    last = both(apis, "GET", base.replace("page=1", "page=2"))
    assert [i["name"] for i in last["mailslot"].json["items"]] == [i["name"] for i in last["rabbitmq"].json["items"]]
    for bad in ("page=0", "page=abc", "page=1&page_size=501", "page=99&name=" + q(prefix)):
        replies = both(apis, "GET", f"/api/queues/%2F?{bad}")
        assert replies["mailslot"].status == replies["rabbitmq"].status == 400, bad
        assert replies["mailslot"].json == replies["rabbitmq"].json, bad


# ---- exchanges and bindings ---------------------------------------------------------------------------------


def test_exchanges_and_bindings_in_all_four_forms(apis: dict[str, ManagementApi]) -> None:
    source, target, queue = unique("src"), unique("dst"), unique("bq")
    for api in apis.values():
        api.exchange(source, "topic")
        api.exchange(target, "fanout")
        api.queue(queue)
    shown = {n: api.ok("GET", f"/api/exchanges/%2F/{q(source)}") for n, api in apis.items()}
    same_fields("exchange", shown["mailslot"], shown["rabbitmq"])
    assert {k: shown["mailslot"][k] for k in ("type", "durable", "internal", "auto_delete")} == {
        k: shown["rabbitmq"][k] for k in ("type", "durable", "internal", "auto_delete")}

    to_queue = both(apis, "POST", f"/api/bindings/%2F/e/{q(source)}/q/{q(queue)}", {"routing_key": "a.#"})
    to_exchange = both(apis, "POST", f"/api/bindings/%2F/e/{q(source)}/e/{q(target)}", {"routing_key": "b.*"})
    for replies in (to_queue, to_exchange):
        assert replies["mailslot"].status == replies["rabbitmq"].status == 201
        assert replies["mailslot"].headers["location"] == replies["rabbitmq"].headers["location"]
    lists = {
        "between": f"/api/bindings/%2F/e/{q(source)}/q/{q(queue)}",
        "source": f"/api/exchanges/%2F/{q(source)}/bindings/source",
        "destination": f"/api/exchanges/%2F/{q(target)}/bindings/destination",
        "queue": f"/api/queues/%2F/{q(queue)}/bindings",
    }
    for what, path in lists.items():
        replies = both(apis, "GET", path)
        assert replies["mailslot"].json == replies["rabbitmq"].json, what
    [binding] = apis["mailslot"].ok("GET", lists["between"])
    key = binding["properties_key"]
    one = both(apis, "GET", f"{lists['between']}/{key}")
    assert one["mailslot"].json == one["rabbitmq"].json

    for api in apis.values():  # routed through the exchange-to-exchange binding? no: b.* != a.x
        assert api.publish("a.x", "via topic", exchange=source) == {"routed": True}
        assert api.publish("zzz", "nowhere", exchange=source) == {"routed": False}
    in_use = both(apis, "DELETE", f"/api/exchanges/%2F/{q(source)}?if-unused=true")
    assert in_use["mailslot"].status == in_use["rabbitmq"].status == 400
    assert in_use["mailslot"].json == in_use["rabbitmq"].json

    missing = both(apis, "POST", f"/api/bindings/%2F/e/{q(source)}/q/{q(unique('nope'))}", {})
    assert missing["mailslot"].status == missing["rabbitmq"].status == 404
    assert missing["mailslot"].json["error"] == missing["rabbitmq"].json["error"] == "not_found"
    default = both(apis, "POST", f"/api/bindings/%2F/e/amq.default/q/{q(queue)}", {})
    assert default["mailslot"].status == default["rabbitmq"].status == 401

    removed = both(apis, "DELETE", f"{lists['between']}/{key}")
    assert removed["mailslot"].status == removed["rabbitmq"].status == 204
    again = both(apis, "DELETE", f"{lists['between']}/{key}")
    assert again["mailslot"].status == again["rabbitmq"].status == 404
    for api in apis.values():
        assert api.ok("GET", lists["between"]) == []
        # RabbitMQ fills an exchange's message_stats field by field as its stats timer runs: wait for the count.
        stats = wait_for(lambda api=api: (
            s := api.ok("GET", f"/api/exchanges/%2F/{q(source)}").get("message_stats")) and "publish_in" in s and s, SETTLE, 0.2, what="exchange stats")
        assert stats["publish_in"] == 2 and "publish_in_details" in stats


# ---- connections, channels, consumers -------------------------------------------------------------------


def _amqp_url(api: ManagementApi) -> str:
    return getattr(api, "amqp_url", "amqp://guest:guest@127.0.0.1:5672/%2F")


def test_connections_channels_and_consumers_then_closing_one(apis: dict[str, ManagementApi]) -> None:
    queue = unique("cq")
    client_name = unique("conn")
    opened = {}
    for name, api in apis.items():
        api.queue(queue)
        params = pika.URLParameters(_amqp_url(api))
        params.client_properties = {"connection_name": client_name}
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        channel.basic_qos(prefetch_count=7)
        channel.basic_consume(queue, lambda *args: None, consumer_tag="ctag-" + client_name)
        opened[name] = connection
    try:
        found = {}
        for name, api in apis.items():
            def mine(api: ManagementApi = api) -> Any:
                return [c for c in api.ok("GET", "/api/connections")
                        if c["client_properties"].get("connection_name") == client_name and c.get("channels") == 1]
            [found[name]] = wait_for(mine, SETTLE, 0.2, what=f"the connection on {name}")
        same_fields("connection", found["mailslot"], found["rabbitmq"])
        for field in ("user", "vhost", "protocol", "auth_mechanism", "channels", "frame_max", "timeout", "ssl", "type"):
            assert found["mailslot"][field] == found["rabbitmq"][field], field
        channels = {}
        for name, api in apis.items():
            path = f"/api/connections/{q(found[name]['name'])}/channels"
            [channels[name]] = wait_for(lambda api=api, path=path: api.ok("GET", path), SETTLE, 0.2, what=f"channels of {name}")
        same_fields("channel", channels["mailslot"], channels["rabbitmq"])
        for field in ("number", "prefetch_count", "consumer_count", "confirm", "transactional", "user", "vhost"):
            assert channels["mailslot"][field] == channels["rabbitmq"][field], field
        consumers = {}
        for name, api in apis.items():
            [consumers[name]] = [c for c in api.ok("GET", "/api/consumers/%2F") if c["queue"]["name"] == queue]
        same_fields("consumer", consumers["mailslot"], consumers["rabbitmq"])
        same_fields("channel_details", consumers["mailslot"]["channel_details"], consumers["rabbitmq"]["channel_details"])
        for field in ("consumer_tag", "ack_required", "prefetch_count", "exclusive", "active", "activity_status", "queue"):
            assert consumers["mailslot"][field] == consumers["rabbitmq"][field], field

        for name, api in apis.items():
            path = f"/api/connections/{q(found[name]['name'])}"
            assert api.request("DELETE", path, headers={"X-Reason": "maintenance " + client_name}).status == 204
        for name, connection in opened.items():
            with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    connection.process_data_events(0.2)
            assert closed.value.reply_code == 320, name
            assert closed.value.reply_text == f"CONNECTION_FORCED - maintenance {client_name}", name
        gone = both(apis, "GET", f"/api/connections/{q(found['mailslot']['name'])}x")
        assert gone["mailslot"].status == gone["rabbitmq"].status == 404
    finally:
        for connection in opened.values():
            if connection.is_open:
                connection.close()


# ---- overview, nodes, vhosts, whoami ------------------------------------------------------------------


def test_overview_nodes_vhosts_and_whoami_have_rabbitmqs_fields(apis: dict[str, ManagementApi]) -> None:
    queue = unique("ov")
    for api in apis.values():
        api.queue(queue)
        api.publish(queue, "x")
        api.ok("POST", f"/api/queues/%2F/{q(queue)}/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})
    overview = {n: wait_for(lambda api=api: (d := api.ok("GET", "/api/overview")).get("message_stats", {})
                        .get("get_no_ack") and d, SETTLE, 0.2, what="message_stats") for n, api in apis.items()}
    same_fields("overview", overview["mailslot"], overview["rabbitmq"])
    for block in ("object_totals", "queue_totals", "churn_rates", "message_stats"):
        same_fields(block, overview["mailslot"][block], overview["rabbitmq"][block])
    nodes = {n: api.ok("GET", "/api/nodes") for n, api in apis.items()}
    assert len(nodes["mailslot"]) == 1
    for field in ("name", "type", "running", "mem_used", "mem_limit", "mem_alarm", "disk_free", "disk_free_limit",
                  "disk_free_alarm", "fd_used", "fd_total", "uptime", "processors", "os_pid", "rates_mode"):
        assert field in nodes["mailslot"][0], field
    vhost = {n: api.ok("GET", "/api/vhosts/%2F") for n, api in apis.items()}
    same_fields("vhost", vhost["mailslot"], vhost["rabbitmq"])
    whoami = {n: api.ok("GET", "/api/whoami") for n, api in apis.items()}
    assert whoami["mailslot"] == whoami["rabbitmq"] == {"name": "guest", "tags": ["administrator"]}


# ---- health checks --------------------------------------------------------------------------------------


def test_health_checks_answer_alike(apis: dict[str, ManagementApi]) -> None:
    for path, status in (
        ("/api/health/checks/alarms", 200),
        ("/api/health/checks/local-alarms", 200),
        ("/api/health/checks/port-listener/abc", 400),
        ("/api/health/checks/protocol-listener/amqp091", 200),
        ("/api/health/checks/protocol-listener/mqtt", 503),
        ("/api/health/checks/virtual-hosts", 200),
        ("/api/health/checks/certificate-expiration/1/weeks", 200),
        ("/api/health/checks/certificate-expiration/1/fortnights", 400),
        ("/api/health/checks/certificate-expiration/soon/weeks", 400),
        ("/api/health/checks/node-is-quorum-critical", 200),
        ("/api/aliveness-test/%2F", 200),
        ("/api/aliveness-test/" + unique("novhost"), 404),
    ):
        replies = both(apis, "GET", path)
        assert replies["mailslot"].status == replies["rabbitmq"].status == status, path
        mine, theirs = replies["mailslot"].json, replies["rabbitmq"].json
        assert set(mine) == set(theirs), path
        if "protocols" not in mine:
            assert mine == theirs, path
    for name, api in apis.items():
        port = int(api.base.rsplit(":", 1)[1])
        assert api.ok("GET", f"/api/health/checks/port-listener/{port}") == {"status": "ok", "port": port}, name
        missing = api.get("/api/health/checks/port-listener/1")
        assert missing.status == 503 and missing.json["missing"] == 1 and port in missing.json["ports"]


def test_global_parameters(apis: dict[str, ManagementApi]) -> None:
    name = unique("gp")
    path = f"/api/global-parameters/{q(name)}"
    for api in apis.values():
        api.created.append(path)
    steps = [("PUT", {"value": {"a": 1}}), ("GET", None), ("PUT", {"value": {"a": 2}}), ("PUT", {"val": 1}),
             ("DELETE", None), ("DELETE", None), ("GET", None)]
    for method, body in steps:
        replies = both(apis, method, path, body)
        assert replies["mailslot"].status == replies["rabbitmq"].status, (method, body)
        if method == "GET" and replies["mailslot"].status == 200:
            assert replies["mailslot"].json["value"] == replies["rabbitmq"].json["value"]


def test_definitions_move_between_the_two_brokers(apis: dict[str, ManagementApi]) -> None:
    """A file exported from RabbitMQ imports into mailslot (users keep their password hashes); one exported
    from mailslot imports into RabbitMQ. Per vhost and whole."""
    rabbit, mine = apis["rabbitmq"], apis["mailslot"]
    vhost, user = unique("defs"), unique("defuser")
    assert rabbit.put(f"/api/vhosts/{q(vhost)}").status == 201
    try:
        rabbit.ok("PUT", f"/api/users/{q(user)}", {"password": "s3cret", "tags": "management"})
        rabbit.ok("PUT", f"/api/permissions/{q(vhost)}/{q(user)}", {"configure": ".*", "write": ".*", "read": "^d"})
        rabbit.ok("PUT", f"/api/permissions/{q(vhost)}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        rabbit.ok("PUT", f"/api/vhost-limits/{q(vhost)}/max-queues", {"value": 100})
        queue, exchange = unique("dq"), unique("dx")
        rabbit.ok("PUT", f"/api/queues/{q(vhost)}/{q(queue)}", {"durable": True, "arguments": {"x-max-length": 10}})
        rabbit.ok("PUT", f"/api/exchanges/{q(vhost)}/{q(exchange)}", {"type": "topic", "durable": True})
        rabbit.ok("POST", f"/api/bindings/{q(vhost)}/e/{q(exchange)}/q/{q(queue)}", {"routing_key": "k.#"})

        per_vhost = rabbit.ok("GET", f"/api/definitions/{q(vhost)}")
        assert mine.post("/api/definitions/%2F", per_vhost).status == 204  # RabbitMQ's vhost file into "/"
        assert mine.ok("GET", f"/api/queues/%2F/{q(queue)}")["arguments"] == {"x-max-length": 10}
        assert mine.ok("GET", f"/api/exchanges/%2F/{q(exchange)}")["type"] == "topic"
        assert [b["routing_key"] for b in mine.ok("GET", f"/api/bindings/%2F/e/{q(exchange)}/q/{q(queue)}")] == ["k.#"]
        assert set(mine.ok("GET", "/api/definitions/%2F")) == set(per_vhost)

        whole = rabbit.ok("GET", "/api/definitions")
        assert mine.post("/api/definitions", whole).status == 204  # the whole file: users, vhosts, everything
        assert mine.get("/api/whoami", user=(user, "s3cret")).json == {"name": user, "tags": ["management"]}
        assert mine.ok("GET", f"/api/permissions/{q(vhost)}/{q(user)}")["read"] == "^d"
        assert mine.ok("GET", f"/api/vhost-limits/{q(vhost)}") == [{"vhost": vhost, "value": {"max-queues": 100}}]
        assert mine.ok("GET", f"/api/queues/{q(vhost)}/{q(queue)}")["durable"] is True

        ours = mine.ok("GET", "/api/definitions")  # and mailslot's back into RabbitMQ, after a clean slate
        assert set(ours) == set(whole)
        rabbit.ok("DELETE", f"/api/vhosts/{q(vhost)}")
        rabbit.ok("DELETE", f"/api/users/{q(user)}")
        mine_only = {
            **ours,
            "users": [u for u in ours["users"] if u["name"] == user],
            "vhosts": [v for v in ours["vhosts"] if v["name"] == vhost],
            "permissions": [p for p in ours["permissions"] if p["vhost"] == vhost],
            "topic_permissions": [],
            "parameters": [p for p in ours["parameters"] if p["vhost"] == vhost],
            "global_parameters": [],
            "queues": [x for x in ours["queues"] if x["vhost"] == vhost],
            "exchanges": [x for x in ours["exchanges"] if x["vhost"] == vhost],
            "bindings": [x for x in ours["bindings"] if x["vhost"] == vhost],
        }
        assert rabbit.post("/api/definitions", mine_only).status == 204
        assert rabbit.get("/api/whoami", user=(user, "s3cret")).json == {"name": user, "tags": ["management"]}
        assert rabbit.ok("GET", f"/api/queues/{q(vhost)}/{q(queue)}")["arguments"] == {"x-max-length": 10}
        assert [b["routing_key"] for b in rabbit.ok("GET", f"/api/bindings/{q(vhost)}/e/{q(exchange)}/q/{q(queue)}")] == ["k.#"]
        assert rabbit.ok("GET", f"/api/vhost-limits/{q(vhost)}") == [{"vhost": vhost, "value": {"max-queues": 100}}]
    finally:
        rabbit.delete(f"/api/vhosts/{q(vhost)}")
        rabbit.delete(f"/api/users/{q(user)}")
