"""More AMQP 0-9-1 semantics, run identically against mailslot and RabbitMQ 3.10.

Every expectation below was observed on RabbitMQ 3.10 first (the reference); where RabbitMQ does something
the spec alone would not predict, the test says so. Complements test_pika.py (not repeated here).
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pika.spec
import pytest
from pamqp import commands as C
from pamqp import frame as pframe
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from conftest import Cleanup
from helpers import outcome, pump_until, tmp_queue, wait_for

pytestmark = pytest.mark.timeout(30)


def settle(conn: BlockingConnection, seconds: float) -> None:
    """Let deliveries arrive for a while (for asserting that no MORE arrive)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        conn.process_data_events(time_limit=0.02)


def fill(ch: BlockingChannel, q: str, n: int) -> None:
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", q, b"%d" % i)


def exists(conn: BlockingConnection, kind: str, name: str) -> bool:
    def check(c: BlockingChannel) -> None:
        if kind == "queue":
            c.queue_declare(name, passive=True)
        else:
            c.exchange_declare(name, passive=True)

    result = outcome(lambda: check(conn.channel()))
    assert result[0] in ("ok", "channel"), result
    return result[0] == "ok"


# --------------------------------------------------------------------------- publish-time checks


def test_user_id_mismatch_406_without_reply_to(ch: BlockingChannel) -> None:
    # RabbitMQ validates user_id on every publish, whatever other properties are set.
    q = tmp_queue(ch)
    ch.confirm_delivery()
    result = outcome(lambda: ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="bob")))
    assert result == ("channel", 406,
                      "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'")


def test_user_id_mismatch_406_with_other_properties(ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    ch.confirm_delivery()
    props = pika.BasicProperties(user_id="bob", app_id="a", message_id="m", content_type="text/plain")
    result = outcome(lambda: ch.basic_publish("", q, b"x", props))
    assert result[:2] == ("channel", 406)


def test_user_id_equal_to_login_accepted(ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="guest"))
    _m, props, _b = ch.basic_get(q, auto_ack=True)
    assert props.user_id == "guest"


def test_publish_to_internal_exchange_403(conn: BlockingConnection, ch: BlockingChannel,
                                          uname: Callable[[str], str], cleanup: Cleanup) -> None:
    x = cleanup.exchange(uname("x"))
    ch.exchange_declare(x, "fanout", internal=True)
    pub = conn.channel()
    result = outcome(lambda: (pub.basic_publish(x, "", b"x"), pub.queue_declare("", exclusive=True)))
    assert result == ("channel", 403, f"ACCESS_REFUSED - cannot publish to internal exchange '{x}' in vhost '/'")


# --------------------------------------------------------------------------- exchange declare / delete


def test_auto_delete_exchange_with_bindings_can_be_deleted(conn: BlockingConnection, ch: BlockingChannel,
                                                           uname: Callable[[str], str]) -> None:
    # exchange.delete of an auto-delete exchange that still has bindings: delete-ok, exchange gone,
    # and the connection stays usable.
    x = uname("x")
    ch.exchange_declare(x, "fanout", auto_delete=True)
    q = tmp_queue(ch)
    ch.queue_bind(q, x)
    assert outcome(lambda: ch.exchange_delete(x)) == ("ok",)
    assert conn.is_open
    assert not exists(conn, "exchange", x)
    assert exists(conn, "queue", q)


def test_redeclare_predeclared_exchange_equivalence(conn: BlockingConnection) -> None:
    # amq.* exchanges that exist are checked for equivalence like any other (406), not refused for the prefix.
    assert outcome(lambda: conn.channel().exchange_declare("amq.direct", "direct", durable=True)) == ("ok",)
    assert outcome(lambda: conn.channel().exchange_declare("amq.direct", "fanout", durable=True)) == (
        "channel", 406, "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in vhost '/': "
        "received 'fanout' but current is 'direct'")
    assert outcome(lambda: conn.channel().exchange_declare("amq.direct", "direct", durable=False)) == (
        "channel", 406, "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'amq.direct' in vhost '/': "
        "received 'false' but current is 'true'")


def test_redeclare_exchange_with_different_arguments_406(conn: BlockingConnection, ch: BlockingChannel,
                                                          uname: Callable[[str], str], cleanup: Cleanup) -> None:
    # Exchange arguments take part in the equivalence check, as queue arguments do.
    x = cleanup.exchange(uname("x"))
    ch.exchange_declare(x, "direct")
    result = outcome(lambda: conn.channel().exchange_declare(x, "direct", arguments={"alternate-exchange": "ae"}))
    assert result == ("channel", 406, f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange "
                                      f"'{x}' in vhost '/': received the value 'ae' of type 'longstr' but current "
                                      "is none")


