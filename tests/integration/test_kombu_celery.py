"""kombu and Celery on top of the broker: the stacks most Python shops actually run."""

from __future__ import annotations

from collections.abc import Callable

import kombu
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from conftest import Cleanup

pytestmark = pytest.mark.timeout(30)


def test_kombu_producer_consumer_round_trip(broker_url: str, uname: Callable[[str], str],
                                            cleanup: Cleanup) -> None:
    xname = cleanup.exchange(uname("x"))
    qname = cleanup.queue(uname("q"))
    exchange = kombu.Exchange(xname, type="direct", durable=True)
    queue = kombu.Queue(qname, exchange=exchange, routing_key="work", durable=True)
    with kombu.Connection(broker_url, connect_timeout=5) as conn:
        producer = conn.Producer()
        for i in range(3):
            producer.publish({"n": i, "s": "ü"}, exchange=exchange, routing_key="work", declare=[queue],
                             serializer="json", delivery_mode=2, retry=False)
        received: list[tuple[dict[str, object], str | None]] = []

        def on_message(body: dict[str, object], message: kombu.Message) -> None:
            received.append((body, message.content_type))
            message.ack()

        with conn.Consumer(queue, callbacks=[on_message], prefetch_count=1):
            while len(received) < 3:
                conn.drain_events(timeout=5)
    assert received == [({"n": i, "s": "ü"}, "application/json") for i in range(3)]


def test_kombu_simple_queue(broker_url: str, uname: Callable[[str], str], cleanup: Cleanup) -> None:
    qname = cleanup.queue(uname("simple"))
    with kombu.Connection(broker_url, connect_timeout=5) as conn:
        sq = conn.SimpleQueue(qname)
        try:
            sq.put({"hello": "world"})
            sq.put(b"raw", serializer=None, content_type="application/octet-stream", content_encoding="binary")
            m1 = sq.get(block=True, timeout=5)
            m2 = sq.get(block=True, timeout=5)
            assert m1.payload == {"hello": "world"}
            assert m2.body == b"raw"
            m1.ack()
            m2.requeue()  # reject(requeue=True) -> redelivered
            m3 = sq.get(block=True, timeout=5)
            assert (m3.body, m3.delivery_info["redelivered"]) == (b"raw", True)
            m3.ack()
            assert sq.qsize() == 0
            with pytest.raises(sq.Empty):
                sq.get(block=False)
        finally:
            sq.close()


def test_celery_task_round_trip(broker_url: str, uname: Callable[[str], str], cleanup: Cleanup) -> None:
    # A unique default queue so concurrent runs on the shared RabbitMQ never steal each other's tasks.
    qname = cleanup.queue(uname("celery"))
    app = Celery("mailslot_it", broker=broker_url, set_as_current=False)
    app.conf.update(
        result_backend="rpc://",
        task_default_queue=qname,
        task_default_exchange=qname,
        task_default_routing_key=qname,
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=0,
        # The worker's kombu hub sleeps in poll() until its next timer; with the default 120 s heartbeat that
        # made start_worker's shutdown take ~10 s. A 2 s AMQP heartbeat keeps a timer every second (and
        # exercises heartbeats on the broker under test).
        broker_heartbeat=2,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,  # no celery.pidbox fanout exchange on the shared broker
        worker_send_task_events=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
    )
    cleanup.exchange(qname)

    @app.task(name=f"{qname}.add")  # unique: Celery keeps a process-wide registry of task names
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=5):
        assert add.delay(2, 3).get(timeout=10) == 5
        results = [add.delay(i, i) for i in range(5)]
        assert [r.get(timeout=10) for r in results] == [0, 2, 4, 6, 8]
