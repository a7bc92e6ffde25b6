"""Routing per exchange type, as the AMQP 0-9-1 spec and RabbitMQ define it."""

from __future__ import annotations

import pytest

from mailslot.core.errors import AccessRefused, NotFound, PreconditionFailed
from mailslot.core.exchanges import make_exchange
from mailslot.core.message import Message

TOPIC_CASES = [
    ("a.b.c", "a.b.c", True),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("#", "", True),
    ("#", "x.y", True),
    ("#.c", "a.b.c", True),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.b.b.c", True),
    ("*", "a.b", False),
    ("*", "", False),
    ("a.*.c", "a..c", True),
    ("*.*", "a.b", True),
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
    ("#.#", "a", True),
    ("", "", True),
    ("", "a", False),
]


@pytest.mark.parametrize(("pattern", "key", "matches"), TOPIC_CASES)
def test_topic_matching(pattern, key, matches):
    exchange = make_exchange("topic", "t")
    exchange.bind(("queue", "q"), pattern, {}, "")
    message = Message("t", key, b"", b"", False)
    assert (("queue", "q") in set(exchange.route(key, message))) is matches


def test_topic_unbind_prunes_and_clears_cache():
    exchange = make_exchange("topic", "t")
    exchange.bind(("queue", "q"), "a.*", {}, "")
    message = Message("t", "a.b", b"", b"", False)
    assert list(exchange.route("a.b", message)) == [("queue", "q")]
    exchange.unbind(("queue", "q"), "a.*", "")
    assert list(exchange.route("a.b", message)) == []


@pytest.mark.parametrize(
    ("arguments", "headers", "matches"),
    [
        ({"x-match": "all", "a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}, True),
        ({"x-match": "all", "a": 1, "b": 2}, {"a": 1}, False),
        ({"x-match": "any", "a": 1, "b": 2}, {"b": 2}, True),
        ({"x-match": "any", "a": 1}, {"a": 2}, False),
        ({"a": 1}, {"a": 1}, True),  # x-match defaults to all
        ({"x-match": "any", "x-foo": 1}, {"x-foo": 1}, False),  # x- args are ignored without -with-x
        ({"x-match": "any-with-x", "x-foo": 1}, {"x-foo": 1}, True),
    ],
)
def test_headers_matching(arguments, headers, matches):
    exchange = make_exchange("headers", "h")
    exchange.bind(("queue", "q"), "", arguments, "k")
    message = Message("h", "", b"", b"", False, read_headers=lambda raw: headers)
    assert (("queue", "q") in set(exchange.route("", message))) is matches


def test_exchange_to_exchange_routing_and_cycles(harness):
    vhost = harness.vhost
    s, _ = harness.open()
    for name, type_ in (("e1", "fanout"), ("e2", "direct"), ("e3", "fanout")):
        vhost.declare_exchange(name, type_, passive=False, durable=True, auto_delete=False, internal=False, arguments={})
    harness.declare("q1")
    harness.declare("q2")
    vhost.bind("e1", ("exchange", "e2"), "", {}, s.owner)
    vhost.bind("e2", ("queue", "q1"), "k", {}, s.owner)
    vhost.bind("e2", ("exchange", "e3"), "k", {}, s.owner)
    vhost.bind("e3", ("exchange", "e1"), "", {}, s.owner)  # a cycle
    vhost.bind("e3", ("queue", "q2"), "", {}, s.owner)
    queues = vhost.route(vhost.exchanges["e1"], "k", Message("e1", "k", b"", b"", False))
    assert sorted(q.name for q in queues) == ["q1", "q2"]


def test_declaration_rules(harness):
    vhost = harness.vhost
    s, _ = harness.open()
    with pytest.raises(AccessRefused, match="reserved prefix"):
        vhost.declare_exchange("amq.custom", "direct", passive=False, durable=True, auto_delete=False, internal=False, arguments={})
    with pytest.raises(NotFound, match="no exchange 'nope' in vhost '/'"):
        vhost.declare_exchange("nope", "direct", passive=True, durable=True, auto_delete=False, internal=False, arguments={})
    harness.declare("q", durable=True)
    with pytest.raises(PreconditionFailed, match="inequivalent arg 'durable' for queue 'q'"):
        harness.declare("q", durable=False)
    with pytest.raises(AccessRefused, match="default exchange"):
        vhost.bind("", ("queue", "q"), "q", {}, s.owner)
    assert harness.declare("").startswith("amq.gen-")
