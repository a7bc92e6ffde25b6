"""The typed store-key namespace (core/storekeys.py): one encoder and decoder, the legacy on-disk form
kept, and names with NUL that can no longer pass for a lane's or a feature's key."""

from __future__ import annotations

import pytest

from mailslot.core import storekeys
from mailslot.core.storekeys import StoreKey, decode, encode
from mailslot.testing import CoreHarness
from mailslot.testing.codec import JSON_CODEC

KEYS = [
    StoreKey(storekeys.QUEUE, "/", "orders"),
    StoreKey(storekeys.LANE, "/", "orders", "7"),
    StoreKey(storekeys.DEDUP_QUEUE, "/", "orders"),
    StoreKey(storekeys.DEDUP_EXCHANGE, "prod", "dx"),
    StoreKey(storekeys.DELAYED, "prod", "later"),
    StoreKey(storekeys.QUEUE, "/", "a\x00p1"),
    StoreKey(storekeys.QUEUE, "/", "\x00dedup-queue\x00orders"),
    StoreKey(storekeys.QUEUE, "v\x00h", "q"),
    StoreKey(storekeys.QUEUE, "", "q"),
    StoreKey(storekeys.LANE, "/", "a\x00b", "3"),
    StoreKey(storekeys.QUEUE, "/", ""),
    StoreKey(storekeys.QUEUE, "/", 'quote" and [json]'),
]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_every_key_reads_back_as_itself(key: StoreKey) -> None:
    assert decode(encode(key)) == key


def test_distinct_keys_encode_to_distinct_strings() -> None:
    assert len({encode(key) for key in KEYS}) == len(KEYS)


def test_legacy_on_disk_form_is_kept_for_names_without_nul() -> None:
    """Data directories written before the typed namespace hold these strings (core/queue.py, priority.py,
    dedup.py, delayed.py built them by hand); they must read back as the same keys."""
    assert encode(StoreKey(storekeys.QUEUE, "/", "q")) == "/\x00q"
    assert encode(StoreKey(storekeys.LANE, "/", "q", "2")) == "/\x00q\x00p2"
    assert encode(StoreKey(storekeys.DEDUP_QUEUE, "/", "q")) == "/\x00\x00dedup-queue\x00q"
    assert encode(StoreKey(storekeys.DEDUP_EXCHANGE, "/", "x")) == "/\x00\x00dedup-exchange\x00x"
    assert encode(StoreKey(storekeys.DELAYED, "/", "x")) == "/\x00\x00delayed\x00x"


def test_a_name_with_nul_cannot_collide_with_an_internal_key() -> None:
    lane = storekeys.lane_key("/", "a", 1)
    window = storekeys.feature_key(storekeys.DEDUP_QUEUE, "/", "orders")
    assert storekeys.queue_key("/", "a\x00p1") != lane
    assert storekeys.queue_key("/", "\x00dedup-queue\x00orders") != window
    assert decode(storekeys.queue_key("/", "a\x00p1")).kind == storekeys.QUEUE


def test_unknown_shapes_decode_as_unknown() -> None:
    for text in ("no-separator", "/\x00\x00mystery\x00x", "/\x00q\x00zz", "\x00not json", "\x00[1,2,3,4]"):
        assert decode(text).kind == storekeys.UNKNOWN


def test_queue_named_like_a_lane_keeps_its_messages_apart_through_a_restart() -> None:
    world = CoreHarness()
    world.declare("a", {"x-max-priority": 3})
    world.declare("a\x00p1")
    world.publish("a", b"prio", JSON_CODEC.block(priority=1))
    world.publish("a\x00p1", b"plain")
    world.flush()
    world.restart()
    assert world.drain("a") == [b"prio"]
    assert world.drain("a\x00p1") == [b"plain"]


def test_queue_named_like_a_dedup_window_is_not_taken_for_one_at_recovery() -> None:
    world = CoreHarness()
    keyed = JSON_CODEC.block(headers={"x-deduplication-header": "k"})
    world.declare("orders", {"x-message-deduplication": True})
    world.declare("\x00dedup-queue\x00orders")
    world.publish("orders", b"first", keyed)
    world.publish("\x00dedup-queue\x00orders", b"m")
    world.flush()
    world.restart()
    world.publish("orders", b"duplicate", keyed, flush=True)
    assert world.drain("orders") == [b"first"]
    assert world.drain("\x00dedup-queue\x00orders") == [b"m"]
