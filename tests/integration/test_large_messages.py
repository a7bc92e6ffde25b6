"""Large messages through the real ``mailslot serve`` (uvloop, the segment log by default): pika publishes
the 20-22 MB bodies clients' own test suites use and a 100 MB one; a message routed to five queues is
kept once (disk writes and broker RSS measured); a 100 MB publish does not hold up other connections.

``--max-message-size`` raises the 16 MiB default (RabbitMQ 4.x's) to what these need, as an operator
would (RabbitMQ 3.x's default was 128 MiB).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pika
import psutil
import pytest

from mailslot.bench import large_message
from mailslot.bench.broker_process import BrokerProcess
from mailslot.storage.sqlite._schema import CACHE_SIZE_KIB

MB = 1_000_000
MAX_MESSAGE_SIZE = 128 * 1024 * 1024

pytestmark = pytest.mark.slow


@pytest.fixture(params=["segments", "sqlite"])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerProcess]:
    with BrokerProcess(store=request.param, extra_args=("--max-message-size", str(MAX_MESSAGE_SIZE))) as process:
        yield process


def _body(size: int, seed: int) -> bytes:
    """A body whose every MB differs, so that a misplaced or truncated chunk cannot go unnoticed."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MB // 32)
    return b"".join(block[i % 32 :] + block[: i % 32] for i in range(size // MB)) + b"t" * (size % MB)


@pytest.mark.parametrize("size", [20 * MB, 22 * MB + 12345, 100 * MB])
def test_pika_publishes_and_consumes_large_messages(broker: BrokerProcess, size: int) -> None:
    body = _body(size, size)
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        channel = connection.channel()
        channel.queue_declare("large", durable=True)
        channel.confirm_delivery()
        channel.basic_publish("", "large", body, pika.BasicProperties(delivery_mode=2))  # raises unless confirmed
        method, _props, got = channel.basic_get("large", auto_ack=False)
        assert method is not None and got is not None
        assert len(got) == size and hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
        channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()


def test_one_message_for_five_queues_is_stored_and_held_once(broker: BrokerProcess) -> None:
    size = 20 * MB
    process = psutil.Process(broker.pid)
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        channel = connection.channel()
        channel.exchange_declare("fan-20mb", "fanout", durable=True)
        for i in range(5):
            channel.queue_declare(f"fan-20mb-{i}", durable=True)
            channel.queue_bind(f"fan-20mb-{i}", "fan-20mb")
        channel.confirm_delivery()
        warm = _body(size, 1)  # one publish first, so allocator pools and buffers exist before measuring
        channel.basic_publish("", "warm-up", warm, pika.BasicProperties(delivery_mode=2))
        rss_before = process.memory_info().rss
        written_before = process.io_counters().write_bytes
        channel.basic_publish("fan-20mb", "", _body(size, 2), pika.BasicProperties(delivery_mode=2))
        written = process.io_counters().write_bytes - written_before
        rss_grown = process.memory_info().rss - rss_before
        # Once on disk: 20 MB (SQLite may write it to its WAL and again at a checkpoint); five copies
        # would be 100 MB or more.
        assert size <= written < 2.2 * size, f"{written / MB:.1f} MB written for a 20 MB message to 5 queues"
        # Once in memory: the body that arrived is the body all five queues hold (copies: +100 MB). SQLite
        # adds its page cache (up to 32 MiB) and a transient copy of the blob it binds (measured here:
        # +82 MB with the body shared, +115 MB with five rows of it; the segment log: +20 MB).
        bound = 1.5 * size if broker.store == "segments" else 2 * size + CACHE_SIZE_KIB * 1024 + 16 * MB
        assert rss_grown < bound, f"broker RSS grew by {rss_grown / MB:.1f} MB ({broker.store})"
        for i in range(5):
            _m, _p, got = channel.basic_get(f"fan-20mb-{i}", auto_ack=True)
            assert got is not None and len(got) == size
    finally:
        connection.close()


def test_a_100_mb_publish_does_not_hold_up_other_connections() -> None:
    """While one connection publishes 100 MB (with a confirm), another publishes and consumes a small
    message every 10 ms: those keep arriving with a low latency (the event loop is never stalled for
    the big body: its frames are copied as they arrive, and its write and fsync run off the loop).

    The default store only: with SQLite the large publish itself takes ~1-4 s here (the blob goes
    through SQLite's WAL and a checkpoint) and deliveries meanwhile were measured at up to ~300 ms."""
    with BrokerProcess(store="segments", extra_args=("--max-message-size", str(MAX_MESSAGE_SIZE))) as broker:
        traffic = large_message.run(broker.url, 100 * MB)
    ms = traffic.during(traffic.delivered)
    assert len(ms) >= 5, f"only {len(ms)} small messages were published during the 100 MB publish"
    summary = f"{len(ms)} during {1000 * (traffic.end - traffic.start):.0f} ms: {traffic.summary()}"
    # Before this was fixed: up to ~435 ms on an idle machine (the body joined in one piece, written and
    # fsynced on the loop); now ~20 ms idle, 165 ms with the machine's load average at 20. The median is
    # not bounded: on a loaded machine it follows the load, not the broker.
    assert ms[-1] < 300, summary
