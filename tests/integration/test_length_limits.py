"""Queue length limits, overflow modes and dead-lettering, identical on mailslot and RabbitMQ 3.10.

Each test runs against both brokers (``broker_url``) and asserts what RabbitMQ does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from conftest import Cleanup
from helpers import drain, get_when_there, tmp_queue, wait_for

pytestmark = pytest.mark.timeout(20)


def get(ch: BlockingChannel, name: str) -> tuple[Any, bytes]:
    """The next message; polls, since RabbitMQ dead-letters asynchronously."""
    _method, props, body = get_when_there(ch, name)
    return props, body


def dead_letter_setup(ch: BlockingChannel, uname: Callable[[str], str], cleanup: Cleanup, **arguments: Any):
    """A fanout dead-letter exchange bound to a queue that collects what the source queue dead-letters."""
    dlx = cleanup.exchange(uname("dlx"))
    ch.exchange_declare(dlx, "fanout", auto_delete=False)
    dlq = tmp_queue(ch)
    ch.queue_bind(dlq, dlx)
    source = tmp_queue(ch, dead_letter_exchange=dlx, **arguments)
    return dlx, dlq, source


def test_drop_head_keeps_the_newest(ch: BlockingChannel) -> None:
    q = tmp_queue(ch, max_length=3)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", q, b"%d" % i)
    assert ch.queue_declare(q, passive=True).method.message_count == 3
    assert drain(ch, q) == [b"2", b"3", b"4"]


def test_drop_head_by_bytes(ch: BlockingChannel) -> None:
    q = tmp_queue(ch, max_length_bytes=10)
    ch.confirm_delivery()
    for i in range(4):
        ch.basic_publish("", q, b"%d" % i * 4)  # 4 bytes each: only two fit in 10
    assert drain(ch, q) == [b"2222", b"3333"]


def test_drop_head_dead_letters_with_x_death(ch: BlockingChannel, uname, cleanup) -> None:
    dlx, dlq, q = dead_letter_setup(ch, uname, cleanup, max_length=1)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"first", pika.BasicProperties(expiration="60000"))
    ch.basic_publish("", q, b"second")
    assert drain(ch, q) == [b"second"]
    props, body = get(ch, dlq)
    assert body == b"first"
    assert props.expiration is None  # removed on dead-lettering, kept in x-death
    death = props.headers["x-death"][0]
    assert (death["reason"], death["queue"], death["count"], death["exchange"], death["routing-keys"]) == (
        "maxlen", q, 1, "", [q])
    assert death["original-expiration"] == "60000"
    assert props.headers["x-first-death-reason"] == "maxlen"
    assert props.headers["x-first-death-queue"] == q
    assert props.headers["x-first-death-exchange"] == ""


def test_reject_publish_nacks_the_newest(ch: BlockingChannel) -> None:
    q = tmp_queue(ch, max_length=2, overflow="reject-publish")
    ch.confirm_delivery()
    ch.basic_publish("", q, b"a")
    ch.basic_publish("", q, b"b")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"c")
    assert drain(ch, q) == [b"a", b"b"]
    ch.basic_publish("", q, b"d")  # room again: accepted
    assert drain(ch, q) == [b"d"]


def test_reject_publish_without_confirms_drops(ch: BlockingChannel) -> None:
    q = tmp_queue(ch, max_length=1, overflow="reject-publish")
    ch.basic_publish("", q, b"a")
    ch.basic_publish("", q, b"b")
    # Unconfirmed publishes are asynchronous on RabbitMQ: wait until it has taken the first one.
    assert wait_for(lambda: ch.queue_declare(q, passive=True).method.message_count == 1, timeout=5)
    assert drain(ch, q) == [b"a"]


def test_reject_publish_dlx_nacks_and_dead_letters(ch: BlockingChannel, uname, cleanup) -> None:
    dlx, dlq, q = dead_letter_setup(ch, uname, cleanup, max_length=1, overflow="reject-publish-dlx")
    ch.confirm_delivery()
    ch.basic_publish("", q, b"kept")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"refused")
    assert drain(ch, q) == [b"kept"]
    props, body = get(ch, dlq)
    assert body == b"refused"
    assert props.headers["x-death"][0]["reason"] == "maxlen"


def test_rejected_messages_are_dead_lettered_with_routing_key(ch: BlockingChannel, uname, cleanup) -> None:
    dlx = cleanup.exchange(uname("dlx"))
    ch.exchange_declare(dlx, "direct")
    dlq = tmp_queue(ch)
    ch.queue_bind(dlq, dlx, "dead")
    q = tmp_queue(ch, dead_letter_exchange=dlx, dead_letter_routing_key="dead")
    ch.confirm_delivery()
    ch.basic_publish("", q, b"bad", pika.BasicProperties(headers={"k": "v"}))
    method, _props, _body = ch.basic_get(q)
    ch.basic_reject(method.delivery_tag, requeue=False)
    props, body = get(ch, dlq)
    assert body == b"bad"
    assert props.headers["k"] == "v"
    death = props.headers["x-death"][0]
    assert (death["reason"], death["queue"], death["routing-keys"], death["count"]) == ("rejected", q, [q], 1)


def test_x_death_counts_repeated_deaths(ch: BlockingChannel, uname, cleanup) -> None:
    # reject from q -> dlx -> back to q: a cycle through a rejection is allowed; count goes up.
    dlx = cleanup.exchange(uname("dlx"))
    ch.exchange_declare(dlx, "fanout")
    q = tmp_queue(ch, dead_letter_exchange=dlx)
    ch.queue_bind(q, dlx)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"again")
    for expected in (1, 2):
        method, props, _ = ch.basic_get(q)
        ch.basic_nack(method.delivery_tag, requeue=False)
        props, _ = get(ch, q)
        assert props.headers["x-death"][0]["count"] == expected
        assert len(props.headers["x-death"]) == 1
        ch.basic_publish("", q, b"again", props)  # put it back for the next round


def test_nack_without_dead_letter_exchange_drops(ch: BlockingChannel) -> None:
    q = tmp_queue(ch)
    ch.basic_publish("", q, b"x")
    method, _p, _b = ch.basic_get(q)
    ch.basic_nack(method.delivery_tag, requeue=False)
    assert ch.queue_declare(q, passive=True).method.message_count == 0


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"x-max-length": -1}, "invalid arg 'x-max-length' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
        ({"x-max-length": "ten"}, "invalid arg 'x-max-length' for queue '{q}' in vhost '/': "
                                  '"expected integer, got longstr"'),
        ({"x-overflow": "sometimes"}, "invalid arg 'x-overflow' for queue '{q}' in vhost '/': invalid_overflow"),
    ],
)
def test_invalid_arguments_are_406(conn: BlockingConnection, uname, arguments, problem) -> None:
    q = uname("bad")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        conn.channel().queue_declare(q, arguments=arguments)
    assert info.value.reply_code == 406
    assert info.value.reply_text == "PRECONDITION_FAILED - " + problem.format(q=q)
