"""mailslot's management API on its own: what has no counterpart on the reference (peek, the body limit,
errors that name the field, forecasts) and what needs a broker of our own (AMQP traffic seen in the stats,
closing a connection, the listener addresses, anonymous health checks)."""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import pika
import pytest

from helpers import wait_for
from mailslot.testing import broker_in_thread

from .client import ManagementApi, q

pytestmark = pytest.mark.timeout(60)


def amqp(api: ManagementApi) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(api.amqp_url))  # type: ignore[attr-defined]


# ---- peek --------------------------------------------------------------------------------------------


def test_peek_shows_messages_in_order_without_taking_or_marking_them(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    api.queue("jobs", durable=True)
    for i in range(5):
        api.publish("jobs", f"m{i}", properties={"delivery_mode": 2, "headers": {"n": i}})
    api.publish("jobs", base64.b64encode(b"\xff\xfe").decode(), properties={})  # not UTF-8 once decoded
    api.ok("POST", "/api/exchanges/%2F/amq.default/publish", {
        "routing_key": "jobs", "payload": base64.b64encode(b"\xff\xfe").decode(), "payload_encoding": "base64",
        "properties": {}})
    peeked = api.ok("GET", "/api/mailslot/queues/%2F/jobs/peek?count=3&truncate=1")
    assert [(m["position"], m["payload"], m["payload_bytes"]) for m in peeked] == [(0, "m", 2), (1, "m", 2), (2, "m", 2)]
    assert [m["properties"]["headers"]["n"] for m in peeked] == [0, 1, 2]
    assert all(m["redelivered"] is False for m in peeked)
    everything = api.ok("GET", "/api/mailslot/queues/%2F/jobs/peek?count=100&encoding=auto")
    assert len(everything) == 7 and everything[-1]["payload_encoding"] == "base64"
    assert everything[-1]["payload"] == base64.b64encode(b"\xff\xfe").decode()
    queue = wait_for(lambda: (d := api.ok("GET", "/api/queues/%2F/jobs")) and d["messages"] == 7 and d, 15.0, 0.05, what="7 messages")
    assert queue["messages_ready"] == 7 and queue["message_stats"]["publish"] == 7
    assert "deliver_get" not in queue["message_stats"]  # peeking delivered nothing
    got = api.ok("POST", "/api/queues/%2F/jobs/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert got[0]["payload"] == "m0" and got[0]["redelivered"] is False  # not marked redelivered by the peeks
    assert api.get("/api/mailslot/queues/%2F/jobs/peek?count=abc").status == 400
    assert api.get("/api/mailslot/queues/%2F/jobs/peek?encoding=hex").status == 400
    assert api.get("/api/mailslot/queues/%2F/nope/peek").status == 404


def test_peek_reads_messages_paged_out_to_the_store(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailslot.core import queue as queue_module

    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 100)  # a small memory window: most is paged out
    with broker_in_thread(store="segments", data_dir=tmp_path) as broker:
        api = ManagementApi(broker.http_url, name="mailslot")
        connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
        channel = connection.channel()
        channel.queue_declare("deep", durable=True)
        for i in range(1000):
            channel.basic_publish("", "deep", str(i).encode(), pika.BasicProperties(delivery_mode=2))
        connection.close()
        doc = wait_for(lambda: (d := api.ok("GET", "/api/queues/%2F/deep")) and d["messages"] == 1000 and d, 15.0, 0.05, what="paged")
        assert doc["messages_paged_out"] > 800 and doc["messages_ready_ram"] < 200
        peeked = api.ok("GET", "/api/mailslot/queues/%2F/deep/peek?count=1000")
        assert [int(m["payload"]) for m in peeked] == list(range(1000))
        assert api.ok("GET", "/api/queues/%2F/deep")["messages_paged_out"] == doc["messages_paged_out"]  # nothing paged in


# ---- bodies and errors ---------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_before_it_is_read() -> None:
    with broker_in_thread(http_max_body_size=1000) as broker:
        api = ManagementApi(broker.http_url)
        big = api.put("/api/queues/%2F/q", raw=b'{"arguments": {"x": "' + b"a" * 2000 + b'"}}')
        assert big.status == 400 and big.json == {"error": "bad_request", "reason": "Exceeded HTTP request body size limit"}
        assert api.get("/api/queues/%2F/q").status == 404
        assert api.put("/api/queues/%2F/q", {"durable": True}).status == 201


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/api/queues/%2F/q", {"durable": "maybe"}, "durable"),
        ("/api/queues/%2F/q", {"arguments": [1]}, "arguments"),
        ("/api/exchanges/%2F/x", {"type": 3}, "type"),
        ("/api/exchanges/%2F/amq.default/publish", {"routing_key": "q", "payload": "x",
                                                     "payload_encoding": "rot13", "properties": {}}, "payload_encoding"),
        ("/api/exchanges/%2F/amq.default/publish", {"routing_key": "q", "payload": "x", "payload_encoding": "string",
                                                     "properties": {"delivery_mode": 7}}, "properties.delivery_mode"),
        ("/api/exchanges/%2F/amq.default/publish", {"routing_key": "q", "payload": "x", "payload_encoding": "string",
                                                     "properties": {"headers": {"a": None}}}, "properties.headers.a"),
        ("/api/exchanges/%2F/amq.default/publish", {"payload": "x", "payload_encoding": "string", "properties": {}},
         "routing_key"),
        ("/api/queues/%2F/q/get", {"count": 1, "encoding": "auto", "ackmode": "take_it"}, "ackmode"),
        ("/api/queues/%2F/q/get", {"ackmode": "ack_requeue_true", "encoding": "auto"}, "count"),
        ("/api/queues/%2F/q/get", {"count": "two", "ackmode": "ack_requeue_true", "encoding": "auto"}, "count"),
    ],
)
def test_a_bad_field_is_a_400_that_names_it(mailslot_api: ManagementApi, path: str, body: dict[str, Any], named: str) -> None:
    mailslot_api.put("/api/queues/%2F/q", {})
    method = "POST" if path.endswith(("/publish", "/get")) else "PUT"
    reply = mailslot_api.request(method, path, body)
    assert reply.status == 400 and reply.json["error"] == "bad_request", reply.body
    assert reply.json["reason"].startswith(named), reply.json


