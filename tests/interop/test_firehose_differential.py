"""The firehose, differentially: the same traffic on a traced vhost of mailslot and of the reference RabbitMQ
3.10 (tracing turned on with ``rabbitmqctl trace_on``, and on mailslot with RabbitMQ's management call
``PUT /api/vhosts/{vhost} {"tracing": true}``) gives the same trace messages on ``amq.rabbitmq.trace``: routing
keys, headers (the node and connection names aside), bodies, and the 403 for publishing to it."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
import uuid
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
import pytest

from conftest import _rabbitmq_url_or_skip
from helpers import wait_for

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")


def _api(base: str, method: str, path: str, body: Any = None) -> int:
    request = urllib.request.Request(
        base + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def traffic(url: str) -> tuple[list[tuple[str, dict[str, Any], bytes]], int]:
    """Publish (routed, unroutable, via the default exchange and amq.direct), get and ack, with a firehose
    consumer bound to '#'. Returns the trace messages (connection and node normalised) and the reply code
    of a publish to amq.rabbitmq.trace."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.queue_declare("fh", exclusive=True)
        channel.queue_bind("fh", "amq.rabbitmq.trace", "#")
        channel.queue_declare("work", auto_delete=True)
        channel.queue_bind("work", "amq.direct", "to-work")
        props = pika.BasicProperties(message_id="m-1", headers={"order": "42"}, delivery_mode=2,
                                     content_type="text/plain", priority=3)
        channel.basic_publish("", "work", b"hello", props)
        channel.basic_publish("amq.direct", "nowhere", b"lost")
        channel.basic_publish("amq.direct", "to-work", b"direct", pika.BasicProperties(correlation_id="c"))
        channel.basic_publish("", "nowhere", b"lost2")
        wait_for(lambda: channel.queue_declare("work", passive=True).method.message_count == 2)
        for _ in range(2):
            method, _props, _body = channel.basic_get("work")
            assert method is not None
            channel.basic_ack(method.delivery_tag)
        traces: list[tuple[str, dict[str, Any], bytes]] = []

        def collect() -> bool:
            method, properties, body = channel.basic_get("fh", auto_ack=True)
            if method is not None:
                headers = dict(properties.headers or {})
                assert " -> " in headers.pop("connection")
                assert headers.pop("node")
                assert properties.delivery_mode is None and properties.content_type is None
                traces.append((method.routing_key, headers, body))
            return len(traces) >= 6

        wait_for(collect)
        refused = connection.channel()
        code = 0
        try:
            refused.basic_publish("amq.rabbitmq.trace", "x", b"self")
            refused.queue_declare("fh-probe", passive=True, exclusive=True)
        except pika.exceptions.ChannelClosedByBroker as error:
            code = error.reply_code
        return traces, code
    finally:
        connection.close()


def test_firehose_matches_rabbitmq() -> None:
    rabbit_url = _rabbitmq_url_or_skip()
    from mailslot.testing import broker_in_thread

    vhost = f"dash-api-trace-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        _rabbitmqctl("trace_on", "-p", vhost)
        reference = traffic(rabbit_url.rsplit("/", 1)[0] + "/" + quote(vhost, safe=""))
    finally:
        _rabbitmqctl("delete_vhost", vhost)
    with broker_in_thread() as broker:
        base = broker.http_url
        assert _api(base, "PUT", f"/api/vhosts/{quote(vhost, safe='')}", {}) == 201
        _api(base, "PUT", f"/api/permissions/{quote(vhost, safe='')}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        assert _api(base, "PUT", f"/api/vhosts/{quote(vhost, safe='')}", {"tracing": True}) == 204
        ours = traffic(str(broker.amqp_url).rsplit("/", 1)[0] + "/" + quote(vhost, safe=""))
    assert ours[1] == reference[1] == 403
    assert [t[0] for t in ours[0]] == [t[0] for t in reference[0]]
    for mine, theirs in zip(ours[0], reference[0], strict=True):
        assert mine == theirs
