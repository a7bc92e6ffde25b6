"""After a SIGKILL, persistent messages that were delivered but not acknowledged come back with
``redelivered=true`` (as from RabbitMQ's classic queues, whose queue index records deliveries); messages
never delivered come back with ``redelivered=false``. Issue 15: the broker records deliveries as one
watermark per queue per delivered batch (storage/api.py ``stage_delivered``), so a crash keeps the flag."""

from __future__ import annotations

import pika
import pytest

from .broker_process import BrokerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.mark.parametrize("store", ["segments", "sqlite"])
def test_delivered_unacked_messages_come_back_redelivered_after_sigkill(tmp_path, store):
    broker = BrokerProcess(store=store, data_dir=tmp_path / "data")
    broker.start()
    try:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        publisher = conn.channel()
        publisher.confirm_delivery()
        publisher.queue_declare("work", durable=True)
        publisher.queue_declare("sync", durable=True)
        for i in range(10):
            publisher.basic_publish("", "work", b"m%d" % i, pika.BasicProperties(delivery_mode=2))
        consumer = conn.channel()
        consumer.basic_qos(prefetch_count=4)
        taken = []
        for method, _properties, body in consumer.consume("work", inactivity_timeout=5):
            assert method is not None, "the prefetch window was not delivered"
            taken.append((method.delivery_tag, method.redelivered, body))
            if len(taken) == 4:
                break
        assert [(redelivered, body) for _, redelivered, body in taken] == [(False, b"m%d" % i) for i in range(4)]
        consumer.basic_ack(taken[0][0])  # m0 done: the window moves on to m4; m1..m4 stay unacked
        method, _properties, body = next(consumer.consume("work", inactivity_timeout=5))
        assert method is not None and body == b"m4"
        # A confirmed publish afterwards proves the watermark and the ack are on disk: its group commit
        # holds every write staged before it.
        publisher.basic_publish("", "sync", b"s", pika.BasicProperties(delivery_mode=2))
        broker.kill()

        broker.start()
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = conn.channel()
        got = []
        while True:
            method, _properties, body = channel.basic_get("work", auto_ack=True)
            if method is None:
                break
            got.append((body, method.redelivered))
        conn.close()
        assert got == [(b"m%d" % i, True) for i in range(1, 5)] + [(b"m%d" % i, False) for i in range(5, 10)]
    finally:
        broker.kill()
