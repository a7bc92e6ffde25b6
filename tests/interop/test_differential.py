"""Differential scenarios: each records a transcript (a list of (event, values)) of what the broker did.

Two ways to compare:

* ``test_<scenario>[mailslot|rabbitmq]``: the transcript must equal the golden one in ``golden/<scenario>.json``,
  recorded from RabbitMQ 3.10 (re-record with ``MAILSLOT_RECORD_GOLDEN=1 pytest -k rabbitmq tests/interop``).
  This keeps the check meaningful when only one broker is available.
* ``test_<scenario>_differential``: runs the scenario on both brokers in the same test and compares the two
  transcripts directly (needs RabbitMQ reachable and mailslot importable).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest

from helpers import connect, get_all, message_count, wait_for
from interop.transcripts import Transcript, assert_matches_golden, assert_same_on_both, uid

pytestmark = pytest.mark.timeout(30)





def _settled_count(ch: Any, q: str, expect: int, timeout: float = 2.0) -> int:
    """Ready count once it reaches ``expect`` (the test fails after ``timeout`` otherwise).

    On RabbitMQ a requeue (nack/reject/channel close) is asynchronous with respect to queue.declare-ok's
    message_count: polled right after a nack it read 2, 3 or 5 in successive runs, so counts are polled."""
    return wait_for(lambda: message_count(ch, q) == expect, timeout=timeout, what=f"message_count == {expect}") and expect


def _get_all(ch: Any, q: str) -> list[list[Any]]:
    return [[body.decode(), m.redelivered] for m, _p, body in get_all(ch, q)]


# --------------------------------------------------------------------------- scenarios


def scenario_nack_redelivery_order(url: str) -> Transcript:
    t: Transcript = []
    conn = connect(url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        q = ch.queue_declare("", exclusive=True).method.queue
        for i in range(1, 9):
            ch.basic_publish("", q, str(i).encode())
        tags = {}
        for _ in range(6):
            m, _p, body = ch.basic_get(q)
            tags[body.decode()] = m.delivery_tag
        t.append(["got", sorted(tags, key=int)])
        ch.basic_nack(tags["4"], requeue=True)
        ch.basic_nack(tags["2"], requeue=True)
        ch.basic_reject(tags["5"], requeue=True)
        ch.basic_ack(tags["1"])
        t.append(["count-after-nacks", _settled_count(ch, q, 5)])
        # nack multiple: tags up to "6" not yet settled ("3", "6") go back too
        ch.basic_nack(tags["6"], multiple=True, requeue=True)
        t.append(["count-after-multiple", _settled_count(ch, q, 7)])
        t.append(["drain", _get_all(ch, q)])
    finally:
        conn.close()
    return t


def scenario_close_with_unacked(url: str) -> Transcript:
    t: Transcript = []
    conn = connect(url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        q = ch.queue_declare("", exclusive=True).method.queue
        for i in range(1, 6):
            ch.basic_publish("", q, str(i).encode())
        consumer = conn.channel()
        consumer.basic_qos(prefetch_count=3)
        got: list[Any] = []
        consumer.basic_consume(q, lambda c, m, p, b: got.append([b.decode(), m.delivery_tag, m.redelivered]))
        while len(got) < 3:
            conn.process_data_events(time_limit=0.01)
        t.append(["delivered", got[:]])
        consumer.basic_ack(got[1][1])  # ack "2"
        ch.basic_publish("", q, b"6")
        t.append(["count-before-close", _settled_count(ch, q, 2)])
        consumer.close()
        t.append(["count-after-close", _settled_count(ch, q, 5)])
        t.append(["drain", _get_all(ch, q)])
    finally:
        conn.close()
    return t


TOPIC_PATTERNS = ["#", "*", "a", "a.*", "a.#", "*.b", "#.b", "a.*.c", "a.#.c", "*.*", "#.#", "a.b.#", "*.#"]
TOPIC_KEYS = ["", "a", "b", "a.b", "a.c", "a.b.c", "a.x.y.c", "x.b", "a..c", "a.b.c.d", ".", "a."]


def scenario_topic_matrix(url: str) -> Transcript:
    conn = connect(url)
    try:
        ch = conn.channel()
        x = f"mailslot-test.diff-topic.{uid()}"
        ch.exchange_declare(x, "topic", auto_delete=True)
        queues = {}
        for p in TOPIC_PATTERNS:
            q = ch.queue_declare("", exclusive=True).method.queue
            ch.queue_bind(q, x, p)
            queues[p] = q
        ch.confirm_delivery()
        for k in TOPIC_KEYS:
            ch.basic_publish(x, k, k.encode() or b"<empty>")
        return [[p, [b for b, _ in _get_all(ch, queues[p])]] for p in TOPIC_PATTERNS]
    finally:
        conn.close()


HEADER_BINDINGS: dict[str, dict[str, Any]] = {
    "all-a1-b2": {"x-match": "all", "a": 1, "b": "2"},
    "any-a1-b2": {"x-match": "any", "a": 1, "b": "2"},
    "all-empty": {"x-match": "all"},
    "any-empty": {"x-match": "any"},
    "default-a1": {"a": 1},
    "all-a-str1": {"x-match": "all", "a": "1"},  # string "1" vs integer 1
}
HEADER_MESSAGES: dict[str, dict[str, Any] | None] = {
    "a1b2": {"a": 1, "b": "2"},
    "a1": {"a": 1},
    "b2": {"b": "2"},
    "a-str1": {"a": "1"},
    "a2": {"a": 2},
    "a1b2c3": {"a": 1, "b": "2", "c": 3},
    "empty": {},
    "none": None,
    "x-match-in-msg": {"x-match": "any", "a": 1},
}


def scenario_headers_matrix(url: str) -> Transcript:
    conn = connect(url)
    try:
        ch = conn.channel()
        x = f"mailslot-test.diff-headers.{uid()}"
        ch.exchange_declare(x, "headers", auto_delete=True)
        queues = {}
        for label, args in HEADER_BINDINGS.items():
            q = ch.queue_declare("", exclusive=True).method.queue
            ch.queue_bind(q, x, "", arguments=args)
            queues[label] = q
        ch.confirm_delivery()
        for label, headers in HEADER_MESSAGES.items():
            ch.basic_publish(x, "", label.encode(), pika.BasicProperties(headers=headers))
        return [[label, [b for b, _ in _get_all(ch, queues[label])]] for label in HEADER_BINDINGS]
    finally:
        conn.close()


def _bad_operations(ctx: dict[str, str]) -> list[tuple[str, Callable[[Any], Any]]]:
    q, x, excl, named = ctx["queue"], ctx["exchange"], ctx["exclusive"], ctx["named"]
    missing = "mailslot-test.missing." + ctx["uid"]
    return [
        ("passive-missing-queue", lambda ch: ch.queue_declare(missing, passive=True)),
        ("passive-missing-exchange", lambda ch: ch.exchange_declare(missing, passive=True)),
        ("bind-missing-queue", lambda ch: ch.queue_bind(missing, x, "k")),
        ("bind-missing-exchange", lambda ch: ch.queue_bind(q, missing, "k")),
        ("purge-missing", lambda ch: ch.queue_purge(missing)),
        ("consume-missing", lambda ch: ch.basic_consume(missing, lambda *a: None)),
        ("get-missing", lambda ch: ch.basic_get(missing)),
        ("declare-amq-prefix-exchange", lambda ch: ch.exchange_declare("amq.custom." + ctx["uid"], "direct")),
        ("declare-amq-prefix-queue", lambda ch: ch.queue_declare("amq.custom." + ctx["uid"])),
        ("delete-default-exchange", lambda ch: ch.exchange_delete("amq.direct")),
        # q is server-named ("amq.gen-..."): RabbitMQ checks the reserved prefix before equivalence -> 403.
        ("redeclare-amq-gen-queue-durable", lambda ch: ch.queue_declare(q, durable=True)),
        ("redeclare-amq-gen-queue-args", lambda ch: ch.queue_declare(q, arguments={"x-max-length": 5})),
        ("redeclare-named-queue-durable", lambda ch: ch.queue_declare(named, auto_delete=True, durable=True)),
        ("redeclare-named-queue-args", lambda ch: ch.queue_declare(named, auto_delete=True,
                                                                   arguments={"x-max-length": 5})),
        ("redeclare-named-queue-auto-delete", lambda ch: ch.queue_declare(named, auto_delete=False)),
        ("redeclare-exchange-type", lambda ch: ch.exchange_declare(x, "topic")),
        ("unknown-exchange-type", lambda ch: ch.exchange_declare("mailslot-test.t." + ctx["uid"], "nonsense")),
        ("ack-unknown-tag", lambda ch: (ch.basic_ack(42), ch.queue_declare("", exclusive=True))),
        ("reject-unknown-tag", lambda ch: (ch.basic_reject(7), ch.queue_declare("", exclusive=True))),
        ("commit-not-transactional", lambda ch: ch.tx_commit()),
        ("rollback-not-transactional", lambda ch: ch.tx_rollback()),
        ("exclusive-other-connection", lambda ch: ch.queue_declare(excl, passive=True)),
        ("publish-missing-exchange", lambda ch: (ch.basic_publish(missing, "k", b"x"),
                                                 ch.queue_declare("", exclusive=True))),
        ("confirm-after-tx", lambda ch: (ch.tx_select(), ch.confirm_delivery())),
        ("qos-prefetch-size", lambda ch: ch.basic_qos(prefetch_size=1000)),
    ]


def scenario_bad_operation_codes(url: str) -> Transcript:
    t: Transcript = []
    suffix = uid()
    owner = connect(url)
    conn = connect(url)
    try:
        och = owner.channel()
        excl = och.queue_declare("", exclusive=True).method.queue
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        x = f"mailslot-test.diff-bad.{suffix}"
        ch.exchange_declare(x, "direct", auto_delete=True)
        ch.queue_bind(q, x, "keep-alive")  # auto-delete exchange stays while bound
        named = f"mailslot-test.diff-bad-q.{suffix}"
        ch.queue_declare(named, auto_delete=True)
        ch.basic_consume(named, lambda *a: None)  # auto-delete queue lives while it has a consumer
        ctx = {"queue": q, "exchange": x, "exclusive": excl, "named": named, "uid": suffix}
        for name, op in _bad_operations(ctx):
            fresh = conn.channel()
            try:
                op(fresh)
            except pika.exceptions.ChannelClosedByBroker as e:
                t.append([name, e.reply_code, e.reply_text.split(" - ")[0]])
                if os.environ.get("MAILSLOT_DEBUG_TRANSCRIPT"):
                    print(name, e.reply_text)
            except pika.exceptions.ConnectionClosedByBroker as e:
                t.append([name, "connection", e.reply_code, e.reply_text.split(" - ")[0]])
                conn = connect(url)
            else:
                t.append([name, "ok"])
                if fresh.is_open:
                    fresh.close()
    finally:
        for c in (conn, owner):
            if c.is_open:
                c.close()
    return t


SCENARIOS: dict[str, Callable[[str], Transcript]] = {
    "nack_redelivery_order": scenario_nack_redelivery_order,
    "close_with_unacked": scenario_close_with_unacked,
    "topic_matrix": scenario_topic_matrix,
    "headers_matrix": scenario_headers_matrix,
    "bad_operation_codes": scenario_bad_operation_codes,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_transcript_matches_golden(scenario: str, broker_name: str, broker_url: str) -> None:
    assert_matches_golden(SCENARIOS[scenario], f"{scenario}", broker_name, broker_url)


@pytest.mark.interop
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_transcripts_equal_differential(scenario: str, broker_pair: dict[str, str]) -> None:
    assert_same_on_both(SCENARIOS[scenario], broker_pair)
