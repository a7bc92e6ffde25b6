"""mailslot's /api/mailslot/ extras (http/extras.py, http/tracing_api.py): browse with dead-letter filters,
dead-letter queues, redrive with its dry run, progress and cancel, and tracing with the message history."""

from __future__ import annotations

import json
from typing import Any

import pika
import pytest

from helpers import wait_for

from .client import ManagementApi

pytestmark = pytest.mark.timeout(60)


def dead_letters(api: ManagementApi, count: int) -> None:
    """orders -> (rejected) -> dlx -> orders.dlq: ``count`` JSON messages, half of them tenant=a."""
    api.exchange("dlx", "fanout", durable=True)
    api.queue("orders.dlq", durable=True)
    api.ok("POST", "/api/bindings/%2F/e/dlx/q/orders.dlq", {"routing_key": ""})
    api.queue("orders", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
    for i in range(count):
        api.publish("orders", json.dumps({"n": i}), properties={
            "delivery_mode": 2, "content_type": "application/json", "message_id": f"id-{i}",
            "headers": {"tenant": "a" if i % 2 == 0 else "b"}})
    connection = pika.BlockingConnection(pika.URLParameters(api.amqp_url))  # type: ignore[attr-defined]
    channel = connection.channel()
    for _ in range(count):
        method, _props, _body = channel.basic_get("orders")
        assert method is not None
        channel.basic_reject(method.delivery_tag, requeue=False)
    connection.close()
    wait_for(lambda: api.ok("GET", "/api/queues/%2F/orders.dlq")["messages"] == count, 15.0, 0.05, what="dead letters")


def test_browse_filters_and_decodes(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    dead_letters(api, 4)
    page = api.ok("GET", "/api/mailslot/queues/%2F/orders.dlq/messages?header=tenant%3Db&limit=10")
    assert (page["messages"], page["scanned"], page["matched"]) == (4, 4, 2)
    first = page["items"][0]
    assert first["payload_json"] == {"n": 1} and first["position"] == 1
    assert first["x_death"][0]["queue"] == "orders" and first["x_death"][0]["reason"] == "rejected"
    assert first["first_death"] == {"queue": "orders", "reason": "rejected", "exchange": ""}
    assert first["properties"]["message_id"] == "id-1"
    assert api.ok("GET", "/api/mailslot/queues/%2F/orders.dlq/messages?reason=expired")["items"] == []
    assert len(api.ok("GET", "/api/mailslot/queues/%2F/orders.dlq/messages?body=%22n%22%3A%203")["items"]) == 1
    assert api.get("/api/mailslot/queues/%2F/orders.dlq/messages?reason=bored").status == 400
    assert api.get("/api/mailslot/queues/%2F/orders.dlq/messages?min_age=x").status == 400
    assert api.get("/api/mailslot/queues/%2F/missing/messages").status == 404
    assert api.ok("GET", "/api/queues/%2F/orders.dlq")["messages"] == 4  # browsing took nothing


def test_dead_letter_queue_list_and_summary(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    dead_letters(api, 3)
    listed = api.ok("GET", "/api/mailslot/dlq")
    assert [(d["vhost"], d["name"], d["messages"], d["sources"]) for d in listed] == [("/", "orders.dlq", 3, ["orders"])]
    summary = api.ok("GET", "/api/mailslot/dlq/%2F/orders.dlq")
    assert summary["by_reason"] == {"rejected": 3} and summary["by_source"] == {"orders": 3}


def test_redrive_dry_run_then_by_filter_back_to_origin(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    dead_letters(api, 6)
    path = "/api/mailslot/dlq/%2F/orders.dlq/redrive"
    dry = api.ok("POST", path, {"filter": {"header": "tenant=a"}, "dry_run": True})
    assert (dry["matched"], dry["would_move"], dry["unroutable"]) == (3, 3, 0)
    assert {item["destination_queues"][0] for item in dry["items"]} == {"orders"}
    assert api.ok("GET", "/api/queues/%2F/orders.dlq")["messages"] == 6
    reply = api.post(path, {"filter": {"header": "tenant=a"}})
    assert reply.status == 202
    progress_path = reply.headers["location"]
    done = wait_for(lambda: (d := api.ok("GET", progress_path)) and d["state"] == "done" and d, 15.0, 0.05, what="redrive done")
    assert (done["matched"], done["moved"], done["failed"], done["remaining"]) == (3, 3, 0, 0)
    assert api.ok("GET", "/api/queues/%2F/orders")["messages"] == 3
    back = api.ok("GET", "/api/mailslot/queues/%2F/orders/messages")["items"]
    assert [m["payload_json"]["n"] for m in back] == [0, 2, 4]
    assert all(m["x_death"][0]["queue"] == "orders" for m in back)  # history kept
    assert any(r["id"] == done["id"] for r in api.ok("GET", "/api/mailslot/redrives"))


def test_redrive_by_id_to_an_exchange_at_a_rate_and_cancel(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    dead_letters(api, 4)
    api.queue("parking", durable=True)
    ids = [m["id"] for m in api.ok("GET", "/api/mailslot/queues/%2F/orders.dlq/messages")["items"]]
    path = "/api/mailslot/dlq/%2F/orders.dlq/redrive"
    reply = api.post(path, {"ids": ids[:2], "target": {"exchange": "amq.default", "routing_key": "parking"}})
    wait_for(lambda: api.ok("GET", reply.headers["location"])["state"] == "done", 15.0, 0.05, what="moved")
    assert api.ok("GET", "/api/queues/%2F/parking")["messages"] == 2
    slow = api.post(path, {"rate": 0.5, "target": {"exchange": "", "routing_key": "parking"}})
    assert slow.status == 202
    assert api.delete(slow.headers["location"]).status == 204
    cancelled = api.ok("GET", slow.headers["location"])
    assert cancelled["state"] == "cancelled" and cancelled["moved"] <= 1
    total = api.ok("GET", "/api/queues/%2F/parking")["messages"] + api.ok("GET", "/api/queues/%2F/orders.dlq")["messages"]
    assert total == 4  # nothing lost, nothing doubled
    assert api.post(path, {"ids": "x"}).status == 400
    assert api.post(path, {"ids": [1], "positions": [0]}).status == 400
    assert api.post(path, {"positions": [-1]}).status == 400
    assert api.post(path, {"rate": -1}).status == 400
    assert api.post(path, {"target": {"exchange": 5}}).status == 400
    assert api.get("/api/mailslot/redrives/%2F/nope").status == 404


def test_redrive_needs_write_on_the_target(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    dead_letters(api, 1)
    api.ok("PUT", "/api/users/dash-api-reader", {"password": "pw", "tags": "management"})
    api.ok("PUT", "/api/permissions/%2F/dash-api-reader", {"configure": "", "write": "", "read": ".*"})
    user = ("dash-api-reader", "pw")
    assert api.get("/api/mailslot/queues/%2F/orders.dlq/messages", user=user).status == 200
    refused = api.post("/api/mailslot/dlq/%2F/orders.dlq/redrive", {}, user=user)
    assert refused.status == 401 and refused.json["error"] == "not_authorised"
    assert api.ok("GET", "/api/queues/%2F/orders.dlq")["messages"] == 1


def test_tracing_flag_firehose_and_history(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    assert api.ok("GET", "/api/vhosts/%2F")["tracing"] is False
    assert api.put("/api/mailslot/trace/%2F", {"archive": True}).status == 400  # tracing is off
    api.ok("PUT", "/api/vhosts/%2F", {"tracing": True})
    assert api.ok("GET", "/api/vhosts/%2F")["tracing"] is True
    refused = api.put("/api/mailslot/trace/%2F", {"archive": True})
    assert refused.status == 400 and "data directory" in refused.json["reason"]  # a memory store
    assert api.ok("GET", "/api/mailslot/trace/%2F")["archive"] is None
    connection = pika.BlockingConnection(pika.URLParameters(api.amqp_url))  # type: ignore[attr-defined]
    channel = connection.channel()
    channel.queue_declare("firehose", exclusive=True)
    channel.queue_bind("firehose", "amq.rabbitmq.trace", "#")
    channel.queue_declare("work")
    channel.basic_publish("", "work", b"hello", pika.BasicProperties(message_id="m-1", headers={"order": "42"}))
    method, _props, _body = wait_for(lambda: (got := channel.basic_get("work")) and got[0] and got, 15.0, 0.05, what="delivery")
    channel.basic_ack(method.delivery_tag)
    traces = []
    wait_for(lambda: (g := channel.basic_get("firehose", auto_ack=True))[0] and traces.append(g)
         or len(traces) >= 2, 15.0, 0.05, what="two trace messages")
    keys = [t[0].routing_key for t in traces]
    assert keys == ["publish.", "deliver.work"]
    headers = traces[0][1].headers
    assert headers["exchange_name"] == "" and headers["routing_keys"] == ["work"]
    assert headers["routed_queues"] == ["work"] and headers["user"] == "guest"
    assert headers["properties"]["message_id"] == "m-1" and traces[0][2] == b"hello"
    assert traces[1][1].headers["redelivered"] == 0
    history = api.ok("GET", "/api/mailslot/trace/%2F/messages/m-1")["items"]
    assert [e["event"] for e in history[0]["events"]] == ["published", "delivered", "acked"]
    assert history[0]["events"][0]["queues"] == ["work"]
    by_header = api.ok("GET", "/api/mailslot/trace/%2F/messages?header=order%3D42")["items"]
    assert len(by_header) == 1
    connection.close()
    api.ok("PUT", "/api/vhosts/%2F", {"tracing": False})
    assert api.ok("GET", "/api/vhosts/%2F")["tracing"] is False
    status = api.ok("GET", "/api/mailslot/trace/%2F")
    assert status["tracing"] is False and status["messages"] >= 1  # the history stays readable
    assert api.put("/api/vhosts/%2F", {"tracing": "maybe"}).status == 400


def test_tracing_flag_as_rabbitmq(apis: dict[str, ManagementApi]) -> None:
    """The vhost ``tracing`` flag on both brokers: set, shown, cleared; a non-boolean is a 400 that
    changes nothing."""
    import uuid

    vhost = f"dash-api-flag-{uuid.uuid4().hex[:8]}"
    seen: dict[str, list[Any]] = {}
    for name, api in apis.items():
        path = f"/api/vhosts/{vhost}"
        try:
            steps = [api.put(path, {}).status, api.ok("GET", path)["tracing"]]
            steps += [api.put(path, {"tracing": True}).status, api.ok("GET", path)["tracing"]]
            steps += [api.put(path, {"tracing": "maybe"}).status, api.ok("GET", path)["tracing"]]
            steps += [api.put(path, {"tracing": "false"}).status, api.ok("GET", path)["tracing"]]
            fresh = f"{path}-new"
            steps += [api.put(fresh, {"tracing": 7}).status, api.get(fresh).status]
        finally:
            api.delete(path)
            api.delete(f"{path}-new")
        seen[name] = steps
    assert seen["mailslot"] == seen["rabbitmq"] == [201, False, 204, True, 400, True, 204, False, 400, 404]


def test_tracing_flag_survives_a_restart_and_goes_with_its_vhost(tmp_path: Any) -> None:
    from mailslot.testing import broker_in_thread

    with broker_in_thread(store="segments", data_dir=tmp_path) as broker:
        api = ManagementApi(broker.http_url, name="mailslot")
        api.ok("PUT", "/api/vhosts/dash-api-kept", {"tracing": True})
        api.ok("PUT", "/api/vhosts/dash-api-gone", {"tracing": True})
        api.ok("DELETE", "/api/vhosts/dash-api-gone")
    with broker_in_thread(store="segments", data_dir=tmp_path) as broker:
        api = ManagementApi(broker.http_url, name="mailslot")
        assert api.ok("GET", "/api/vhosts/dash-api-kept")["tracing"] is True
        assert api.ok("GET", "/api/mailslot/trace/dash-api-kept")["tracing"] is True
        api.ok("PUT", "/api/vhosts/dash-api-gone", {})
        assert api.ok("GET", "/api/vhosts/dash-api-gone")["tracing"] is False


def test_browse_bounds(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    api.queue("bounded")
    for i in range(5):
        api.publish("bounded", f"b{i}", properties={"headers": {"i": i}})
    page = api.ok("GET", "/api/mailslot/queues/%2F/bounded/messages?header=i%3D4&scan=3")
    assert (page["scanned"], page["matched"], page["truncated_scan"]) == (3, 0, True)
    page = api.ok("GET", "/api/mailslot/queues/%2F/bounded/messages?header=i%3D4")
    assert (page["scanned"], page["matched"], page["truncated_scan"]) == (5, 1, False)
    assert api.get("/api/mailslot/queues/%2F/bounded/messages?offset=99999&limit=2").status == 400
    assert api.get("/api/mailslot/queues/%2F/bounded/messages?scan=100001").status == 400
    assert api.get("/api/mailslot/queues/%2F/bounded/messages?limit=10001").status == 400


def test_a_running_redrive_stops_with_the_broker(tmp_path: Any) -> None:
    """Stopping the broker cancels a redrive between two steps; after a restart every message is in
    exactly one of the two queues."""
    from mailslot.testing import broker_in_thread

    with broker_in_thread(store="segments", data_dir=tmp_path) as broker:
        api = ManagementApi(broker.http_url, name="mailslot")
        api.amqp_url = broker.amqp_url  # type: ignore[attr-defined]
        dead_letters(api, 6)
        api.queue("slow-target", durable=True)
        started = api.post("/api/mailslot/dlq/%2F/orders.dlq/redrive",
                           {"rate": 2, "target": {"exchange": "", "routing_key": "slow-target"}})
        assert started.status == 202
        wait_for(lambda: api.ok("GET", started.headers["location"])["moved"] >= 1, 15.0, 0.05, what="a first move")
    with broker_in_thread(store="segments", data_dir=tmp_path) as broker:
        api = ManagementApi(broker.http_url, name="mailslot")
        moved = api.ok("GET", "/api/queues/%2F/slow-target")["messages"]
        left = api.ok("GET", "/api/queues/%2F/orders.dlq")["messages"]
        assert moved + left == 6 and 1 <= moved < 6


def test_forgotten_histories_are_archived_on_disk(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailslot.http import tracing_api
    from mailslot.testing import broker_in_thread

    monkeypatch.setattr(tracing_api, "HISTORY_CAPACITY", 3)
    with broker_in_thread(store="segments", data_dir=tmp_path) as broker:
        api = ManagementApi(broker.http_url, name="mailslot")
        api.ok("PUT", "/api/vhosts/%2F", {"tracing": True})
        assert api.put("/api/mailslot/trace/%2F", {"archive": "yes"}).status == 400
        assert api.put("/api/mailslot/trace/nope", {"archive": True}).status == 404
        api.ok("PUT", "/api/mailslot/trace/%2F", {"archive": True})
        api.queue("archived")
        for i in range(8):
            api.publish("archived", f"a{i}", properties={"message_id": f"a-{i}", "headers": {"n": i}})
        status = api.ok("GET", "/api/mailslot/trace/%2F")
        assert status["messages"] == 3 and status["archive"]["messages"] == 5
        assert status["dropped_messages"] == 0  # forgotten in memory, kept on disk
        old = api.ok("GET", "/api/mailslot/trace/%2F/messages/a-0")["items"]
        assert [e["event"] for e in old[0]["events"]] == ["published"]
        assert len(api.ok("GET", "/api/mailslot/trace/%2F/messages?header=n%3D1")["items"]) == 1
    with broker_in_thread(store="segments", data_dir=tmp_path) as broker:  # tracing stayed on: so did the archive
        api = ManagementApi(broker.http_url, name="mailslot")
        assert len(api.ok("GET", "/api/mailslot/trace/%2F/messages/a-0")["items"]) == 1
        assert len(api.ok("GET", "/api/mailslot/trace/%2F/messages/a-7")["items"]) == 1  # kept at the stop
        api.ok("PUT", "/api/vhosts/%2F", {"tracing": False})
        api.ok("PUT", "/api/vhosts/%2F", {"tracing": True})  # a new history: the old one is gone
        assert api.ok("GET", "/api/mailslot/trace/%2F/messages/a-0")["items"] == []


def test_archive_rotation_is_bounded(tmp_path: Any) -> None:
    from mailslot.http.trace_archive import TraceArchive

    archive = TraceArchive(tmp_path, "/", max_file_bytes=200)
    for i in range(40):
        archive.append({"message_id": f"m{i}", "headers": {}, "events": []})
    status = archive.status()
    assert status["bytes"] <= 2 * 200 + 100 and status["dropped_messages"] > 0
    assert status["messages"] + status["dropped_messages"] == 40
    found = archive.search(lambda d: True)
    assert [d["message_id"] for d in found] == [f"m{i}" for i in range(40 - len(found), 40)]


def test_redrive_refuses_another_connections_exclusive_queue(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    connection = pika.BlockingConnection(pika.URLParameters(api.amqp_url))  # type: ignore[attr-defined]
    try:
        connection.channel().queue_declare("dash-api-mine", exclusive=True)
        refused = api.post("/api/mailslot/dlq/%2F/dash-api-mine/redrive", {})
        assert refused.status == 400 and "RESOURCE_LOCKED" in refused.json["reason"]
    finally:
        connection.close()


def test_move_by_position(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    api.queue("dash-api-pos")
    api.queue("dash-api-pos-to")
    for i in range(4):
        api.publish("dash-api-pos", f"p{i}")
    dry = api.ok("POST", "/api/mailslot/queues/%2F/dash-api-pos/move",
                 {"positions": [1, 3], "dry_run": True, "target": {"exchange": "", "routing_key": "dash-api-pos-to"}})
    assert dry["matched"] == 2
    reply = api.post("/api/mailslot/queues/%2F/dash-api-pos/move",
                     {"positions": [1, 3], "target": {"exchange": "", "routing_key": "dash-api-pos-to"}})
    wait_for(lambda: api.ok("GET", reply.headers["location"])["state"] == "done", 15.0, 0.05, what="moved")
    assert [m["payload"] for m in api.ok("GET", "/api/mailslot/queues/%2F/dash-api-pos-to/messages")["items"]] == [
        "p1", "p3"]


def test_move_messages_of_any_queue(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    api.queue("dash-api-from")
    api.queue("dash-api-to")
    for i in range(3):
        api.publish("dash-api-from", f"x{i}")
    reply = api.post("/api/mailslot/queues/%2F/dash-api-from/move",
                     {"limit": 2, "target": {"exchange": "", "routing_key": "dash-api-to"}})
    assert reply.status == 202
    wait_for(lambda: api.ok("GET", reply.headers["location"])["state"] == "done", 15.0, 0.05, what="moved")
    moved = api.ok("GET", "/api/mailslot/queues/%2F/dash-api-to/messages")["items"]
    assert [m["payload"] for m in moved] == ["x0", "x1"]
    assert [m["payload"] for m in api.ok("GET", "/api/mailslot/queues/%2F/dash-api-from/messages")["items"]] == ["x2"]