def test_names_are_never_patterns_unless_asked(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    for name in ("a.b", "axb", "(", "[x]"):
        api.queue(name)
    def names(query: str) -> list[str]:
        return [i["name"] for i in api.ok("GET", f"/api/queues?page=1&{query}")["items"]]
    assert names("name=a.b") == ["a.b"]
    assert names("name=a.b&use_regex=true") == ["a.b", "axb"]
    assert names("name=%28") == ["("]  # a lone "(" is text, not a broken pattern
    assert names("name=%5Bx%5D") == ["[x]"]
    bad = api.get("/api/queues?page=1&name=%28&use_regex=true")
    assert bad.status == 400 and bad.json["reason"].startswith("name: not a valid regular expression")
    assert api.get(f"/api/queues/%2F/{q('a.b')}").status == 200 and api.get("/api/queues/%2F/a.c").status == 404


# ---- stats from AMQP traffic ------------------------------------------------------------------------------


def test_amqp_traffic_shows_in_queue_channel_vhost_and_overview_stats(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    connection = amqp(api)
    try:
        channel = connection.channel()
        channel.queue_declare("work", arguments={"x-max-length": 10_000})
        channel.confirm_delivery()
        for i in range(100):
            channel.basic_publish("", "work", b"x%d" % i)
        channel.basic_publish("", "nowhere", b"lost")
        consumer = connection.channel()
        consumer.basic_qos(prefetch_count=10)
        seen: list[int] = []

        def handle(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            seen.append(method.delivery_tag)
            if len(seen) % 2:
                ch.basic_ack(method.delivery_tag)
            else:
                ch.basic_nack(method.delivery_tag, requeue=len(seen) <= 20)
        consumer.basic_consume("work", handle)
        deadline = time.monotonic() + 10
        while len(seen) < 110 and time.monotonic() < deadline:
            connection.process_data_events(0.05)

        def sampled() -> Any:
            d = api.ok("GET", "/api/queues/%2F/work")
            stats = d.get("message_stats", {})
            return stats.get("redeliver") and stats["publish_details"]["rate"] > 0 and d
        queue = wait_for(sampled, 15.0, 0.05, what="queue stats")
        stats = queue["message_stats"]
        assert stats["publish"] == 100 and stats["deliver"] >= 100 and stats["redeliver"] >= 10
        assert stats["ack"] >= 50 and stats["deliver_get"] == stats["deliver"]
        assert stats["publish_details"]["rate"] > 0 and queue["consumers"] == 1

        conns = wait_for(lambda: api.ok("GET", "/api/connections"), 15.0, 0.05, what="connection")
        assert conns[0]["channels"] == 2 and conns[0]["recv_oct"] > 0 and conns[0]["send_oct"] > 0
        chans = {c["number"]: c for c in api.ok("GET", "/api/channels")}
        publisher = chans[1]["message_stats"]
        assert publisher["publish"] == 101 and publisher["confirm"] == 101 and publisher["drop_unroutable"] == 1
        assert chans[1]["confirm"] is True and chans[2]["prefetch_count"] == 10 and chans[2]["consumer_count"] == 1
        assert chans[2]["message_stats"]["deliver"] >= 100 and "publish" not in chans[2]["message_stats"]
        one = api.ok("GET", f"/api/channels/{q(chans[2]['name'])}")
        assert [c["queue"]["name"] for c in one["consumer_details"]] == ["work"]
        vhost = api.ok("GET", "/api/vhosts/%2F")
        assert vhost["message_stats"]["publish"] == 101 and vhost["recv_oct"] > 0
        overview = api.ok("GET", "/api/overview")
        assert overview["object_totals"]["connections"] == 1 and overview["object_totals"]["consumers"] == 1
        assert overview["message_stats"]["drop_unroutable"] == 1 and overview["churn_rates"]["channel_created"] >= 2
    finally:
        connection.close()
    # totals outlive the channels that counted them
    after = wait_for(lambda: (d := api.ok("GET", "/api/overview")) and not d["object_totals"]["connections"] and d, 15.0, 0.05, what="closed")
    assert after["message_stats"]["publish"] == 101 and after["churn_rates"]["connection_closed"] == 1


def test_forecasts_are_extra_fields_of_queues(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    api.queue("bounded", arguments={"x-max-length": 1000})
    for _ in range(20):
        api.publish("bounded", "x")
    doc = wait_for(lambda: (d := api.ok("GET", "/api/queues/%2F/bounded"))["full_seconds"] and d, 15.0, 0.05, what="a fill rate")
    assert doc["full_seconds"] == pytest.approx((1000 - doc["messages"]) / doc["message_stats"]["publish_details"]["rate"], rel=0.05)
    assert doc["drain_seconds"] is None  # nobody consumes


# ---- connections --------------------------------------------------------------------------------------


def test_closing_a_connection_by_user_and_a_missing_one(mailslot_api: ManagementApi) -> None:
    api = mailslot_api
    connection = amqp(api)
    try:
        wait_for(lambda: api.ok("GET", "/api/connections/username/guest"), 15.0, 0.05, what="listed")
        assert api.ok("GET", "/api/vhosts/%2F/connections")[0]["user"] == "guest"
        assert api.delete("/api/connections/username/guest").status == 204
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                connection.process_data_events(0.1)
        assert closed.value.reply_text == "CONNECTION_FORCED - Closed via management plugin"
    finally:
        if connection.is_open:
            connection.close()
    assert api.delete("/api/connections/nobody").status == 404
    assert api.get("/api/channels/nothing").status == 404


# ---- listeners, logging, health checks without credentials ------------------------------------------------


def test_the_api_has_its_own_host_and_logs_the_address_it_really_listens_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mailslot")
    with broker_in_thread(host="127.0.0.1", http_host="0.0.0.0") as broker:
        messages = [r.getMessage() for r in caplog.records]
        [line] = [m for m in messages if m.startswith("HTTP API listening on")]
        assert line == f"HTTP API listening on 0.0.0.0:{broker.http_port} (http://127.0.0.1:{broker.http_port}/api/)"
        assert any(m.startswith(f"AMQP listening on 127.0.0.1:{broker.amqp_port}") for m in messages)
        [metrics] = [m for m in messages if m.startswith("Prometheus metrics listening on")]
        assert metrics.startswith(f"Prometheus metrics listening on 0.0.0.0:{broker.prometheus_port}")
        api = ManagementApi(broker.http_url)
        listeners = {(x["protocol"], x["ip_address"]) for x in api.ok("GET", "/api/overview")["listeners"]}
        assert listeners == {("amqp", "127.0.0.1"), ("http", "0.0.0.0"), ("http/prometheus", "0.0.0.0")}


def test_health_checks_may_be_opened_to_anonymous_callers_and_nothing_else() -> None:
    with broker_in_thread(http_open_health_checks=True) as broker:
        api = ManagementApi(broker.http_url)
        assert api.request("GET", "/api/health/checks/alarms", user=()).json == {"status": "ok"}
        assert api.request("GET", f"/api/health/checks/port-listener/{broker.amqp_port}", user=()).status == 200
        assert api.request("GET", "/api/overview", user=()).status == 401
        assert api.request("GET", "/api/aliveness-test/%2F", user=()).status == 401
    with broker_in_thread() as broker:
        assert ManagementApi(broker.http_url).request("GET", "/api/health/checks/alarms", user=()).status == 401


def test_an_alarm_fails_the_alarm_checks() -> None:
    with broker_in_thread(disk_free_limit="1000TB", resource_check_interval=0.05) as broker:
        api = ManagementApi(broker.http_url)
        failed = wait_for(lambda: (r := api.get("/api/health/checks/local-alarms")).status == 503 and r, 15.0, 0.05, what="alarm")
        node = api.ok("GET", "/api/nodes")[0]["name"]
        assert failed.json == {"status": "failed", "reason": "There are alarms in effect on the node",
                               "alarms": [{"resource": "disk space", "node": node}]}
        assert api.ok("GET", "/api/nodes")[0]["disk_free_alarm"] is True


def test_certificate_expiration_reads_the_tls_listeners_certificates(tmp_path: Any) -> None:
    from mailslot.testing.certificates import CertificateAuthority

    ca = CertificateAuthority("mailslot test CA")  # its certificates are valid for 2 days
    server = ca.issue("localhost", server=True).write(tmp_path, "server")
    settings = {"tls_port": 0, "http_tls_port": 0, "tls_cert": server.cert, "tls_key": server.key}
    with broker_in_thread(**settings) as broker:
        api = ManagementApi(broker.http_url)
        assert api.ok("GET", "/api/health/checks/certificate-expiration/1/days") == {"status": "ok"}
        soon = api.get("/api/health/checks/certificate-expiration/3/days")
        assert soon.status == 503 and soon.json["reason"] == "Certificates expiring"
        listed = {(x["protocol"], x["port"]) for x in soon.json["expired"]}
        assert listed == {("amqp/ssl", broker.amqps_port), ("https", broker.https_port)}
        assert all(x["certfile"] == str(server.cert) and len(x["certfile_expires_on"]) == 1 for x in soon.json["expired"])
        assert api.get("/api/health/checks/certificate-expiration/1/months").status == 503
