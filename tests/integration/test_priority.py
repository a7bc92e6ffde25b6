"""Priority queues (x-max-priority) through pika.

The ``broker_url`` tests run the same scenario on mailslot and on RabbitMQ 3.10 and assert what RabbitMQ
does (differential); the restart tests run on mailslot alone, on its durable stores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from helpers import get_all, tmp_queue, wait_for
from mailslot.core import queue as queue_module
from mailslot.testing import broker_in_thread

pytestmark = pytest.mark.timeout(60)

# (body, priority): None is a message without the property.
MIXED = [("m0", None), ("m1", 1), ("m2", 5), ("m3", 9), ("m4", 0), ("m5", 3), ("m6", 5), ("m7", None), ("m8", 255)]
# Priority first (above x-max-priority 5 counts as 5; none counts as 0), then publish order.
MIXED_ORDER = ["m2", "m3", "m6", "m8", "m5", "m1", "m0", "m4", "m7"]


def publish(ch: BlockingChannel, queue: str, messages: list[tuple[str, int | None]], persistent: bool = False) -> None:
    for body, priority in messages:
        ch.basic_publish("", queue, body.encode(), pika.BasicProperties(priority=priority, delivery_mode=2 if persistent else 1))


def drain(ch: BlockingChannel, queue: str) -> list[tuple[str, int | None, bool]]:
    return [(body.decode(), props.priority, method.redelivered) for method, props, body in get_all(ch, queue)]


def bodies(ch: BlockingChannel, queue: str) -> list[str]:
    return [body for body, _, _ in drain(ch, queue)]


# ---- differential: the same assertions on both brokers ---------------------------------------------


def test_a_mixed_batch_is_delivered_by_priority_then_publish_order(ch: BlockingChannel) -> None:
    q = tmp_queue(ch, max_priority=5)
    ch.confirm_delivery()
    publish(ch, q, MIXED)
    assert ch.queue_declare(q, passive=True).method.message_count == len(MIXED)
    got = drain(ch, q)
    assert [body for body, _, _ in got] == MIXED_ORDER
    # The delivered message keeps the priority it was published with, even above the maximum.
    assert {body: priority for body, priority, _ in got} == dict(MIXED)


def test_a_consumer_gets_a_backlog_in_priority_order(conn, ch: BlockingChannel) -> None:
    q = tmp_queue(ch, max_priority=5)
    ch.confirm_delivery()
    publish(ch, q, MIXED)
    got: list[str] = []
    consumer = conn.channel()
    consumer.basic_qos(prefetch_count=1)
    consumer.basic_consume(q, lambda c, m, p, b: (got.append(b.decode()), c.basic_ack(m.delivery_tag)))
    wait_for(lambda: (conn.process_data_events(0.05), len(got) == len(MIXED))[1], what="all deliveries")
    assert got == MIXED_ORDER


def test_max_priority_zero_keeps_publish_order(ch: BlockingChannel) -> None:
    q = tmp_queue(ch, max_priority=0)
    ch.confirm_delivery()
    publish(ch, q, [("a", None), ("b", 1), ("c", 5), ("d", 0)])
    assert bodies(ch, q) == ["a", "b", "c", "d"]


def test_requeued_messages_go_back_to_their_place_in_their_priority(ch: BlockingChannel) -> None:
    q = tmp_queue(ch, max_priority=3)
    ch.confirm_delivery()
    publish(ch, q, [(f"m{i}", p) for i, p in enumerate([1, 2, 3, 1, 2, 3, 0])])
    taken = []
    for _ in range(4):
        method, _props, body = ch.basic_get(q)
        taken.append((method.delivery_tag, body.decode()))
    assert [body for _, body in taken] == ["m2", "m5", "m1", "m4"]
    ch.basic_nack(taken[3][0], requeue=True)
    ch.basic_nack(taken[0][0], requeue=True)
    publish(ch, q, [("late3", 3)])
    ch.basic_nack(taken[2][0], requeue=True)
    ch.basic_nack(taken[1][0], requeue=True)
    got = drain(ch, q)
    assert [(body, redelivered) for body, _, redelivered in got] == [
        ("m2", True), ("m5", True), ("late3", False), ("m1", True), ("m4", True), ("m0", False), ("m3", False),
        ("m6", False),
    ]


def test_with_prefetch_priority_applies_to_what_is_ready(conn, ch: BlockingChannel) -> None:
    q = tmp_queue(ch, max_priority=10)
    ch.confirm_delivery()
    publish(ch, q, [(f"low{i}", 1) for i in range(5)])
    got: list[tuple[str, int]] = []
    consumer = conn.channel()
    consumer.basic_qos(prefetch_count=2)
    consumer.basic_consume(q, lambda c, m, p, b: got.append((b.decode(), m.delivery_tag)))
    wait_for(lambda: (conn.process_data_events(0.05), len(got) == 2)[1], what="two deliveries")
    publish(ch, q, [(f"high{i}", 9) for i in range(3)])
    conn.process_data_events(0.2)
    assert [body for body, _ in got] == ["low0", "low1"]  # prefetch is full: nothing overtakes them
    consumer.basic_ack(got[-1][1], multiple=True)
    wait_for(lambda: (conn.process_data_events(0.05), len(got) == 4)[1], what="two more deliveries")
    assert [body for body, _ in got] == ["low0", "low1", "high0", "high1"]


def test_drop_head_drops_what_would_be_delivered_next(ch: BlockingChannel) -> None:
    q = tmp_queue(ch, max_priority=5, max_length=2)
    ch.confirm_delivery()
    publish(ch, q, [("a", 1), ("b", 5), ("c", 1), ("d", 0)])
    assert bodies(ch, q) == ["c", "d"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (256, "{max_value_exceeded,256}"),
        (-1, "{value_negative,-1}"),
        ("5", '"expected integer, got longstr"'),
        (True, '"expected integer, got bool"'),
    ],
)
def test_an_invalid_max_priority_is_refused_with_rabbitmqs_text(conn, value: Any, problem: str) -> None:
    ch = conn.channel()
    name = "mailslot-test.priority-406"  # never created: the declaration fails
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
        ch.queue_declare(name, exclusive=True, arguments={"x-max-priority": value})
    assert raised.value.reply_code == 406
    assert raised.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{name}' in vhost '/': {problem}"
    )


@pytest.mark.parametrize(
    ("first", "again", "shown"),
    [
        (5, 6, "received '6' but current is '5'"),  # one type class: RabbitMQ shows the bare values
        (None, 6, "received the value '6' of type 'signedint' but current is none"),
        (5, None, "received none but current is the value '5' of type 'signedint'"),
    ],
)
def test_redeclaring_with_another_max_priority_is_inequivalent(
    conn, ch: BlockingChannel, uname, first: int | None, again: int | None, shown: str
) -> None:
    q = uname("q")
    ch.queue_declare(q, exclusive=True, arguments={} if first is None else {"x-max-priority": first})
    other = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
        other.queue_declare(q, exclusive=True, arguments={} if again is None else {"x-max-priority": again})
    assert raised.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue '{q}' in vhost '/': {shown}"
    )


# ---- restarts (mailslot's durable stores) ------------------------------------------------------------


@contextlib.contextmanager
def connected(broker: Any) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(str(broker.amqp_url)))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


@pytest.mark.parametrize("store", ["segments", "sqlite"])
def test_persistent_messages_keep_priority_order_across_a_restart(tmp_path: Path, store: str) -> None:
    with broker_in_thread(store=store, data_dir=tmp_path) as broker, connected(broker) as ch:
        ch.queue_declare("jobs", durable=True, arguments={"x-max-priority": 5})
        ch.confirm_delivery()
        publish(ch, "jobs", MIXED, persistent=True)
        publish(ch, "jobs", [("transient", 5)], persistent=False)  # gone after the restart
        method, _props, body = ch.basic_get("jobs")
        assert body == b"m2"
        ch.basic_nack(method.delivery_tag, requeue=True)  # back to its place, redelivered
        method, _props, body = ch.basic_get("jobs")
        assert body == b"m2"
        ch.basic_ack(method.delivery_tag)  # acked: not there after the restart
    with broker_in_thread(store=store, data_dir=tmp_path) as broker, connected(broker) as ch:
        ok = ch.queue_declare("jobs", durable=True, arguments={"x-max-priority": 5})
        assert ok.method.message_count == len(MIXED) - 1
        got = drain(ch, "jobs")
        assert [body for body, _, _ in got] == MIXED_ORDER[1:]
        ch.confirm_delivery()
        publish(ch, "jobs", [("late-low", 0), ("late-high", 4)], persistent=True)
    with broker_in_thread(store=store, data_dir=tmp_path) as broker, connected(broker) as ch:
        assert bodies(ch, "jobs") == ["late-high", "late-low"]


def test_a_backlog_bigger_than_the_memory_window_comes_back_in_priority_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 100)  # the in-process broker shares this module
    monkeypatch.setattr(queue_module, "PAGE_IN_BATCH", 64)
    sent = [(f"{i:05d}", (i * 7) % 10) for i in range(3000)]
    expected = [body for body, _ in sorted(sent, key=lambda item: (-int(item[1]), item[0]))]
    persistent = set(expected[::2])  # every other one in delivery order: the rest are transient, paged for memory
    first = expected[:500]
    with broker_in_thread(store="segments", data_dir=tmp_path) as broker, connected(broker) as ch:
        ch.queue_declare("backlog", durable=True, arguments={"x-max-priority": 9})
        ch.confirm_delivery()
        for body, priority in sent:
            ch.basic_publish(
                "", "backlog", body.encode(),
                pika.BasicProperties(priority=priority, delivery_mode=2 if body in persistent else 1),
            )
        assert ch.queue_declare("backlog", passive=True).method.message_count == len(sent)
        for body in first:
            method, _props, got = ch.basic_get("backlog", auto_ack=True)
            assert got.decode() == body
    with broker_in_thread(store="segments", data_dir=tmp_path) as broker, connected(broker) as ch:
        remaining = [body for body in expected[500:] if body in persistent]
        assert bodies(ch, "backlog") == remaining
