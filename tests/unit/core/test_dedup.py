"""Deduplicated publishing in the core (core/dedup.py): the key index, queue mode, windows, the
exchange type, durability of the window through a restart, argument validation.

The expected behaviour is the RabbitMQ message-deduplication plugin's README (the plugin is not
installed on the reference RabbitMQ here, so these are not differential tests) plus mailslot's
documented extensions (docs/deduplication.md).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from mailslot.core.dedup import KeyIndex, exchange_store_key, key_bytes, queue_store_key
from mailslot.core.errors import PreconditionFailed
from mailslot.core.session import REJECTED, ROUTED, UNROUTED
from mailslot.testing import CoreHarness
from mailslot.testing.codec import JSON_CODEC


def props(key: Any = None, *, message_id: str | None = None, ttl: Any = None, persistent: bool = True) -> bytes:
    headers: dict[str, Any] = {}
    if key is not None:
        headers["x-deduplication-header"] = key
    if ttl is not None:
        headers["x-cache-ttl"] = ttl
    return JSON_CODEC.block(headers=headers, message_id=message_id)


def publish(world: CoreHarness, body: bytes, raw: bytes, routing_key: str = "q", exchange: str = "",
            persistent: bool = True) -> int:
    """Publish through the default session and end the turn (confirms wait for the commit)."""
    return world.publish(routing_key, body, raw, exchange=exchange, persistent=persistent, flush=True)


def dedup_exchange(world: CoreHarness, arguments: dict[str, Any], name: str = "dx") -> None:
    world.declare_exchange(name, "x-message-deduplication", arguments)


@pytest.fixture
def world() -> CoreHarness:
    return CoreHarness()


# ---- the key index ------------------------------------------------------------------------------


def test_key_index_matches_a_dict_model_through_adds_removes_and_compactions():
    rng = random.Random(7)
    index = KeyIndex()
    model: dict[int, tuple[int, int]] = {}
    order: list[int] = []  # insertion order of live hashes
    for step in range(60_000):
        op = rng.random()
        if op < 0.6 or not model:
            h = rng.getrandbits(64) - (1 << 63) if rng.random() < 0.9 else rng.randrange(-50, 50)
            if h in model:
                continue
            assert index.find(h) == -1
            index.add(h, step, step * 2)
            model[h] = (step, step * 2)
            order.append(h)
        elif op < 0.8:  # remove the oldest
            pos = index.oldest()
            h = order.pop(0)
            assert index.seq(pos) == model.pop(h)[0]
            index.remove(pos)
        else:  # remove one in the middle
            h = order.pop(rng.randrange(len(order)))
            pos = index.find(h)
            assert pos >= 0 and index.seq(pos) == model.pop(h)[0]
            index.remove(pos)
        assert len(index) == len(model)
    for h, (seq, expiry) in model.items():
        pos = index.find(h)
        assert pos >= 0 and index.seq(pos) == seq and index.expiry(pos) == expiry
    assert order and index.seq(index.oldest()) == model[order[0]][0]


def test_key_index_memory_stays_small_and_is_given_back():
    index = KeyIndex()
    n = 200_000
    rng = random.Random(1)
    for i in range(n):
        index.add(rng.getrandbits(63), i, 0)
    per_key = index.nbytes() / n
    assert per_key <= 64, per_key
    while len(index):
        index.remove(index.oldest())
    assert index.nbytes() < 1024  # emptied: the arrays are released


def test_key_bytes_tell_types_apart_and_ignore_what_names_no_key():
    assert key_bytes("1") != key_bytes(1)
    assert key_bytes("a") == key_bytes(b"a")
    assert key_bytes(None) is None and key_bytes({"a": 1}) is None and key_bytes([1]) is None
    assert key_bytes("\udcff") is not None  # undecodable bytes kept as surrogates do not raise


# ---- queue mode: deduplicated against messages in the queue (the plugin's queue argument) --------


def test_queue_mode_drops_a_duplicate_while_the_first_is_in_the_queue(world):
    world.declare("q", {"x-message-deduplication": True})
    assert publish(world, b"a1", props("a")) == ROUTED
    assert publish(world, b"a2", props("a")) == ROUTED  # confirmed, not enqueued
    assert publish(world, b"b1", props("b")) == ROUTED
    assert publish(world, b"n1", props()) == ROUTED  # no key: never deduplicated
    assert publish(world, b"n2", props()) == ROUTED
    assert world.drain("q") == [b"a1", b"b1", b"n1", b"n2"]
    # Consumed: the key is free again (the plugin forgets it on ack).
    publish(world, b"a3", props("a"))
    assert world.drain("q") == [b"a3"]


def test_queue_mode_keeps_the_key_over_a_requeue_and_forgets_it_on_ack(world):
    world.declare("q", {"x-message-deduplication": True})
    publish(world, b"a1", props("a"))
    tag, _entry, _left = world.session.get("q", no_ack=False)
    publish(world, b"a2", props("a"))  # delivered but unacked: still in the queue
    world.session.nack(tag, False, True)  # requeued
    publish(world, b"a3", props("a"))
    assert world.count("q") == 1
    tag, entry, _ = world.session.get("q", no_ack=False)
    assert entry.message.body == b"a1"
    world.session.ack(tag, False)
    world.broker.flush()
    publish(world, b"a4", props("a"))
    assert world.drain("q") == [b"a4"]


def test_queue_mode_forgets_keys_of_transient_messages_a_no_ack_consumer_took(world):
    world.declare("q", {"x-message-deduplication": True})
    world.session.consume("q", "c", no_ack=True, exclusive=False, arguments={})
    publish(world, b"a1", props("a", persistent=False), persistent=False)
    assert world.sink.bodies() == [b"a1"]
    publish(world, b"a2", props("a", persistent=False), persistent=False)
    assert world.sink.bodies() == [b"a1", b"a2"]


def test_queue_mode_forgets_keys_of_messages_dropped_by_max_length_and_purge(world):
    world.declare("q", {"x-message-deduplication": True, "x-max-length": 1})
    publish(world, b"a1", props("a"))
    publish(world, b"b1", props("b"))  # drop-head: a1 leaves
    publish(world, b"a2", props("a"))  # so a is free again; b1 leaves
    assert world.drain("q") == [b"a2"]
    publish(world, b"c1", props("c"))
    world.vhost.queues["q"].purge()
    publish(world, b"c2", props("c"))
    assert world.drain("q") == [b"c2"]


def test_duplicate_into_a_full_reject_publish_queue_is_confirmed_and_a_refused_key_is_not_kept(world):
    world.declare("q", {"x-message-deduplication": True, "x-max-length": 1, "x-overflow": "reject-publish"})
    assert publish(world, b"a1", props("a")) == ROUTED
    assert publish(world, b"a2", props("a")) == ROUTED  # a duplicate, not a rejection
    assert publish(world, b"b1", props("b")) == REJECTED
    assert world.drain("q") == [b"a1"]
    assert publish(world, b"b2", props("b")) == ROUTED  # the refused b was not remembered
    assert world.drain("q") == [b"b2"]


# ---- queue windows (mailslot extension): keys outlive their messages ------------------------------


def test_queue_window_by_size_remembers_consumed_keys_and_forgets_the_oldest(world):
    world.declare("q", {"x-message-deduplication": True, "x-cache-size": 2})
    for key in ("a", "b"):
        publish(world, key.encode(), props(key))
    assert world.drain("q") == [b"a", b"b"]
    publish(world, b"a-again", props("a"))  # consumed, but still in the window
    assert world.drain("q") == []
    publish(world, b"c", props("c"))  # the window holds 2: "a" is forgotten
    publish(world, b"a-third", props("a"))
    publish(world, b"c-again", props("c"))
    assert world.drain("q") == [b"c", b"a-third"]


def test_queue_window_by_ttl_and_the_per_message_ttl_header(world):
    world.declare("q", {"x-message-deduplication": True, "x-cache-ttl": 1000})
    publish(world, b"a1", props("a"))
    publish(world, b"b1", props("b", ttl=5000))  # this key is remembered for 5 s
    world.advance(0.9)
    publish(world, b"a2", props("a"))
    world.advance(0.2)  # 1.1 s: "a" expired
    publish(world, b"a3", props("a"))
    publish(world, b"b2", props("b"))
    assert world.drain("q") == [b"a1", b"b1", b"a3"]
    world.advance(5)
    publish(world, b"b3", props("b"))
    assert world.drain("q") == [b"b3"]


def test_expired_keys_leave_the_log_on_the_tick(world):
    world.declare("q", {"x-message-deduplication": True, "x-cache-ttl": 1000})
    for i in range(10):
        publish(world, b"x", props(f"k{i}"))
    key = queue_store_key("/", "q")
    assert len(world.log.read(key, 0, 100)) == 10
    world.advance(2)
    assert world.log.read(key, 0, 100) == []


def test_message_id_mode_takes_the_key_from_the_message_id_property(world):
    world.declare("q", {"x-message-deduplication": True, "x-deduplication-key": "message_id"})
    publish(world, b"m1", props(message_id="id-1"))
    publish(world, b"m2", props(message_id="id-1"))
    publish(world, b"h1", props("id-2"))  # the header is not the key in this mode
    publish(world, b"h2", props("id-2"))
    assert world.drain("q") == [b"m1", b"h1", b"h2"]


def test_transaction_publishes_are_deduplicated_at_commit(world):
    world.declare("q", {"x-message-deduplication": True})
    publish(world, b"a1", props("a"))
    world.session.tx_select()
    publish(world, b"a2", props("a"))
    publish(world, b"b1", props("b"))
    world.session.tx_commit()
    world.broker.flush()
    assert world.drain("q") == [b"a1", b"b1"]


# ---- the exchange type ------------------------------------------------------------------------------


def test_exchange_routes_as_fanout_and_drops_duplicates_without_a_return(world):
    dedup_exchange(world, {"x-cache-size": 100})
    for name in ("q1", "q2"):
        world.declare(name)
        world.vhost.bind("dx", ("queue", name), "ignored-key", {}, None)
    assert publish(world, b"a1", props("a"), routing_key="anything", exchange="dx") == ROUTED
    assert publish(world, b"a2", props("a"), routing_key="other", exchange="dx") == ROUTED  # no basic.return
    assert publish(world, b"n", props(), routing_key="", exchange="dx") == ROUTED
    assert world.drain("q1") == [b"a1", b"n"] and world.drain("q2") == [b"a1", b"n"]
    publish(world, b"a3", props("a"), exchange="dx")  # exchange windows outlive the messages
    assert world.count("q1") == 0


def test_exchange_without_bindings_still_reports_unrouted_for_new_keys(world):
    dedup_exchange(world, {"x-cache-size": 10})
    assert publish(world, b"a", props("a"), exchange="dx") == UNROUTED


def test_exchange_window_size_and_ttl(world):
    dedup_exchange(world, {"x-cache-size": 2, "x-cache-ttl": 1000})
    world.declare("q")
    world.vhost.bind("dx", ("queue", "q"), "", {}, None)
    for key in ("a", "b", "c"):  # "a" falls out of the 2-key window
        publish(world, key.encode(), props(key), exchange="dx")
    publish(world, b"a2", props("a"), exchange="dx")
    publish(world, b"c2", props("c"), exchange="dx")
    world.advance(1.5)
    publish(world, b"c3", props("c"), exchange="dx")
    assert world.drain("q") == [b"a", b"b", b"c", b"a2", b"c3"]


def test_exchange_key_is_forgotten_when_a_queue_refuses_the_message(world):
    dedup_exchange(world, {"x-cache-size": 10})
    world.declare("q", {"x-max-length": 0, "x-overflow": "reject-publish"})
    world.vhost.bind("dx", ("queue", "q"), "", {}, None)
    assert publish(world, b"a1", props("a"), exchange="dx") == REJECTED
    assert publish(world, b"a2", props("a"), exchange="dx") == REJECTED  # retried: not taken for a duplicate


def test_deleting_the_exchange_drops_its_window_rows(world):
    dedup_exchange(world, {"x-cache-size": 10})
    publish(world, b"a", props("a"), exchange="dx")
    key = exchange_store_key("/", "dx")
    assert len(world.log.read(key, 0, 10)) == 1
    world.vhost.delete_exchange("dx", if_unused=False)
    world.broker.flush()
    assert world.log.read(key, 0, 10) == []
    dedup_exchange(world, {"x-cache-size": 10})
    world.declare("q")
    world.vhost.bind("dx", ("queue", "q"), "", {}, None)
    publish(world, b"a-new", props("a"), exchange="dx")
    assert world.drain("q") == [b"a-new"]


# ---- durability: the window is in the message log ---------------------------------------------------


def test_key_row_is_staged_in_the_batch_of_its_message(world):
    world.declare("q", {"x-message-deduplication": True})
    world.publish("q", b"a1", props("a"))
    key = queue_store_key("/", "q")
    assert world.log.read(key, 0, 10) == [] and world.log.read("/\x00q", 0, 10) == []  # nothing committed yet
    world.broker.flush()  # one commit: both rows or neither
    assert [row.body for row in world.log.read(key, 0, 10)] == [key_bytes("a")]
    assert [row.body for row in world.log.read("/\x00q", 0, 10)] == [b"a1"]


def test_restart_keeps_queue_mode_keys_of_persistent_messages_only(world):
    world.declare("q", {"x-message-deduplication": True})
    publish(world, b"a1", props("a"))
    publish(world, b"t1", props("t", persistent=False), persistent=False)
    world.restart()
    publish(world, b"a2", props("a"))
    publish(world, b"t2", props("t", persistent=False), persistent=False)  # t1 died with the restart
    assert world.drain("q") == [b"a1", b"t2"]


def test_restart_keeps_a_window_and_its_deadlines(world):
    world.declare("q", {"x-message-deduplication": True, "x-cache-ttl": 10_000, "x-cache-size": 3})
    dedup_exchange(world, {"x-cache-size": 5})
    world.declare("xq")
    world.vhost.bind("dx", ("queue", "xq"), "", {}, None)
    for key in ("a", "b", "c", "d"):  # "a" falls out of the 3-key window
        publish(world, key.encode(), props(key))
    publish(world, b"e", props("e"), exchange="dx")
    assert len(world.drain("q")) == 4
    world.restart()
    publish(world, b"b2", props("b"))
    publish(world, b"a2", props("a"))
    publish(world, b"e2", props("e"), exchange="dx")
    assert world.drain("q") == [b"a2"]
    assert world.drain("xq") == [b"e"]
    world.clock.advance(11)  # down, then up after the window passed
    world.restart()
    publish(world, b"b3", props("b"))
    assert world.drain("q") == [b"b3"]
    assert world.log.read(queue_store_key("/", "q"), 0, 100)[0].body == key_bytes("b")  # expired rows removed


def test_non_durable_queue_writes_no_rows(world):
    world.declare("tq", {"x-message-deduplication": True, "x-cache-size": 10}, durable=False)
    publish(world, b"a", props("a"), routing_key="tq")
    publish(world, b"a", props("a"), routing_key="tq")
    assert world.drain("tq") == [b"a"]
    assert world.log.read(queue_store_key("/", "tq"), 0, 10) == []


def test_queues_without_deduplication_are_untouched(world):
    world.declare("q")
    publish(world, b"a1", props("a"))
    publish(world, b"a2", props("a"))
    assert world.drain("q") == [b"a1", b"a2"]
    assert world.vhost.owners == {}


# ---- arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"x-message-deduplication": "yes"}, "x-message-deduplication"),
        ({"x-message-deduplication": True, "x-cache-size": 0}, "x-cache-size"),
        ({"x-message-deduplication": True, "x-cache-ttl": -5}, "x-cache-ttl"),
        ({"x-message-deduplication": True, "x-cache-ttl": "soon"}, "x-cache-ttl"),
        ({"x-message-deduplication": True, "x-deduplication-key": "body"}, "x-deduplication-key"),
        ({"x-cache-size": 10}, "x-cache-size"),  # a window without deduplication turned on
    ],
)
def test_bad_queue_arguments_get_406_naming_the_argument(world, arguments, named):
    with pytest.raises(PreconditionFailed) as raised:
        world.declare("q", arguments)
    assert f"invalid arg '{named}' for queue 'q' in vhost '/'" in raised.value.text


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({}, "x-cache-size"),  # required, as in the plugin
        ({"x-cache-size": 0}, "x-cache-size"),
        ({"x-cache-size": "many"}, "x-cache-size"),
        ({"x-cache-size": 5, "x-cache-ttl": 0}, "x-cache-ttl"),
        ({"x-cache-size": 5, "x-cache-persistence": "tape"}, "x-cache-persistence"),
    ],
)
def test_bad_exchange_arguments_get_406_naming_the_argument(world, arguments, named):
    with pytest.raises(PreconditionFailed) as raised:
        dedup_exchange(world, arguments)
    assert f"'{named}'" in raised.value.text
    assert "dx" not in world.vhost.exchanges


def test_plugin_style_string_numbers_are_accepted(world):
    dedup_exchange(world, {"x-cache-size": "2", "x-cache-ttl": "1000", "x-cache-persistence": "disk"})
    world.declare("q")
    world.vhost.bind("dx", ("queue", "q"), "", {}, None)
    publish(world, b"a", props("a"), exchange="dx")
    publish(world, b"a", props("a"), exchange="dx")
    assert world.drain("q") == [b"a"]


def test_a_window_bounded_by_size_keeps_memory_bounded(world):
    world.declare("q", {"x-message-deduplication": True, "x-cache-size": 1000})
    window = world.vhost.owners[queue_store_key("/", "q")]
    for i in range(20_000):
        world.publish("q", b"", props(f"k{i}"))
        if i % 1000 == 999:
            world.broker.flush()
            world.drain("q")
    world.broker.flush()
    assert len(window.index) == 1000
    assert window.index.nbytes() < 1000 * 200
    assert len(world.log.read(queue_store_key("/", "q"), 0, 5000)) == 1000  # evicted rows left the log


def test_priority_queues_deduplicate_too(world):
    world.declare("q", {"x-message-deduplication": True, "x-max-priority": 5})
    publish(world, b"a1", props("a"))
    publish(world, b"a2", props("a"))
    assert world.drain("q") == [b"a1"]
    publish(world, b"a3", props("a"))  # consumed: free again
    assert world.drain("q") == [b"a3"]
