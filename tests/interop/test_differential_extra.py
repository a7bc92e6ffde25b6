"""More differential scenarios (see test_differential.py for the two ways of comparing).

Golden transcripts are recorded from RabbitMQ 3.10 into ``golden/extra_<scenario>.json``
(``MAILSLOT_RECORD_GOLDEN=1 pytest -k rabbitmq tests/interop/test_differential_extra.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest

from helpers import connect
from interop.transcripts import Transcript, assert_matches_golden, assert_same_on_both, uid

pytestmark = pytest.mark.timeout(60)





def _settle(conn: pika.BlockingConnection, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        conn.process_data_events(time_limit=0.02)


# --------------------------------------------------------------------------- declare / bind matrix


def _definition_operations(ctx: dict[str, str]) -> list[tuple[str, Callable[[Any], Any]]]:
    uid, q, x, adx, excl, other_excl, named = (ctx[k] for k in ("uid", "queue", "exchange", "adx", "excl",
                                                                   "other_excl", "named"))
    missing = "mailslot-test.missing." + uid
    reply_to = "amq.rabbitmq.reply-to"
    return [
        # predeclared exchanges
        ("redeclare-amq-direct-same", lambda ch: ch.exchange_declare("amq.direct", "direct", durable=True)),
        ("redeclare-amq-direct-type", lambda ch: ch.exchange_declare("amq.direct", "topic", durable=True)),
        ("redeclare-amq-direct-durable", lambda ch: ch.exchange_declare("amq.direct", "direct", durable=False)),
        ("redeclare-amq-topic-internal", lambda ch: ch.exchange_declare("amq.topic", "topic", durable=True,
                                                                          internal=True)),
        ("declare-default-exchange", lambda ch: ch.exchange_declare("", "direct", durable=True)),
        ("passive-amq-fanout", lambda ch: ch.exchange_declare("amq.fanout", passive=True)),
        ("delete-amq-fanout", lambda ch: ch.exchange_delete("amq.fanout")),
        ("delete-default-exchange", lambda ch: ch.exchange_delete("")),
        ("delete-missing-exchange", lambda ch: ch.exchange_delete(missing)),
        ("delete-missing-queue", lambda ch: ch.queue_delete(missing)),
        # exchange equivalence
        ("redeclare-exchange-auto-delete", lambda ch: ch.exchange_declare(x, "direct", auto_delete=False)),
        ("redeclare-exchange-durable", lambda ch: ch.exchange_declare(x, "direct", auto_delete=True, durable=True)),
        ("redeclare-exchange-internal", lambda ch: ch.exchange_declare(x, "direct", auto_delete=True,
                                                                        internal=True)),
        ("redeclare-exchange-args", lambda ch: ch.exchange_declare(x, "direct", auto_delete=True,
                                                                    arguments={"alternate-exchange": "a"})),
        # exclusivity
        ("redeclare-own-exclusive-non-exclusive", lambda ch: ch.queue_declare(excl, exclusive=False)),
        ("redeclare-own-exclusive-same", lambda ch: ch.queue_declare(excl, exclusive=True)),
        ("redeclare-shared-as-exclusive", lambda ch: ch.queue_declare(named, exclusive=True, auto_delete=True)),
        ("bind-other-exclusive", lambda ch: ch.queue_bind(other_excl, "amq.fanout")),
        ("unbind-other-exclusive", lambda ch: ch.queue_unbind(other_excl, "amq.fanout")),
        ("purge-other-exclusive", lambda ch: ch.queue_purge(other_excl)),
        ("delete-other-exclusive", lambda ch: ch.queue_delete(other_excl)),
        ("get-other-exclusive", lambda ch: ch.basic_get(other_excl)),
        # bindings
        ("bind-default-exchange", lambda ch: ch.queue_bind(q, "", "k")),
        ("unbind-default-exchange", lambda ch: ch.queue_unbind(q, "", "k")),
        ("unbind-no-such-binding", lambda ch: ch.queue_unbind(q, x, "nope")),
        ("unbind-missing-queue", lambda ch: ch.queue_unbind(missing, x, "k")),
        ("unbind-missing-exchange", lambda ch: ch.queue_unbind(q, missing, "k")),
        ("exchange-bind-missing-destination", lambda ch: ch.exchange_bind(missing, x, "k")),
        ("exchange-bind-missing-source", lambda ch: ch.exchange_bind(x, missing, "k")),
        ("exchange-bind-to-default", lambda ch: ch.exchange_bind("", x, "k")),
        ("exchange-unbind-missing", lambda ch: ch.exchange_unbind(missing, x, "k")),
        ("bind-headers-bad-x-match", lambda ch: ch.queue_bind(q, "amq.headers", "",
                                                              arguments={"x-match": "some"})),
        ("bind-empty-queue-no-last", lambda ch: ch.queue_bind("", x, "k")),
        ("purge-empty-name-no-last", lambda ch: ch.queue_purge("")),
        ("get-empty-name-no-last", lambda ch: ch.basic_get("")),
        ("delete-auto-delete-exchange-with-bindings", lambda ch: ch.exchange_delete(adx)),
        # direct reply-to pseudo queue
        ("declare-reply-to", lambda ch: ch.queue_declare(reply_to)),
        ("passive-reply-to", lambda ch: ch.queue_declare(reply_to, passive=True)),
        ("consume-reply-to-ack", lambda ch: ch.basic_consume(reply_to, lambda *a: None, auto_ack=False)),
        ("publish-reply-to-without-consumer", lambda ch: (
            ch.basic_publish("", q, b"x", pika.BasicProperties(reply_to=reply_to)),
            ch.queue_declare("", exclusive=True))),
        # publish-time checks
        ("publish-user-id-other", lambda ch: (
            ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="bob")),
            ch.queue_declare("", exclusive=True))),
        ("publish-user-id-other-and-reply-to", lambda ch: (
            ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="bob", reply_to="r")),
            ch.queue_declare("", exclusive=True))),
        ("publish-user-id-self", lambda ch: (
            ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="guest")),
            ch.queue_declare("", exclusive=True))),
        ("qos-global-then-cancel-unknown", lambda ch: (ch.basic_qos(prefetch_count=3, global_qos=True),
                                                         ch.basic_cancel("nope"))),
        ("flow-active", lambda ch: ch.flow(True)),
    ]


def _result(value: Any) -> list[Any]:
    """What an ok call returned, where it says something (declare-ok counts)."""
    method = getattr(value, "method", None)
    if method is not None and hasattr(method, "consumer_count"):
        return ["ok", method.message_count, method.consumer_count]
    return ["ok"]


def scenario_definition_codes(url: str) -> Transcript:
    t: Transcript = []
    suffix = uid()
    owner = connect(url)
    conn = connect(url)
    named = f"mailslot-test.diffx-named.{suffix}"
    try:
        other_excl = owner.channel().queue_declare("", exclusive=True).method.queue
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        x = f"mailslot-test.diffx.{suffix}"
        ch.exchange_declare(x, "direct", auto_delete=True)
        ch.queue_bind(q, x, "k")
        adx = f"mailslot-test.diffx-ad.{suffix}"
        ch.exchange_declare(adx, "fanout", auto_delete=True)
        ch.queue_bind(q, adx)
        excl = f"mailslot-test.diffx-excl.{suffix}"
        ch.queue_declare(excl, exclusive=True)
        ch.queue_declare(named, auto_delete=True)
        ch.basic_consume(named, lambda *a: None)
        ctx = {"uid": suffix, "queue": q, "exchange": x, "adx": adx, "excl": excl, "other_excl": other_excl,
               "named": named}
        for name, op in _definition_operations(ctx):
            fresh = conn.channel()
            try:
                value = op(fresh)
            except pika.exceptions.ChannelClosedByBroker as e:
                t.append([name, e.reply_code, e.reply_text.split(" - ")[0]])
            except pika.exceptions.ConnectionClosedByBroker as e:
                t.append([name, "connection", e.reply_code, e.reply_text.split(" - ")[0]])
                conn = connect(url)
            except pika.exceptions.AMQPError as e:  # e.g. the connection died without a close
                t.append([name, "error", type(e).__name__])
                conn = connect(url)
            else:
                t.append([name, *_result(value)])
                if fresh.is_open:
                    fresh.close()
    finally:
        for c in (conn, owner):
            if c.is_open:
                c.close()
        with connect(url) as cleanup:
            cleanup.channel().queue_delete(named)
    return t


# --------------------------------------------------------------------------- prefetch


QOS_SEQUENCES: dict[str, list[tuple[bool, int]]] = {
    "none": [],
    "consumer-2": [(False, 2)],
    "global-5": [(True, 5)],
    "consumer-2-then-global-5": [(False, 2), (True, 5)],
    "global-5-then-consumer-2": [(True, 5), (False, 2)],
    "global-5-then-consumer-0": [(True, 5), (False, 0)],
    "global-4-then-global-0": [(True, 4), (True, 0)],
    "consumer-1-then-consumer-3": [(False, 1), (False, 3)],
    "global-2-then-global-7": [(True, 2), (True, 7)],
}


def scenario_qos_sequences(url: str) -> Transcript:
    """Three consumers on one channel after a sequence of basic.qos: how many unacked each holds."""
    t: Transcript = []
    conn = connect(url)
    try:
        for label, sequence in QOS_SEQUENCES.items():
            pub = conn.channel()
            pub.confirm_delivery()
            q = pub.queue_declare("", exclusive=True).method.queue
            for i in range(30):
                pub.basic_publish("", q, b"%d" % i)
            ch = conn.channel()
            for global_qos, count in sequence:
                ch.basic_qos(prefetch_count=count, global_qos=global_qos)
            got = {"a": 0, "b": 0, "c": 0}
            for tag in got:
                ch.basic_consume(q, lambda _c, m, p, b, tag=tag: got.__setitem__(tag, got[tag] + 1),
                                 consumer_tag=tag)
            _settle(conn, 0.4)
            t.append([label, sorted(got.values())])
            ch.close()
            pub.close()
    finally:
        conn.close()
    return t


# --------------------------------------------------------------------------- redelivery order


def scenario_consumer_redelivery(url: str) -> Transcript:
    """Cancel with unacked, recover, nack multiple: what a consumer sees, with tags and redelivered flags."""
    t: Transcript = []
    conn = connect(url)
    try:
        pub = conn.channel()
        pub.confirm_delivery()
        q = pub.queue_declare("", exclusive=True).method.queue
        for i in range(6):
            pub.basic_publish("", q, b"%d" % i)
        ch = conn.channel()
        ch.basic_qos(prefetch_count=4)
        seen: list[list[Any]] = []
        tag = ch.basic_consume(q, lambda _c, m, p, b: seen.append([b.decode(), m.delivery_tag, m.redelivered]))
        while len(seen) < 4:
            conn.process_data_events(time_limit=0.01)
        t.append(["first-window", seen[:]])
        ch.basic_cancel(tag)
        _settle(conn, 0.2)
        t.append(["ready-after-cancel", pub.queue_declare(q, passive=True).method.message_count])
        ch.basic_ack(seen[0][1])
        ch.basic_nack(seen[2][1], multiple=True, requeue=True)  # "1" and "2" back
        _settle(conn, 0.2)
        t.append(["ready-after-nack", pub.queue_declare(q, passive=True).method.message_count])
        seen.clear()
        ch.basic_consume(q, lambda _c, m, p, b: seen.append([b.decode(), m.delivery_tag, m.redelivered]))
        while len(seen) < 3:  # window: "3" still unacked + 3 new
            conn.process_data_events(time_limit=0.01)
        _settle(conn, 0.2)
        t.append(["second-window", seen[:]])
        ch.basic_recover(requeue=True)
        seen.clear()
        while len(seen) < 4:
            conn.process_data_events(time_limit=0.01)
        _settle(conn, 0.2)
        t.append(["after-recover-window", len(seen)])
        ch.basic_ack(0, multiple=True)
        while len(seen) < 5:
            conn.process_data_events(time_limit=0.01)
        _settle(conn, 0.3)
        # RabbitMQ requeues the cancelled consumer's "3" and the live consumer's deliveries in no fixed
        # relative order: compare as sets.
        t.append(["after-recover", sorted([b, r] for b, _tag, r in seen), sorted(tag for _b, tag, _r in seen)])
    finally:
        conn.close()
    return t


SCENARIOS: dict[str, Callable[[str], Transcript]] = {
    "definition_codes": scenario_definition_codes,
    "qos_sequences": scenario_qos_sequences,
    "consumer_redelivery": scenario_consumer_redelivery,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_extra_transcript_matches_golden(scenario: str, broker_name: str, broker_url: str) -> None:
    assert_matches_golden(SCENARIOS[scenario], f"extra_{scenario}", broker_name, broker_url)


@pytest.mark.interop
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_extra_transcripts_equal_differential(scenario: str, broker_pair: dict[str, str]) -> None:
    assert_same_on_both(SCENARIOS[scenario], broker_pair)
