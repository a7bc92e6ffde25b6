"""Poison messages and stuck consumers through pika: x-delivery-limit, x-delivery-count, consumer
acknowledgement timeouts (broker-wide and x-consumer-timeout) and x-retry-delays.

Tests taking ``broker_url`` run on mailslot and on the reference RabbitMQ 3.10 with the same
expectations (differential); RabbitMQ's side is a quorum queue, where 3.10 has these features.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from conftest import RABBITMQ_URL, rabbitmq_reachable
from helpers import connect, get_when_there, wait_for
from mailslot.testing import broker_in_thread

pytestmark = pytest.mark.timeout(120)

TIMEOUT_TEXT = (
    "PRECONDITION_FAILED - delivery acknowledgement on channel {channel} timed out. Timeout value used: {ms} ms. "
    "This timeout value can be configured, see consumers doc guide to learn more"
)


def _declare_with_dlq(ch: BlockingChannel, work: str, dlq: str, **arguments: Any) -> None:
    ch.queue_declare(dlq, durable=True)
    ch.queue_declare(
        work,
        durable=True,
        arguments={"x-queue-type": "quorum", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq,
                   **arguments},
    )


def _count(properties: pika.BasicProperties) -> Any:
    return (properties.headers or {}).get("x-delivery-count")


# ---- delivery limit and delivery count (differential) ---------------------------------------------------


def test_delivery_limit_dead_letters_with_the_count_on_each_redelivery(broker_url, cleanup, uname):
    work, dlq = cleanup.queue(uname("work")), cleanup.queue(uname("dlq"))
    conn = connect(broker_url)
    try:
        ch = conn.channel()
        _declare_with_dlq(ch, work, dlq, **{"x-delivery-limit": 2})
        ch.basic_publish("", work, b"poison", pika.BasicProperties(delivery_mode=2, headers={"app": "x"}))
        seen: list[tuple[bool, Any]] = []

        def on_message(channel: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
            seen.append((method.redelivered, _count(properties)))
            channel.basic_nack(method.delivery_tag, requeue=True)

        ch.basic_consume(work, on_message)
        wait_for(lambda: (conn.process_data_events(0.05), len(seen) >= 3)[1], what="three deliveries")
        dead_ch = conn.channel()
        _, properties, body = get_when_there(dead_ch, dlq)
        conn.process_data_events(0.3)  # no fourth delivery
        assert seen == [(False, None), (True, 1), (True, 2)]
        headers = properties.headers
        death = headers["x-death"][0]
        assert body == b"poison"
        assert (death["reason"], death["queue"], death["count"], death["routing-keys"]) == (
            "delivery_limit", work, 1, [work])
        assert headers["x-first-death-reason"] == "delivery_limit"
        assert headers["app"] == "x"
        assert "x-delivery-count" not in headers
    finally:
        conn.close()


def test_requeue_on_channel_close_counts_as_a_failed_delivery(broker_url, cleanup, uname):
    work, dlq = cleanup.queue(uname("work")), cleanup.queue(uname("dlq"))
    conn = connect(broker_url)
    try:
        setup = conn.channel()
        _declare_with_dlq(setup, work, dlq, **{"x-delivery-limit": 1})
        setup.basic_publish("", work, b"m", pika.BasicProperties(delivery_mode=2))
        seen: list[tuple[bool, Any]] = []
        for _ in range(2):  # each consumer's channel closes with the delivery unacked
            ch = conn.channel()
            ch.basic_consume(work, lambda c, m, p, b: seen.append((m.redelivered, _count(p))))
            n = len(seen)
            wait_for(lambda n=n: (conn.process_data_events(0.05), len(seen) > n)[1], what="a delivery")
            ch.close()
        _, properties, _ = get_when_there(setup, dlq)
        assert seen == [(False, None), (True, 1)]
        assert properties.headers["x-death"][0]["reason"] == "delivery_limit"
    finally:
        conn.close()


def test_bad_redelivery_arguments_get_406_naming_them():
    with broker_in_thread() as broker:
        conn = connect(broker.amqp_url)
        try:
            for arguments, problem in [
                ({"x-delivery-limit": "three"}, "invalid arg 'x-delivery-limit' for queue 'q' in vhost '/': "
                                                '"expected integer, got longstr"'),
                ({"x-consumer-timeout": -1}, "invalid arg 'x-consumer-timeout' for queue 'q' in vhost '/': "
                                             "{value_negative,-1}"),
                ({"x-retry-delays": "1s"}, "invalid arg 'x-retry-delays' for queue 'q' in vhost '/': "
                                           "{unacceptable_type,longstr}"),
            ]:
                ch = conn.channel()
                with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
                    ch.queue_declare("q", arguments=arguments)
                assert (caught.value.reply_code, caught.value.reply_text) == (406, "PRECONDITION_FAILED - " + problem)
        finally:
            conn.close()


# ---- the count across a restart ---------------------------------------------------------------------------


def test_delivery_count_and_limit_survive_a_restart(tmp_path):
    data = tmp_path / "data"
    arguments = {"x-delivery-limit": 2, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}
    with broker_in_thread(store="segments", data_dir=data) as broker:
        conn = connect(broker.amqp_url)
        ch = conn.channel()
        ch.queue_declare("dlq", durable=True)
        ch.queue_declare("work", durable=True, arguments=arguments)
        ch.basic_publish("", "work", b"m", pika.BasicProperties(delivery_mode=2))
        for _ in range(2):
            method, _, _ = get_when_there(ch, "work", auto_ack=False)
            ch.basic_nack(method.delivery_tag, requeue=True)
        conn.close()
    with broker_in_thread(store="segments", data_dir=data) as broker:
        conn = connect(broker.amqp_url)
        ch = conn.channel()
        got: list[Any] = []
        ch.basic_consume("work", lambda c, m, p, b: got.append((m, p)))
        wait_for(lambda: (conn.process_data_events(0.05), got)[1], what="the redelivery after the restart")
        method, properties = got[0]
        assert (method.redelivered, _count(properties)) == (True, 2)
        ch.basic_nack(method.delivery_tag, requeue=True)  # the third failure: past the limit
        _, properties, body = get_when_there(conn.channel(), "dlq")
        assert (body, properties.headers["x-death"][0]["reason"]) == (b"m", "delivery_limit")
        conn.close()


# ---- consumer acknowledgement timeout -----------------------------------------------------------------------


def _timeout_scenario(url: str, open_channel: Callable[[pika.BlockingConnection], BlockingChannel],
                      queue: str) -> tuple[int, str, Any, float]:
    """A consumer that never acks: (reply code, reply text, x-delivery-count of the redelivery to another
    consumer, seconds until the channel closed)."""
    conn = connect(url)
    try:
        setup = conn.channel()
        setup.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        setup.basic_publish("", queue, b"slow", pika.BasicProperties(delivery_mode=2))
        stuck = open_channel(conn)
        got: list[Any] = []
        stuck.basic_consume(queue, lambda c, m, p, b: got.append(m))
        wait_for(lambda: (conn.process_data_events(0.05), got)[1], what="the delivery")
        started = time.monotonic()
        wait_for(lambda: (conn.process_data_events(0.05), stuck.is_closed)[1], timeout=30, what="the channel close")
        elapsed = time.monotonic() - started
        reason = stuck._closing_reason  # pika keeps the broker's channel.close here
        assert isinstance(reason, pika.exceptions.ChannelClosedByBroker)
        redelivered: list[Any] = []
        other = conn.channel()
        other.basic_consume(queue, lambda c, m, p, b: redelivered.append(_count(p)), auto_ack=True)
        wait_for(lambda: (conn.process_data_events(0.05), redelivered)[1], what="the redelivery")
        return reason.reply_code, reason.reply_text, redelivered[0], elapsed
    finally:
        conn.close()


def test_consumer_timeout_closes_the_channel_with_406_and_requeues(uname):
    with broker_in_thread(consumer_timeout=1.0) as broker:
        code, text, count, elapsed = _timeout_scenario(broker.amqp_url, lambda c: c.channel(), uname("q"))
    assert (code, text, count) == (406, TIMEOUT_TEXT.format(channel=2, ms=1000), 1)
    assert 0.9 <= elapsed < 4.0  # never early; checked once a second


def _rabbitmqctl(expression: str) -> bool:
    try:
        done = subprocess.run(
            ["rabbitmqctl", "eval", expression], check=False, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture
def rabbitmq_short_timeout_channel() -> Iterator[Callable[[pika.BlockingConnection], BlockingChannel]]:
    """Opens channels with RabbitMQ's consumer_timeout lowered to 1000 ms. RabbitMQ reads the setting when
    a channel opens, so it is lowered only while opening one (other users of this RabbitMQ keep 30 min);
    the channel tick (its check interval, 60 s by default) is shortened for the test."""
    if not rabbitmq_reachable():
        if os.environ.get("MAILSLOT_REQUIRE_SERVICES") == "1":
            pytest.fail("RabbitMQ not reachable and MAILSLOT_REQUIRE_SERVICES=1")
        pytest.skip("RabbitMQ not reachable")
    if shutil.which("rabbitmqctl") is None or not _rabbitmqctl("application:get_env(rabbit, consumer_timeout)."):
        pytest.skip("rabbitmqctl cannot reach the RabbitMQ here: its consumer_timeout cannot be lowered")

    def open_channel(conn: pika.BlockingConnection) -> BlockingChannel:
        assert _rabbitmqctl("application:set_env(rabbit, consumer_timeout, 1000).")
        try:
            return conn.channel()
        finally:
            assert _rabbitmqctl("application:set_env(rabbit, consumer_timeout, 1800000).")

    assert _rabbitmqctl("application:set_env(rabbit, channel_tick_interval, 500).")
    try:
        yield open_channel
    finally:
        _rabbitmqctl("application:set_env(rabbit, channel_tick_interval, 60000).")


@pytest.mark.interop
def test_consumer_timeout_matches_rabbitmq(rabbitmq_short_timeout_channel, uname):
    name = uname("q")
    try:
        rabbit = _timeout_scenario(RABBITMQ_URL, rabbitmq_short_timeout_channel, name)
    finally:
        conn = connect(RABBITMQ_URL)
        conn.channel().queue_delete(name)
        conn.close()
    with broker_in_thread(consumer_timeout=1.0) as broker:
        ours = _timeout_scenario(broker.amqp_url, lambda c: c.channel(), name)
    assert ours[:3] == rabbit[:3] == (406, TIMEOUT_TEXT.format(channel=2, ms=1000), 1)


def test_per_queue_consumer_timeout_overrides_the_broker_wide_one():
    with broker_in_thread() as broker:  # the default: 30 minutes
        conn = connect(broker.amqp_url)
        try:
            setup = conn.channel()
            setup.queue_declare("patient")
            setup.queue_declare("strict", arguments={"x-consumer-timeout": 1000})
            for queue in ("patient", "strict"):
                setup.basic_publish("", queue, b"m")
            patient, strict = conn.channel(), conn.channel()
            for ch, queue in ((patient, "patient"), (strict, "strict")):
                ch.basic_consume(queue, lambda c, m, p, b: None)
            wait_for(lambda: (conn.process_data_events(0.05), strict.is_closed)[1], timeout=10, what="close")
            assert strict._closing_reason.reply_text == TIMEOUT_TEXT.format(channel=strict.channel_number, ms=1000)
            conn.process_data_events(0.5)
            assert patient.is_open
        finally:
            conn.close()


# ---- retry delays ---------------------------------------------------------------------------------------


def _nacking_consumer(url: str, queue: str, arguments: dict[str, Any], seconds: float) -> list[float]:
    """Publishes one message to ``queue`` and nacks (requeue) every delivery for ``seconds``: delivery times."""
    conn = connect(url)
    try:
        ch = conn.channel()
        ch.queue_declare(queue, arguments=arguments)
        times: list[float] = []

        def on_message(channel: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
            times.append(time.monotonic())
            channel.basic_nack(method.delivery_tag, requeue=True)

        ch.basic_consume(queue, on_message)
        ch.basic_publish("", queue, b"poison")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            conn.process_data_events(0.05)
        return times
    finally:
        conn.close()


def test_retry_delays_hold_a_requeued_message_and_grow_with_its_count():
    with broker_in_thread() as broker:
        times = _nacking_consumer(broker.amqp_url, "work", {"x-retry-delays": [300, 700]}, 2.6)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) in (4, 5), gaps  # at 0, ~0.3, ~1.0, ~1.7 (and ~2.4) s
    assert 0.29 <= gaps[0] < 0.6, gaps  # not before the delay; one 100 ms tick late at most (+ slack)
    assert 0.69 <= gaps[1] < 1.0 and 0.69 <= gaps[2] < 1.0, gaps  # the last delay repeats


def test_a_poison_message_requeue_loop_with_delays_does_not_spin():
    with broker_in_thread() as broker:
        cpu = time.process_time()
        times = _nacking_consumer(broker.amqp_url, "work", {"x-retry-delays": [200]}, 3.0)
        cpu = time.process_time() - cpu
    per_second = len(times) / 3.0
    assert 3 <= per_second <= 6, per_second  # one delivery per 200 ms delay, not thousands
    assert cpu < 1.5, cpu  # broker and client together: mostly idle (a spin would burn ~3 s)
