"""TTL deadlines are stored with persistent messages: across a graceful restart and a kill -9 (segment
store) a message expires at the time it was given when published, not a full TTL after the restart, and
what expired while the broker was down is dead-lettered once it is back."""

from __future__ import annotations

import time
from pathlib import Path

import pika
import pytest

from helpers import get_when_there, message_count, wait_for
from mailslot.bench.broker_process import BrokerProcess
from mailslot.testing import broker_in_thread

pytestmark = pytest.mark.timeout(60)

PERSISTENT = 2
# Long enough that a slow restart on a loaded machine still ends well before it runs out.
QUEUE_TTL_MS = 4000
DOWNTIME = 1.0  # the broker is down this long: longer than the 300 ms message TTL


def _setup(url: str) -> float:
    """Declare durable queues and publish confirmed persistent messages; returns when they were published."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare("dead", durable=True)
    ch.queue_declare("work", durable=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    ch.queue_declare("queue-ttl", durable=True, arguments={"x-message-ttl": QUEUE_TTL_MS})
    ch.confirm_delivery()
    published = time.monotonic()
    ch.basic_publish("", "work", b"gone-while-down", pika.BasicProperties(delivery_mode=PERSISTENT, expiration="300"))
    ch.basic_publish("", "queue-ttl", b"q", pika.BasicProperties(delivery_mode=PERSISTENT))
    conn.close()
    return published


def _check_after_restart(url: str, published: float, restarted: float) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    try:
        # Expired during the downtime: dead-lettered by the first timer run, with its x-death.
        _m, props, body = get_when_there(ch, "dead")
        assert body == b"gone-while-down"
        assert props.headers["x-death"][0]["reason"] == "expired"
        assert message_count(ch, "work") == 0
        assert time.monotonic() - published < QUEUE_TTL_MS / 1000, "the restart took longer than the queue TTL"
        assert message_count(ch, "queue-ttl") == 1
        wait_for(lambda: message_count(ch, "queue-ttl") == 0, timeout=10, interval=0.02, what="the TTL to run out")
        expired = time.monotonic()
        ttl = QUEUE_TTL_MS / 1000
        # Never early, and counted from the publish: a TTL restarted at start-up would run until restarted + ttl.
        assert expired - published >= ttl, f"expired {expired - published:.2f}s after publishing, the TTL is {ttl}s"
        assert restarted - published >= DOWNTIME
        assert expired < restarted + ttl - DOWNTIME / 2, (
            f"expired {expired - restarted:.2f}s after the restart: the TTL was counted from the restart"
        )
    finally:
        conn.close()


def test_deadlines_survive_a_graceful_restart(tmp_path: Path) -> None:
    with broker_in_thread(store="segments", data_dir=tmp_path) as broker:
        published = _setup(str(broker.amqp_url))
    time.sleep(DOWNTIME)
    with broker_in_thread(store="segments", data_dir=tmp_path) as broker:
        _check_after_restart(str(broker.amqp_url), published, time.monotonic())


@pytest.mark.slow
def test_deadlines_survive_kill_9(tmp_path: Path) -> None:
    broker = BrokerProcess(store="segments", data_dir=tmp_path / "data")
    broker.start()
    try:
        published = _setup(broker.url)
        broker.kill()
        time.sleep(max(0.0, DOWNTIME - (time.monotonic() - published)))
        broker.start()
        _check_after_restart(broker.url, published, time.monotonic())
    finally:
        broker.stop()
