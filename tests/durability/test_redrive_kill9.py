"""A redrive cut by a SIGKILL of the broker loses nothing and doubles nothing: every step publishes to the
target and removes from the dead-letter queue in one store commit (core/redrive.py), on both embedded stores."""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any

import pika
import pytest

from helpers import wait_for

from .broker_process import BrokerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

COUNT = 3_000


def _api(broker: BrokerProcess, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        broker.http_url + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


def _bodies(url: str, queue: str) -> list[bytes]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    out = []
    while True:
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        out.append(body)
    connection.close()
    return out


@pytest.mark.parametrize("store", ["segments", "sqlite"])
def test_redrive_survives_sigkill(tmp_path: Any, store: str) -> None:
    broker = BrokerProcess(store=store, data_dir=tmp_path / "data")
    broker.start()
    try:
        connection = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("dlq", durable=True)
        channel.queue_declare("work", durable=True)
        # Expire at once into the dead-letter queue (x-message-ttl 0).
        channel.queue_declare("src", durable=True, arguments={
            "x-message-ttl": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
        for i in range(COUNT):
            channel.basic_publish("", "src", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
        connection.close()
        wait_for(lambda: _api(broker, "GET", "/api/queues/%2F/dlq")["messages"] == COUNT, timeout=30)
        # The dead-lettered copies are committed: a confirmed publish's commit holds every earlier write.
        sync = pika.BlockingConnection(pika.URLParameters(broker.url))
        sync_channel = sync.channel()
        sync_channel.confirm_delivery()
        sync_channel.basic_publish("", "work", b"sync", pika.BasicProperties(delivery_mode=2))
        sync.close()
        started = _api(broker, "POST", "/api/mailslot/dlq/%2F/dlq/redrive",
                       {"rate": 4_000, "target": {"exchange": "", "routing_key": "work"}})
        progress = f"/api/mailslot/redrives/%2F/{started['id']}"
        wait_for(lambda: _api(broker, "GET", progress)["moved"] >= COUNT // 4, timeout=30, interval=0.01)
        broker.kill()
        moved_before_kill = COUNT // 4
        broker.start()
        work = _bodies(broker.url, "work")
        dlq = _bodies(broker.url, "dlq")
    finally:
        broker.stop()
    assert b"sync" in work
    work.remove(b"sync")
    everything = work + dlq
    assert len(everything) == COUNT, (len(work), len(dlq))  # nothing lost, nothing doubled
    assert sorted(everything) == sorted(f"m{i}".encode() for i in range(COUNT))
    assert len(work) >= moved_before_kill  # reported moved means committed
    assert len(dlq) > 0  # the kill really cut the redrive
