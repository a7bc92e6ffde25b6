"""pika BlockingConnection scenarios, run identically against mailslot and RabbitMQ 3.10.

Each test asserts concrete observable values (reply codes, order, redelivered flags, counts). Where RabbitMQ
3.10's behaviour is not what the spec alone suggests, the test asserts RabbitMQ's behaviour and says so.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from conftest import Cleanup
from helpers import closed_by_broker, drain, pump_until, tmp_queue, wait_for

pytestmark = pytest.mark.timeout(20)


# --------------------------------------------------------------------------- basics


def test_declare_publish_get_ack(ch: BlockingChannel, uname: Callable[[str], str]) -> None:
    q = uname("q")
    ok = ch.queue_declare(q, auto_delete=False, exclusive=True)
    assert ok.method.queue == q
    assert (ok.method.message_count, ok.method.consumer_count) == (0, 0)
    props = pika.BasicProperties(content_type="text/plain", headers={"k": "v"}, message_id="m1", priority=3)
    ch.basic_publish("", q, b"hello", props)
    method, got_props, body = ch.basic_get(q)
    assert body == b"hello"
    assert method.redelivered is False
    assert method.exchange == ""
    assert method.routing_key == q
    assert method.message_count == 0
    assert got_props.content_type == "text/plain"
    assert got_props.headers == {"k": "v"}
    assert got_props.message_id == "m1"
    assert got_props.priority == 3
    ch.basic_ack(method.delivery_tag)
    assert ch.basic_get(q) == (None, None, None)
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_declare_ok_counts(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    # Declare-ok counts are "ready" messages; let the publishes land first (same channel => ordered).
    assert pump_until(conn, lambda: ch.queue_declare(q, passive=True).method.message_count == 3)
    ch2 = conn.channel()
    ch2.basic_consume(q, lambda *a: None, auto_ack=False)
    ch3 = conn.channel()
    ch3.basic_qos(prefetch_count=1)
    ch3.basic_consume(q, lambda *a: None, auto_ack=False)
    ok = pump_until(conn, lambda: (r := ch.queue_declare(q, passive=True).method).message_count == 0 and r)
    assert ok.consumer_count == 2
    ch2.close()
    ch3.close()
    ok = pump_until(conn, lambda: (r := ch.queue_declare(q, passive=True).method).message_count == 3 and r)
    assert ok.consumer_count == 0


def test_server_named_queue(ch: BlockingChannel) -> None:
    assert tmp_queue(ch).startswith("amq.gen-")


def test_passive_declare_missing_queue_404(ch: BlockingChannel, uname: Callable[[str], str]) -> None:
    q = uname("missing")
    code, text = closed_by_broker(lambda: ch.queue_declare(q, passive=True))
    assert code == 404
    assert text == f"NOT_FOUND - no queue '{q}' in vhost '/'"


def test_predeclared_exchanges(conn: BlockingConnection, ch: BlockingChannel) -> None:
    for name in ("amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"):
        ch.exchange_declare(name, passive=True)
    # The default exchange exists (routing by queue name) ...
    q = tmp_queue(ch)
    ch.basic_publish("", q, b"x")
    assert drain(ch, q) == [b"x"]
    # ... but RabbitMQ refuses even a *passive* declare of "" (surprising; asserted as RabbitMQ does it).
    code, text = closed_by_broker(lambda: ch.exchange_declare("", passive=True))
    assert code == 403
    assert text == "ACCESS_REFUSED - operation not permitted on the default exchange"


def test_declare_amq_prefix_refused_403(ch: BlockingChannel) -> None:
    code, text = closed_by_broker(lambda: ch.exchange_declare("amq.foo", "direct"))
    assert code == 403
    assert text.startswith("ACCESS_REFUSED")
    assert "amq.foo" in text


def test_publish_to_missing_exchange_404(ch: BlockingChannel, uname: Callable[[str], str]) -> None:
    x = uname("nox")
    ch.basic_publish(x, "rk", b"x")  # asynchronous: the close arrives on the next synchronous call
    code, text = closed_by_broker(lambda: ch.queue_declare("", exclusive=True))
    assert code == 404
    assert text == f"NOT_FOUND - no exchange '{x}' in vhost '/'"


def test_publish_to_missing_exchange_with_confirms(ch: BlockingChannel, uname: Callable[[str], str]) -> None:
    ch.confirm_delivery()
    code, _ = closed_by_broker(lambda: ch.basic_publish(uname("nox"), "rk", b"x"))
    assert code == 404


# --------------------------------------------------------------------------- routing


def _bind_queues(ch: BlockingChannel, exchange: str, bindings: dict[str, Any]) -> dict[str, str]:
    queues = {}
    for label, spec in bindings.items():
        q = tmp_queue(ch)
        if isinstance(spec, dict):
            ch.queue_bind(q, exchange, "", arguments=spec)
        else:
            ch.queue_bind(q, exchange, spec)
        queues[label] = q
    return queues


def _routed(ch: BlockingChannel, queues: dict[str, str]) -> dict[str, list[bytes]]:
    # A confirm-mode publish is acked only after routing, so draining after confirms is race-free.
    return {label: drain(ch, q) for label, q in queues.items()}


def test_direct_exchange(ch: BlockingChannel, uname: Callable[[str], str], cleanup: Cleanup) -> None:
    x = cleanup.exchange(uname("x"))
    ch.exchange_declare(x, "direct", auto_delete=False)
    ch.confirm_delivery()
    queues = _bind_queues(ch, x, {"a": "a", "b": "b", "a2": "a"})
    for rk in ("a", "b", "c", "a"):
        ch.basic_publish(x, rk, rk.encode())
    assert _routed(ch, queues) == {"a": [b"a", b"a"], "b": [b"b"], "a2": [b"a", b"a"]}


def test_fanout_exchange(ch: BlockingChannel, uname: Callable[[str], str], cleanup: Cleanup) -> None:
    x = cleanup.exchange(uname("x"))
    ch.exchange_declare(x, "fanout")
    ch.confirm_delivery()
    queues = _bind_queues(ch, x, {"a": "ignored", "b": ""})
    ch.basic_publish(x, "whatever", b"1")
    ch.basic_publish(x, "", b"2")
    assert _routed(ch, queues) == {"a": [b"1", b"2"], "b": [b"1", b"2"]}


TOPIC_CASES = [
    # (binding pattern, routing key, matches)
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("a.*.c", "a.b.b.c", False),
    ("a.*.c", "a..c", True),  # an empty word still counts as a word
    ("#", "anything.at.all", True),
    ("#", "", True),
    ("a.#", "a", True),  # '#' matches zero words
    ("a.#", "a.b.c", True),
    ("a.#", "ab.c", False),
    ("#.c", "a.b.c", True),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.x.y.c", True),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*", "", False),  # RabbitMQ 3.10: "*" does NOT match the empty routing key (but "a..c" matches "a.*.c")
    ("*.*", "a", False),
    ("a.b", "a.b", True),
]


def test_topic_exchange(ch: BlockingChannel, uname: Callable[[str], str], cleanup: Cleanup) -> None:
    x = cleanup.exchange(uname("x"))
    ch.exchange_declare(x, "topic")
    ch.confirm_delivery()
    failures = []
    for pattern, rk, expected in TOPIC_CASES:
        q = tmp_queue(ch)
        ch.queue_bind(q, x, pattern)
        ch.basic_publish(x, rk, b"m")
        got = drain(ch, q) == [b"m"]
        if got != expected:
            failures.append((pattern, rk, expected))
        ch.queue_unbind(q, x, pattern)
    assert failures == []


def test_headers_exchange(ch: BlockingChannel, uname: Callable[[str], str], cleanup: Cleanup) -> None:
    x = cleanup.exchange(uname("x"))
    ch.exchange_declare(x, "headers")
    ch.confirm_delivery()
    queues = _bind_queues(
        ch,
        x,
        {
            "all": {"x-match": "all", "a": 1, "b": "two"},
            "any": {"x-match": "any", "a": 1, "b": "two"},
            "default": {"a": 1, "b": "two"},  # x-match defaults to all
        },
    )
    msgs = [
        ("both", {"a": 1, "b": "two"}),
        ("only-a", {"a": 1}),
        ("wrong-b", {"a": 1, "b": "three"}),
        ("extra", {"a": 1, "b": "two", "c": 0}),
        ("none", {}),
        ("only-b", {"b": "two"}),
    ]
    for body, headers in msgs:
        ch.basic_publish(x, "", body.encode(), pika.BasicProperties(headers=headers))
    assert _routed(ch, queues) == {
        "all": [b"both", b"extra"],
        "any": [b"both", b"only-a", b"wrong-b", b"extra", b"only-b"],
        "default": [b"both", b"extra"],
    }


def test_exchange_to_exchange_binding(ch: BlockingChannel, uname: Callable[[str], str], cleanup: Cleanup) -> None:
    src = cleanup.exchange(uname("src"))
    dst = cleanup.exchange(uname("dst"))
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(dst, "direct")
    ch.exchange_bind(destination=dst, source=src, routing_key="a.*")
    ch.confirm_delivery()
    q = tmp_queue(ch)
    ch.queue_bind(q, dst, "a.x")
    ch.basic_publish(src, "a.x", b"1")  # matches e2e binding and queue binding
    ch.basic_publish(src, "a.y", b"2")  # reaches dst, no queue binding there
    ch.basic_publish(src, "b.x", b"3")  # does not reach dst
    ch.basic_publish(dst, "a.x", b"4")
    assert drain(ch, q) == [b"1", b"4"]
    ch.exchange_unbind(destination=dst, source=src, routing_key="a.*")
    ch.basic_publish(src, "a.x", b"5")
    assert drain(ch, q) == []


def test_mandatory_unroutable_returns_312(conn: BlockingConnection, ch: BlockingChannel,
                                          uname: Callable[[str], str], cleanup: Cleanup) -> None:
    x = cleanup.exchange(uname("x"))
    ch.exchange_declare(x, "direct")
    returned: list[tuple[int, str, str, str, bytes]] = []
    ch.add_on_return_callback(
        lambda _ch, m, _p, body: returned.append((m.reply_code, m.reply_text, m.exchange, m.routing_key, body))
    )
    ch.basic_publish(x, "nowhere", b"lost", mandatory=True)
    ch.basic_publish(x, "nowhere", b"dropped", mandatory=False)
    pump_until(conn, lambda: returned)
    conn.process_data_events(time_limit=0.1)
    assert returned == [(312, "NO_ROUTE", x, "nowhere", b"lost")]


def test_mandatory_unroutable_with_confirms_raises(ch: BlockingChannel, uname: Callable[[str], str]) -> None:
    ch.confirm_delivery()
    # Default exchange, no such queue: returned, then confirmed (pika raises UnroutableError).
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        ch.basic_publish("", uname("noq"), b"x", mandatory=True)
    assert [m.body for m in info.value.messages] == [b"x"]
    assert info.value.messages[0].method.reply_code == 312


# --------------------------------------------------------------------------- confirms, qos, acks


def test_publisher_confirms_persistent(ch: BlockingChannel, uname: Callable[[str], str], cleanup: Cleanup) -> None:
    q = cleanup.queue(uname("durable"))
    ch.queue_declare(q, durable=True)
    ch.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    for i in range(200):
        ch.basic_publish("", q, b"%d" % i, persistent)  # raises NackError / UnroutableError on failure
    assert ch.queue_declare(q, passive=True).method.message_count == 200
    bodies = []
    for _ in range(200):
        _m, props, body = ch.basic_get(q, auto_ack=True)
        assert props.delivery_mode == 2
        bodies.append(body)
    assert bodies == [b"%d" % i for i in range(200)]


def test_qos_prefetch_limits_unacked(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    for i in range(5):
        ch.basic_publish("", q, b"%d" % i)
    ch.basic_qos(prefetch_count=2)
    got: list[tuple[int, bytes]] = []
    ch.basic_consume(q, lambda _c, m, _p, b: got.append((m.delivery_tag, b)))
    pump_until(conn, lambda: len(got) >= 2)
    conn.process_data_events(time_limit=0.2)  # short negative window: nothing more may arrive
    assert [b for _, b in got] == [b"0", b"1"]
    ch.basic_ack(got[0][0])
    pump_until(conn, lambda: len(got) >= 3)
    conn.process_data_events(time_limit=0.2)
    assert [b for _, b in got] == [b"0", b"1", b"2"]
    ch.basic_ack(got[2][0], multiple=True)  # acks 1 and 2 -> two more may flow
    pump_until(conn, lambda: len(got) >= 5)
    assert [b for _, b in got] == [b"0", b"1", b"2", b"3", b"4"]


def test_nack_requeue_keeps_position(ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    ch.confirm_delivery()
    for b in (b"1", b"2", b"3"):
        ch.basic_publish("", q, b)
    m1, _, _ = ch.basic_get(q)
    m2, _, _ = ch.basic_get(q)
    ch.basic_nack(m1.delivery_tag, requeue=True)
    # RabbitMQ puts a requeued message back at its original position (ahead of 3), flagged redelivered.
    m, _, body = ch.basic_get(q)
    assert (body, m.redelivered) == (b"1", True)
    m, _, body = ch.basic_get(q)
    assert (body, m.redelivered) == (b"3", False)
    ch.basic_reject(m2.delivery_tag, requeue=True)
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert (body, m.redelivered) == (b"2", True)


def test_reject_without_requeue_drops(ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    m, _, _ = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, _, _ = ch.basic_get(q)
    ch.basic_nack(m.delivery_tag, requeue=False)
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    assert ch.basic_get(q) == (None, None, None)


def test_ack_multiple(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    ch.confirm_delivery()
    for i in range(4):
        ch.basic_publish("", q, b"%d" % i)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(4)]
    assert tags == [1, 2, 3, 4]
    ch.basic_ack(3, multiple=True)  # acks 1..3
    ch.close()  # tag 4 still unacked -> requeued
    ch2 = conn.channel()
    m, _, body = ch2.basic_get(q, auto_ack=True)
    assert (body, m.redelivered, m.message_count) == (b"3", True, 0)


def test_ack_unknown_delivery_tag_406(ch: BlockingChannel) -> None:
    ch.basic_ack(999)
    code, text = closed_by_broker(lambda: ch.queue_declare("", exclusive=True))
    assert code == 406
    assert text == "PRECONDITION_FAILED - unknown delivery tag 999"


def test_double_ack_406(ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    ch.basic_publish("", q, b"x")
    m, _, _ = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.basic_ack(m.delivery_tag)
    code, text = closed_by_broker(lambda: ch.queue_declare("", exclusive=True))
    assert code == 406
    assert text == f"PRECONDITION_FAILED - unknown delivery tag {m.delivery_tag}"


# --------------------------------------------------------------------------- reply codes on queues/exchanges


def test_exclusive_queue_from_other_connection_405(broker_url: str, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    other = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        code, text = closed_by_broker(lambda: other.channel().queue_declare(q, passive=True))
        assert code == 405
        assert text == f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. " \
            "It could be originally declared on another connection or the exclusive property value does not " \
            "match that of the original declaration."
        code, _ = closed_by_broker(lambda: other.channel().basic_consume(q, lambda *a: None))
        assert code == 405
    finally:
        other.close()


def test_queue_delete_if_unused_if_empty_406(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    ch.basic_consume(q, lambda *a: None)
    code, text = closed_by_broker(lambda: conn.channel().queue_delete(q, if_unused=True))
    assert (code, text) == (406, f"PRECONDITION_FAILED - queue '{q}' in vhost '/' in use")
    ch2 = conn.channel()
    ch2.confirm_delivery()
    ch2.basic_publish("", q + "-nope", b"x")  # unroutable, not mandatory: silently dropped
    q2 = tmp_queue(ch2)
    ch2.basic_publish("", q2, b"x")
    code, text = closed_by_broker(lambda: conn.channel().queue_delete(q2, if_empty=True))
    assert (code, text) == (406, f"PRECONDITION_FAILED - queue '{q2}' in vhost '/' not empty")
    ok = conn.channel().queue_delete(q2)
    assert ok.method.message_count == 1


def test_queue_purge_count(ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    ch.confirm_delivery()
    for i in range(7):
        ch.basic_publish("", q, b"%d" % i)
    m, _, _ = ch.basic_get(q)  # unacked messages are not purged
    assert ch.queue_purge(q).method.message_count == 6
    assert ch.queue_purge(q).method.message_count == 0
    ch.basic_nack(m.delivery_tag, requeue=True)
    # requeue is asynchronous w.r.t. declare-ok counts on RabbitMQ: poll
    wait_for(lambda: ch.queue_declare(q, passive=True).method.message_count == 1, timeout=2)


def test_exchange_delete_if_unused_406(ch: BlockingChannel, conn: BlockingConnection,
                                       uname: Callable[[str], str], cleanup: Cleanup) -> None:
    x = cleanup.exchange(uname("x"))
    ch.exchange_declare(x, "fanout")
    q = tmp_queue(ch)
    ch.queue_bind(q, x)
    code, text = closed_by_broker(lambda: conn.channel().exchange_delete(x, if_unused=True))
    assert (code, text) == (406, f"PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use")
    ch.queue_unbind(q, x)
    conn.channel().exchange_delete(x, if_unused=True)
    code, _ = closed_by_broker(lambda: ch.exchange_declare(x, passive=True))
    assert code == 404


def test_redeclare_queue_different_durable_406(ch: BlockingChannel, conn: BlockingConnection,
                                               uname: Callable[[str], str], cleanup: Cleanup) -> None:
    q = cleanup.queue(uname("q"))
    ch.queue_declare(q, durable=True)
    ch.queue_declare(q, durable=True)  # equivalent redeclare is fine
    code, text = closed_by_broker(lambda: conn.channel().queue_declare(q, durable=False))
    assert code == 406
    assert text == (
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': "
        "received 'false' but current is 'true'"
    )


def test_redeclare_exchange_different_type_406(ch: BlockingChannel, conn: BlockingConnection,
                                               uname: Callable[[str], str], cleanup: Cleanup) -> None:
    x = cleanup.exchange(uname("x"))
    ch.exchange_declare(x, "direct")
    code, text = closed_by_broker(lambda: conn.channel().exchange_declare(x, "fanout"))
    assert code == 406
    assert text == (
        f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': "
        "received 'fanout' but current is 'direct'"
    )


# --------------------------------------------------------------------------- consumers


def test_consumer_cancelled_when_queue_deleted(conn: BlockingConnection, ch: BlockingChannel,
                                               uname: Callable[[str], str], cleanup: Cleanup) -> None:
    q = cleanup.queue(uname("q"))
    ch.queue_declare(q)
    cancelled: list[str] = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(q, lambda *a: None)
    conn.channel().queue_delete(q)
    pump_until(conn, lambda: cancelled)
    assert cancelled == [tag]
    assert ch.is_open  # the channel survives a broker-initiated cancel
    assert ch.consumer_tags == []


def test_consumers_round_robin(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    ch.basic_consume(q, lambda _c, m, _p, b: got["a"].append(b), auto_ack=True, consumer_tag="a")
    ch.basic_consume(q, lambda _c, m, _p, b: got["b"].append(b), auto_ack=True, consumer_tag="b")
    pub = conn.channel()
    for i in range(6):
        pub.basic_publish("", q, b"%d" % i)
    pump_until(conn, lambda: len(got["a"]) + len(got["b"]) == 6)
    assert got == {"a": [b"0", b"2", b"4"], "b": [b"1", b"3", b"5"]}


def test_close_channel_requeues_unacked(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    ch.confirm_delivery()
    for i in range(4):
        ch.basic_publish("", q, b"%d" % i)
    consumer = conn.channel()
    got: list[bytes] = []
    consumer.basic_consume(q, lambda _c, m, _p, b: got.append(b))
    pump_until(conn, lambda: len(got) == 4)
    consumer.close()
    out = []
    for _ in range(4):
        m, _, body = ch.basic_get(q, auto_ack=True)
        out.append((body, m.redelivered))
    assert out == [(b"0", True), (b"1", True), (b"2", True), (b"3", True)]


def test_basic_cancel_requeues_nothing_and_stops_delivery(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    got: list[bytes] = []
    tag = ch.basic_consume(q, lambda _c, m, _p, b: got.append(b), auto_ack=True)
    ch.basic_publish("", q, b"1")
    pump_until(conn, lambda: got == [b"1"])
    ch.basic_cancel(tag)
    ch.basic_publish("", q, b"2")
    assert pump_until(conn, lambda: ch.queue_declare(q, passive=True).method.message_count == 1)
    assert got == [b"1"]


# --------------------------------------------------------------------------- transactions, recover


def test_tx_rollback_and_commit_publish(ch: BlockingChannel, conn: BlockingConnection) -> None:
    q = tmp_queue(ch)
    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", q, b"rolled-back")
    tx.tx_rollback()
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    tx.basic_publish("", q, b"a")
    tx.basic_publish("", q, b"b")
    assert ch.queue_declare(q, passive=True).method.message_count == 0  # not visible before commit
    tx.tx_commit()
    assert drain(ch, q) == [b"a", b"b"]


def test_tx_rollback_of_ack(ch: BlockingChannel, conn: BlockingConnection) -> None:
    q = tmp_queue(ch)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"x")
    tx = conn.channel()
    tx.tx_select()
    m, _, _ = tx.basic_get(q)
    tx.basic_ack(m.delivery_tag)
    tx.tx_rollback()
    # The ack was discarded: still unacked (not ready), and requeued when the channel closes.
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    tx.close()
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert (body, m.redelivered) == (b"x", True)


def test_tx_commit_of_ack(ch: BlockingChannel, conn: BlockingConnection) -> None:
    q = tmp_queue(ch)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"x")
    tx = conn.channel()
    tx.tx_select()
    m, _, _ = tx.basic_get(q)
    tx.basic_ack(m.delivery_tag)
    tx.tx_commit()
    tx.close()
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    assert ch.basic_get(q) == (None, None, None)


def test_tx_commit_without_select_406(ch: BlockingChannel) -> None:
    code, text = closed_by_broker(ch.tx_commit)
    assert (code, text) == (406, "PRECONDITION_FAILED - channel is not transactional")


def test_basic_recover_requeue(ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    ch.basic_get(q)
    ch.basic_get(q)
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.basic_recover(requeue=True)
    out = []
    for _ in range(2):
        m, _, body = ch.basic_get(q, auto_ack=True)
        out.append((body, m.redelivered))
    assert out == [(b"1", True), (b"2", True)]


# --------------------------------------------------------------------------- direct reply-to


def test_direct_reply_to_rpc(broker_url: str, conn: BlockingConnection, ch: BlockingChannel,
                             uname: Callable[[str], str], cleanup: Cleanup) -> None:
    rpc_q = cleanup.queue(uname("rpc"))
    ch.queue_declare(rpc_q)

    seen_reply_to: list[str] = []
    server_ready = threading.Event()
    stop = threading.Event()

    def server() -> None:
        sconn = pika.BlockingConnection(pika.URLParameters(broker_url))
        sch = sconn.channel()

        def on_request(c: BlockingChannel, m: Any, p: pika.BasicProperties, body: bytes) -> None:
            seen_reply_to.append(p.reply_to)
            c.basic_publish("", p.reply_to, body.upper(),
                            pika.BasicProperties(correlation_id=p.correlation_id))
            c.basic_ack(m.delivery_tag)

        sch.basic_consume(rpc_q, on_request)
        server_ready.set()
        while not stop.is_set():
            sconn.process_data_events(time_limit=0.02)
        sconn.close()

    t = threading.Thread(target=server, daemon=True)
    t.start()
    try:
        assert server_ready.wait(5)
        replies: list[tuple[str, bytes]] = []
        ch.basic_consume("amq.rabbitmq.reply-to",
                         lambda _c, m, p, b: replies.append((p.correlation_id, b)), auto_ack=True)
        ch.basic_publish("", rpc_q, b"ping",
                         pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c1"))
        pump_until(conn, lambda: replies)
        assert replies == [("c1", b"PING")]
        assert seen_reply_to[0].startswith("amq.rabbitmq.reply-to.")
        assert seen_reply_to[0] != "amq.rabbitmq.reply-to"
    finally:
        stop.set()
        t.join(5)


def test_direct_reply_to_requires_no_ack_consumer(ch: BlockingChannel) -> None:
    # The pseudo-queue only accepts no-ack consumers.
    code, text = closed_by_broker(lambda: ch.basic_consume("amq.rabbitmq.reply-to", lambda *a: None,
                                                           auto_ack=False))
    assert code == 406
    assert text == "PRECONDITION_FAILED - reply consumer cannot acknowledge"