def test_redeclare_predeclared_exchange_internal_406(conn: BlockingConnection) -> None:
    result = outcome(lambda: conn.channel().exchange_declare("amq.topic", "topic", durable=True, internal=True))
    assert result == ("channel", 406, "PRECONDITION_FAILED - inequivalent arg 'internal' for exchange 'amq.topic' "
                                      "in vhost '/': received 'true' but current is 'false'")


def test_headers_bind_invalid_x_match_text(ch: BlockingChannel) -> None:
    # RabbitMQ formats the bad value as an Erlang binary.
    q = tmp_queue(ch)
    result = outcome(lambda: ch.queue_bind(q, "amq.headers", "", arguments={"x-match": "some"}))
    assert result == ("channel", 406, 'PRECONDITION_FAILED - Invalid x-match field value <<"some">>; '
                                      "expected all, any, all-with-x, or any-with-x")


def test_declare_new_amq_exchange_403(conn: BlockingConnection, uname: Callable[[str], str]) -> None:
    name = "amq." + uname("x")
    result = outcome(lambda: conn.channel().exchange_declare(name, "direct"))
    assert result == ("channel", 403, f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'")


def test_declare_default_exchange_403(conn: BlockingConnection) -> None:
    result = outcome(lambda: conn.channel().exchange_declare("", "direct", durable=True))
    assert result == ("channel", 403, "ACCESS_REFUSED - operation not permitted on the default exchange")


def test_unknown_type_on_existing_exchange_is_503(broker_url: str, conn: BlockingConnection,
                                                  ch: BlockingChannel, uname: Callable[[str], str],
                                                  cleanup: Cleanup) -> None:
    # The exchange type is validated before the lookup/equivalence check: 503 closes the connection.
    x = cleanup.exchange(uname("x"))
    ch.exchange_declare(x, "direct")
    assert outcome(lambda: conn.channel().exchange_declare(x, "nonsense")) == (
        "connection", 503, "COMMAND_INVALID - unknown exchange type 'nonsense'")
    other = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        assert outcome(lambda: other.channel().exchange_declare("amq.direct", "nonsense", durable=True)) == (
            "connection", 503, "COMMAND_INVALID - unknown exchange type 'nonsense'")
    finally:
        if other.is_open:
            other.close()


# --------------------------------------------------------------------------- queue declare / exclusivity


def test_redeclare_exclusive_flag_mismatch_405(conn: BlockingConnection, ch: BlockingChannel,
                                               uname: Callable[[str], str], cleanup: Cleanup) -> None:
    # RabbitMQ checks exclusive ownership (strict) before field equivalence: 405, not 406.
    excl = uname("excl")
    ch.queue_declare(excl, exclusive=True)
    result = outcome(lambda: conn.channel().queue_declare(excl, exclusive=False))
    assert result[:2] == ("channel", 405)
    assert result[2].startswith(f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{excl}'")
    shared = cleanup.queue(uname("shared"))
    ch.queue_declare(shared)
    result = outcome(lambda: conn.channel().queue_declare(shared, exclusive=True))
    assert result[:2] == ("channel", 405)
    assert result[2].startswith(f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{shared}'")


def test_redeclare_own_exclusive_queue_same_flags_ok(conn: BlockingConnection, ch: BlockingChannel,
                                                     uname: Callable[[str], str]) -> None:
    excl = uname("excl")
    ch.queue_declare(excl, exclusive=True)
    assert outcome(lambda: conn.channel().queue_declare(excl, exclusive=True)) == ("ok",)


def test_bind_other_connections_exclusive_queue_405_unbind_ok(broker_url: str, ch: BlockingChannel) -> None:
    # queue.bind checks exclusive access (405); RabbitMQ lets queue.unbind through (unbind-ok).
    q = tmp_queue(ch)
    other = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        result = outcome(lambda: other.channel().queue_bind(q, "amq.fanout"))
        assert result[:2] == ("channel", 405)
        assert result[2].startswith(f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}'")
        assert outcome(lambda: other.channel().queue_unbind(q, "amq.fanout")) == ("ok",)
    finally:
        other.close()
    # and the bind did not happen
    ch.confirm_delivery()
    ch.basic_publish("amq.fanout", "", b"x")
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_exclusive_queue_gone_after_owner_closes(broker_url: str, uname: Callable[[str], str]) -> None:
    q = uname("excl")
    owner = pika.BlockingConnection(pika.URLParameters(broker_url))
    owner.channel().queue_declare(q, exclusive=True)
    owner.close()
    other = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        wait_for(lambda: not exists(other, "queue", q), timeout=3, what="exclusive queue deleted")
    finally:
        other.close()


def test_exclusive_consumer_then_second_consumer_403(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    assert outcome(lambda: conn.channel().basic_consume(q, lambda *a: None)) == (
        "channel", 403, f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")
    q2 = tmp_queue(ch)
    ch.basic_consume(q2, lambda *a: None)
    assert outcome(lambda: conn.channel().basic_consume(q2, lambda *a: None, exclusive=True)) == (
        "channel", 403, f"ACCESS_REFUSED - queue '{q2}' in vhost '/' in exclusive use")


# --------------------------------------------------------------------------- bindings


def test_unbind_of_missing_things_is_ok(conn: BlockingConnection, ch: BlockingChannel,
                                        uname: Callable[[str], str]) -> None:
    # RabbitMQ 3.10 answers unbind-ok for a binding that does not exist, even when the queue or either
    # exchange is missing.
    q = tmp_queue(ch)
    missing = uname("missing")
    cases = {
        "queue-unbind-no-binding": lambda c: c.queue_unbind(q, "amq.direct", "nothing"),
        "queue-unbind-missing-queue": lambda c: c.queue_unbind(missing, "amq.direct", "nothing"),
        "queue-unbind-missing-exchange": lambda c: c.queue_unbind(q, missing, "nothing"),
        "exchange-unbind-no-binding": lambda c: c.exchange_unbind("amq.direct", "amq.fanout", "nothing"),
        "exchange-unbind-missing-destination": lambda c: c.exchange_unbind(missing, "amq.fanout", "nothing"),
        "exchange-unbind-missing-source": lambda c: c.exchange_unbind("amq.direct", missing, "nothing"),
    }
    got = {name: outcome(lambda op=op: op(conn.channel()))[:2] for name, op in cases.items()}
    assert got == {name: ("ok",) for name in cases}


def test_bind_missing_queue_or_exchange_404(conn: BlockingConnection, ch: BlockingChannel,
                                            uname: Callable[[str], str]) -> None:
    q = tmp_queue(ch)
    missing = uname("missing")
    assert outcome(lambda: conn.channel().queue_bind(missing, "amq.direct", "k")) == (
        "channel", 404, f"NOT_FOUND - no queue '{missing}' in vhost '/'")
    assert outcome(lambda: conn.channel().queue_bind(q, missing, "k")) == (
        "channel", 404, f"NOT_FOUND - no exchange '{missing}' in vhost '/'")
    assert outcome(lambda: conn.channel().exchange_bind(missing, "amq.direct", "k")) == (
        "channel", 404, f"NOT_FOUND - no exchange '{missing}' in vhost '/'")


def test_unbind_expands_last_queue_shortcuts(ch: BlockingChannel, uname: Callable[[str], str],
                                             cleanup: Cleanup) -> None:
    # queue.bind and queue.unbind both expand an empty queue name to the last declared queue and an empty
    # routing key (with empty queue) to that queue's name.
    x = cleanup.exchange(uname("x"))
    ch.exchange_declare(x, "direct")
    q = tmp_queue(ch)
    ch.queue_bind("", x, "")
    ch.confirm_delivery()
    ch.basic_publish(x, q, b"1")
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    ch.queue_unbind("", x, "")
    ch.basic_publish(x, q, b"2")
    assert ch.queue_declare(q, passive=True).method.message_count == 1


def test_exchange_to_exchange_unbind_stops_routing(ch: BlockingChannel, uname: Callable[[str], str],
                                                   cleanup: Cleanup) -> None:
    src, dst = cleanup.exchange(uname("src")), cleanup.exchange(uname("dst"))
    ch.exchange_declare(src, "direct")
    ch.exchange_declare(dst, "fanout")
    q = tmp_queue(ch)
    ch.queue_bind(q, dst)
    ch.exchange_bind(dst, src, "k")
    ch.confirm_delivery()
    ch.basic_publish(src, "k", b"1")
    ch.exchange_unbind(dst, src, "k")
    ch.basic_publish(src, "k", b"2")
    assert ch.queue_declare(q, passive=True).method.message_count == 1


# --------------------------------------------------------------------------- auto-delete


def test_auto_delete_queue_lifecycle(conn: BlockingConnection, ch: BlockingChannel,
                                     uname: Callable[[str], str], cleanup: Cleanup) -> None:
    q = cleanup.queue(uname("ad"))
    ch.queue_declare(q, auto_delete=True)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"x")
    m, _, _ = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    assert exists(conn, "queue", q)  # basic.get is not a consumer: still there
    t1 = ch.basic_consume(q, lambda *a: None)
    t2 = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(t1)
    assert exists(conn, "queue", q)  # one consumer left
    ch.basic_cancel(t2)
    wait_for(lambda: not exists(conn, "queue", q), timeout=3, what="auto-delete queue gone")


def test_auto_delete_queue_deleted_when_consumer_channel_closes(conn: BlockingConnection, ch: BlockingChannel,
                                                                uname: Callable[[str], str],
                                                                cleanup: Cleanup) -> None:
    q = cleanup.queue(uname("ad"))
    ch.queue_declare(q, auto_delete=True)
    consumer = conn.channel()
    consumer.basic_consume(q, lambda *a: None)
    consumer.close()
    wait_for(lambda: not exists(conn, "queue", q), timeout=3, what="auto-delete queue gone")


def test_auto_delete_exchange_lifecycle(conn: BlockingConnection, ch: BlockingChannel,
                                        uname: Callable[[str], str], cleanup: Cleanup) -> None:
    x = cleanup.exchange(uname("adx"))
    ch.exchange_declare(x, "direct", auto_delete=True)
    assert exists(conn, "exchange", x)  # never bound: stays
    q = tmp_queue(ch)
    ch.queue_bind(q, x, "a")
    ch.queue_bind(q, x, "b")
    ch.queue_unbind(q, x, "a")
    assert exists(conn, "exchange", x)
    ch.queue_unbind(q, x, "b")
    assert not exists(conn, "exchange", x)
    # deleting the bound queue removes the last binding too
    ch.exchange_declare(x, "fanout", auto_delete=True)
    q2 = tmp_queue(ch)
    ch.queue_bind(q2, x)
    ch.queue_delete(q2)
    assert not exists(conn, "exchange", x)


# --------------------------------------------------------------------------- consumers, qos


def test_consumer_tag_reuse_on_channel_530(broker_addr: tuple[str, int]) -> None:
    # pika refuses a duplicate tag client-side, so this one speaks raw frames.
    with RawConn(broker_addr) as r:
        q = r.call(C.Queue.Declare(queue="", exclusive=True)).queue
        r.call(C.Basic.Consume(queue=q, consumer_tag="dup"))
        r.send(C.Basic.Consume(queue=q, consumer_tag="dup"))
        close = r.expect(C.Connection.Close)
        assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
            530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'", 60, 20)


def test_cancel_unknown_tag_is_ok(ch: BlockingChannel) -> None:
    assert outcome(lambda: ch.basic_cancel("never-was")) == ("ok",)
    assert ch.is_open


def test_qos_global_limit_shared_by_consumers(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    fill(ch, q, 20)
    c = conn.channel()
    c.basic_qos(prefetch_count=3, global_qos=True)
    got: list[bytes] = []
    c.basic_consume(q, lambda _c, m, p, b: got.append(b), consumer_tag="a")
    c.basic_consume(q, lambda _c, m, p, b: got.append(b), consumer_tag="b")
    settle(conn, 0.5)
    assert len(got) == 3


def _three_consumers(conn: BlockingConnection, q: str, qos: list[tuple[bool, int]]) -> list[int]:
    c = conn.channel()
    for global_qos, count in qos:
        c.basic_qos(prefetch_count=count, global_qos=global_qos)
    got: dict[str, int] = {"a": 0, "b": 0, "c": 0}
    for tag in got:
        c.basic_consume(q, lambda _c, m, p, b, tag=tag: got.__setitem__(tag, got[tag] + 1), consumer_tag=tag)
    settle(conn, 0.5)
    return sorted(got.values())


def test_qos_global_after_per_consumer_both_apply(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    fill(ch, q, 20)
    assert _three_consumers(conn, q, [(False, 2), (True, 5)]) == [1, 2, 2]


def test_qos_per_consumer_after_global_clears_global_limit(conn: BlockingConnection,
                                                           ch: BlockingChannel) -> None:
    # RabbitMQ 3.10: basic.qos global=false also lifts the channel-wide limit (rabbit_limiter:unlimit_prefetch),
    # so three consumers with prefetch 2 get 6 messages although global=true 5 was set first.
    q = tmp_queue(ch)
    fill(ch, q, 20)
    assert _three_consumers(conn, q, [(True, 5), (False, 2)]) == [2, 2, 2]


def test_qos_per_consumer_zero_after_global_is_unlimited(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    fill(ch, q, 20)
    assert sum(_three_consumers(conn, q, [(True, 5), (False, 0)])) == 20


def test_qos_per_consumer_change_affects_only_new_consumers(conn: BlockingConnection,
                                                            ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    fill(ch, q, 20)
    c = conn.channel()
    c.basic_qos(prefetch_count=2)
    tags: list[int] = []
    c.basic_consume(q, lambda _c, m, p, b: tags.append(m.delivery_tag))
    settle(conn, 0.3)
    assert len(tags) == 2
    c.basic_qos(prefetch_count=5)  # existing consumer keeps prefetch 2
    c.basic_ack(tags[0])
    settle(conn, 0.3)
    assert len(tags) == 3


def test_qos_global_change_applies_at_once(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    fill(ch, q, 20)
    c = conn.channel()
    c.basic_qos(prefetch_count=2, global_qos=True)
    tags: list[int] = []
    c.basic_consume(q, lambda _c, m, p, b: tags.append(m.delivery_tag))
    settle(conn, 0.3)
    assert len(tags) == 2
    c.basic_qos(prefetch_count=5, global_qos=True)
    settle(conn, 0.3)
    assert len(tags) == 5
    c.basic_qos(prefetch_count=0, global_qos=True)
    settle(conn, 0.3)
    assert len(tags) == 20


def test_basic_get_ignores_prefetch(ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    fill(ch, q, 5)
    ch.basic_qos(prefetch_count=1)
    assert [ch.basic_get(q)[2] for _ in range(4)] == [b"0", b"1", b"2", b"3"]


def test_get_ok_message_count_and_tags(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    fill(ch, q, 3)
    seen = []
    for _ in range(3):
        m, _, _ = ch.basic_get(q)
        seen.append((m.message_count, m.delivery_tag, m.redelivered))
    assert seen == [(2, 1, False), (1, 2, False), (0, 3, False)]
    other = conn.channel()
    fill(ch, q, 1)
    m, _, _ = other.basic_get(q)
    assert m.delivery_tag == 1  # delivery tags are per channel
    ch.basic_consume(q, lambda *a: None)
    ok = ch.queue_declare(q, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (0, 1)


def test_cancel_leaves_unacked_with_channel(conn: BlockingConnection, ch: BlockingChannel) -> None:
    # basic.cancel does not requeue: unacked deliveries stay with the channel, can still be acked,
    # and come back (redelivered) only when the channel closes.
    q = tmp_queue(ch)
    fill(ch, q, 3)
    c = conn.channel()
    tags: list[int] = []
    tag = c.basic_consume(q, lambda _c, m, p, b: tags.append(m.delivery_tag))
    pump_until(conn, lambda: len(tags) == 3)
    c.basic_cancel(tag)
    settle(conn, 0.2)
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    c.basic_ack(tags[1])
    assert c.is_open
    c.close()
    out = []
    wait_for(lambda: ch.queue_declare(q, passive=True).method.message_count == 2, timeout=3)
    for _ in range(2):
        m, _, body = ch.basic_get(q, auto_ack=True)
        out.append((body, m.redelivered))
    assert out == [(b"0", True), (b"2", True)]


def test_recover_redelivers_to_consumer(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    fill(ch, q, 3)
    c = conn.channel()
    got: list[tuple[bytes, int, bool]] = []
    c.basic_consume(q, lambda _c, m, p, b: got.append((b, m.delivery_tag, m.redelivered)))
    pump_until(conn, lambda: len(got) == 3)
    c.basic_ack(got[1][1])
    c.basic_recover(requeue=True)
    pump_until(conn, lambda: len(got) == 5)
    assert got[3:] == [(b"0", 4, True), (b"2", 5, True)]


def test_recover_requeue_false_540(ch: BlockingChannel) -> None:
    assert outcome(lambda: ch.basic_recover(requeue=False)) == (
        "connection", 540, "NOT_IMPLEMENTED - requeue=false")


def test_channel_flow(conn: BlockingConnection) -> None:
    assert conn.channel().flow(True) is True
    assert outcome(lambda: conn.channel().flow(False)) == ("connection", 540, "NOT_IMPLEMENTED - active=false")


# --------------------------------------------------------------------------- confirms and transactions


def test_confirm_return_precedes_ack_of_unroutable(conn: BlockingConnection, ch: BlockingChannel) -> None:
    # A mandatory unroutable publish under confirms: basic.return first, then the ack that covers it.
    events: list[Any] = []
    impl = ch._impl
    impl.add_on_return_callback(lambda *a: events.append("return"))
    impl.confirm_delivery(lambda f: events.append((type(f.method).__name__, f.method.delivery_tag,
                                                   f.method.multiple)))
    q = tmp_queue(ch)
    pump_until(conn, lambda: True)
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q + "-nowhere", b"2", mandatory=True)
    ch.basic_publish("", q, b"3")

    def confirmed_upto() -> int:
        acks = [e for e in events if e != "return"]
        return max((e[1] for e in acks), default=0)

    pump_until(conn, lambda: confirmed_upto() >= 3 and "return" in events)
    assert all(e == "return" or e[0] == "Ack" for e in events), events
    first_covering_2 = next(i for i, e in enumerate(events) if e != "return" and (e[1] == 2 or (e[1] > 2 and e[2])))
    assert events.index("return") < first_covering_2, events
    assert events.count("return") == 1


def test_tx_mandatory_unroutable_returned_at_commit(conn: BlockingConnection, ch: BlockingChannel) -> None:
    events: list[Any] = []
    ch._impl.add_on_return_callback(lambda _c, m, p, b: events.append(("return", m.reply_code, m.reply_text, b)))
    ch.tx_select()
    ch.basic_publish("", "mailslot-test.nowhere", b"x", mandatory=True)
    settle(conn, 0.3)
    events.append("commit")
    ch.tx_commit()
    settle(conn, 0.1)
    assert events == ["commit", ("return", 312, "NO_ROUTE", b"x")]


def test_confirm_then_tx_406(ch: BlockingChannel) -> None:
    ch.confirm_delivery()
    assert outcome(ch.tx_select) == ("channel", 406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode")


# --------------------------------------------------------------------------- message content


def test_every_basic_property_round_trips(ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    ch.confirm_delivery()
    headers = {
        "s": "str", "i": 42, "neg": -7, "big": 2 ** 40, "t": True, "f": False,
        "d": decimal.Decimal("3.14"), "ts": datetime.datetime(2020, 1, 2, 3, 4, 5),
        "b": b"\x00\xffbytes", "arr": [1, "two", [3], {"k": "v"}], "tbl": {"n": {"deep": 1}}, "none": None,
    }
    sent = pika.BasicProperties(
        content_type="application/json", content_encoding="gzip", headers=headers, delivery_mode=2,
        priority=7, correlation_id="corr", reply_to="rq", expiration="60000", message_id="mid",
        timestamp=1700000000, type="typ", user_id="guest", app_id="app", cluster_id="cl")
    ch.basic_publish("", q, b"body", sent)
    _m, got, body = ch.basic_get(q, auto_ack=True)
    assert body == b"body"
    want = dict(vars(sent))
    want["headers"] = dict(headers, ts=headers["ts"].replace(tzinfo=datetime.UTC))
    assert vars(got) == want


def test_content_header_bytes_delivered_unchanged(broker_addr: tuple[str, int]) -> None:
    # A hand-built content header with field types pika cannot produce (float, double, short, signed byte,
    # byte array, void, unsigned... ) comes back byte for byte.
    def sstr(s: str) -> bytes:
        raw = s.encode()
        return bytes([len(raw)]) + raw

    def lstr(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    table = b"".join([
        sstr("f") + b"f" + struct.pack(">f", 1.5), sstr("d") + b"d" + struct.pack(">d", 2.25),
        sstr("s") + b"s" + struct.pack(">h", -3), sstr("b") + b"b" + struct.pack(">b", -1),
        sstr("x") + b"x" + lstr(b"\x00\x01"), sstr("V") + b"V", sstr("l") + b"l" + struct.pack(">q", 1 << 50),
        sstr("T") + b"T" + struct.pack(">Q", 1600000000), sstr("A") + b"A" + lstr(b"I" + struct.pack(">i", 5)),
        sstr("D") + b"D\x02" + struct.pack(">i", 314), sstr("t") + b"t\x01", sstr("S") + b"S" + lstr("é".encode()),
    ])
    properties = struct.pack(">H", (1 << 13) | (1 << 12)) + lstr(table) + b"\x02"
    header_payload = struct.pack(">HHQ", 60, 0, 3) + properties
    with RawConn(broker_addr) as r:
        q = r.call(C.Queue.Declare(queue="", exclusive=True)).queue
        r.send(C.Basic.Publish(exchange="", routing_key=q))
        r.sock.sendall(struct.pack(">BHI", 2, 1, len(header_payload)) + header_payload + b"\xce")
        r.sock.sendall(struct.pack(">BHI", 3, 1, 3) + b"abc\xce")
        r.send(C.Basic.Get(queue=q, no_ack=True))
        frames = r.raw_frames(3)
    assert frames[0][0] == 1  # method frame: get-ok
    assert frames[1] == (2, header_payload)
    assert frames[2] == (3, b"abc")


@pytest.mark.parametrize("size", [0, 131072 - 8, 131072 - 7, 1 << 20, 10 << 20])
def test_body_sizes_round_trip(ch: BlockingChannel, size: int) -> None:
    q = tmp_queue(ch)
    ch.confirm_delivery()
    body = (hashlib.sha256(b"%d" % size).digest() * (size // 32 + 1))[:size]
    ch.basic_publish("", q, body)
    _m, _p, got = ch.basic_get(q, auto_ack=True)
    assert len(got) == size
    assert got == body


def test_hundred_channels_publish(conn: BlockingConnection) -> None:
    channels = [conn.channel() for _ in range(100)]
    q = tmp_queue(channels[0])
    for i, c in enumerate(channels):
        c.confirm_delivery()
        c.basic_publish("", q, b"%d" % i)
    assert channels[0].queue_declare(q, passive=True).method.message_count == 100
    assert sorted(int(channels[0].basic_get(q, auto_ack=True)[2]) for _ in range(100)) == list(range(100))


# --------------------------------------------------------------------------- direct reply-to


def test_reply_to_needs_consumer_on_the_same_channel(conn: BlockingConnection) -> None:
    a, b = conn.channel(), conn.channel()
    q = tmp_queue(a)
    a.basic_consume("amq.rabbitmq.reply-to", lambda *x: None, auto_ack=True)
    result = outcome(lambda: (b.basic_publish("", q, b"x", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to")),
                              b.queue_declare("", exclusive=True)))
    assert result == ("channel", 406, "PRECONDITION_FAILED - fast reply consumer does not exist")


def test_reply_to_vanished_requester_dropped(conn: BlockingConnection, ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    requester = conn.channel()
    requester.basic_consume("amq.rabbitmq.reply-to", lambda *x: None, auto_ack=True)
    requester.basic_publish("", q, b"req", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    # Unconfirmed publishes are routed asynchronously by RabbitMQ: wait for the request to arrive.
    _m, props, _b = wait_for(lambda: (got := ch.basic_get(q, auto_ack=True))[0] and got, timeout=5)
    assert props.reply_to.startswith("amq.rabbitmq.reply-to.")
    requester.close()
    server = conn.channel()
    server.confirm_delivery()
    server.basic_publish("", props.reply_to, b"reply")  # confirmed, silently dropped
    with pytest.raises(pika.exceptions.UnroutableError):
        server.basic_publish("", props.reply_to, b"reply", mandatory=True)
    server.basic_publish("", "amq.rabbitmq.reply-to.garbage", b"reply")
    assert server.is_open


def test_reply_to_second_consumer_406(ch: BlockingChannel) -> None:
    ch.basic_consume("amq.rabbitmq.reply-to", lambda *x: None, auto_ack=True)
    assert outcome(lambda: ch.basic_consume("amq.rabbitmq.reply-to", lambda *x: None, auto_ack=True)) == (
        "channel", 406, "PRECONDITION_FAILED - reply consumer already set")


def test_reply_to_pseudo_queue_declare(conn: BlockingConnection) -> None:
    # RabbitMQ answers declare-ok for amq.rabbitmq.reply-to (passive or not) with consumer_count 1.
    for passive in (True, False):
        ok = conn.channel().queue_declare("amq.rabbitmq.reply-to", passive=passive).method
        assert (ok.queue, ok.message_count, ok.consumer_count) == ("amq.rabbitmq.reply-to", 0, 1)


# --------------------------------------------------------------------------- connection level


def test_wrong_password_403(broker_url: str) -> None:
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        pika.BlockingConnection(pika.URLParameters(broker_url.replace("guest:guest", "guest:wrong")))
    assert "(403) 'ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. " \
           "For details see the broker logfile.'" in str(info.value)


def test_unknown_vhost_530(broker_url: str) -> None:
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        pika.BlockingConnection(pika.URLParameters(broker_url.replace("%2F", "mailslot-no-such-vhost")))
    assert "(530) 'NOT_ALLOWED - vhost mailslot-no-such-vhost not found'" in str(info.value)


def test_channel_max_negotiated(broker_url: str) -> None:
    params = pika.URLParameters(broker_url)
    params.channel_max = 10
    c = pika.BlockingConnection(params)
    try:
        assert c._impl.params.channel_max == 10
        for _ in range(10):
            c.channel()
        with pytest.raises(pika.exceptions.NoFreeChannels):
            c.channel()
    finally:
        c.close()


def test_pika_heartbeat_1s_idle_survives(broker_url: str) -> None:
    params = pika.URLParameters(broker_url)
    params.heartbeat = 1
    c = pika.BlockingConnection(params)
    try:
        end = time.monotonic() + 4
        while time.monotonic() < end:
            c.process_data_events(time_limit=0.2)
        assert c.is_open
        assert c.channel().is_open
    finally:
        c.close()


def test_broker_sends_heartbeats_to_idle_client(broker_addr: tuple[str, int]) -> None:
    # heartbeat=1 negotiated: RabbitMQ sends a heartbeat frame every 0.5 s on an idle connection.
    with RawConn(broker_addr, heartbeat=1) as r:
        start = time.monotonic()
        got = r.read(timeout=2.0)
        assert got is not None and got[0] == 8, got
        assert time.monotonic() - start < 1.5


def test_silent_client_disconnected_after_missed_heartbeats(broker_addr: tuple[str, int]) -> None:
    # heartbeat=1 and then silence: RabbitMQ closes the socket (no connection.close) after ~3 s.
    with RawConn(broker_addr, heartbeat=1) as r:
        start = time.monotonic()
        while True:
            got = r.read(timeout=8.0)
            if got is None:
                break
            assert got[0] == 8, got  # nothing but heartbeats before the socket goes
        assert time.monotonic() - start < 4.5


# --------------------------------------------------------------------------- raw connection helper


class RawConn:
    """A tiny AMQP client on a socket: handshake, one open channel (1), raw frame reads."""

    def __init__(self, addr: tuple[str, int], heartbeat: int = 0) -> None:
        self.sock = socket.create_connection(addr, timeout=5)
        self.buf = b""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(C.Connection.Start)
        self._send(0, C.Connection.StartOk(client_properties={"product": "mailslot-semantics-test"},
                                           mechanism="PLAIN", response="\x00guest\x00guest"))
        tune = self.expect(C.Connection.Tune)
        self._send(0, C.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max,
                                          heartbeat=heartbeat))
        self._send(0, C.Connection.Open(virtual_host="/"))
        self.expect(C.Connection.OpenOk)
        self._send(1, C.Channel.Open())
        self.expect(C.Channel.OpenOk)

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _send(self, channel: int, m: Any) -> None:
        self.sock.sendall(pframe.marshal(m, channel))

    def send(self, m: Any) -> None:
        self._send(1, m)

    def call(self, m: Any) -> Any:
        self.send(m)
        got = self.read()
        assert got is not None and got[0] == 1, got
        return pframe.unmarshal(got[2])[2]

    def expect(self, kind: type) -> Any:
        got = self.read()
        assert got is not None and got[0] == 1, got
        value = pframe.unmarshal(got[2])[2]
        assert isinstance(value, kind), value
        return value

    def read(self, timeout: float = 5.0) -> tuple[int, int, bytes] | None:
        """Next raw frame as (type, channel, whole frame bytes); None on EOF/reset."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 7:
                size = struct.unpack(">I", self.buf[3:7])[0]
                if len(self.buf) >= size + 8:
                    whole, self.buf = self.buf[:size + 8], self.buf[size + 8:]
                    return whole[0], struct.unpack(">H", whole[1:3])[0], whole
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame from server")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not data:
                return None
            self.buf += data

    def raw_frames(self, n: int) -> list[tuple[int, bytes]]:
        """The next ``n`` non-heartbeat frames as (type, payload)."""
        out = []
        while len(out) < n:
            got = self.read()
            assert got is not None
            if got[0] != 8:
                out.append((got[0], got[2][7:-1]))
        return out
