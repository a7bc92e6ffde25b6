"""One contract suite for every storage backend (``backend`` fixture: memory, sqlite).

What a store promises (storage/api.py): staged writes are invisible until commit, reads come back in
seq order per queue, recover() drops transient messages and reports what is left, metadata round-trips
every field-table value type.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from mailslot.storage.api import (
    BindingDefinition,
    ExchangeDefinition,
    QueueDefinition,
    QueueRecovery,
    StoredMessage,
)

from .conftest import Backend


def msg(seq: int, queue: str = "q", *, persistent: bool = True, body: bytes | None = None) -> StoredMessage:
    return StoredMessage(
        queue=queue,
        seq=seq,
        exchange="amq.direct",
        routing_key=f"rk.{seq}",
        properties=b"\x90\x00\x0atext/plain\x02",
        body=body if body is not None else f"body {seq}".encode(),
        persistent=persistent,
    )


def seqs(b: Backend, queue: str = "q", after: int = 0, limit: int = 1_000_000) -> list[int]:
    return [m.seq for m in b.log.read(queue, after, limit)]


# -- message log: staging and commit ----------------------------------------------------------------


def test_staged_append_is_invisible_until_commit(backend: Backend) -> None:
    assert not backend.log.has_staged()
    backend.log.stage_append([msg(1), msg(2)])
    assert backend.log.has_staged()
    assert backend.log.read("q", 0, 10) == []
    backend.log.commit()
    assert not backend.log.has_staged()
    assert seqs(backend) == [1, 2]


def test_read_returns_every_field(backend: Backend) -> None:
    m = StoredMessage("vhost/q", 7, "ex-é", "a.b.#", b"\x00\x01props", b"\x00" * 3 + b"\xff", True)
    empty = StoredMessage("vhost/q", 8, "", "", b"", b"", False, redelivered=True)
    backend.log.stage_append([m, empty])
    backend.log.commit()
    assert backend.log.read("vhost/q", 0, 10) == [m, empty]
    backend.reopen()
    assert backend.log.read("vhost/q", 0, 10) == [m, empty]


def test_large_body_round_trips(backend: Backend) -> None:
    body = bytes(range(256)) * 4096 * 4  # 4 MiB
    backend.log.stage_append([msg(1, body=body), msg(2)])
    backend.log.commit()
    assert [m.body for m in backend.log.read("q", 0, 10)] == [body, b"body 2"]


def test_staged_removal_and_flag_are_invisible_until_commit(backend: Backend) -> None:
    backend.log.stage_append([msg(1), msg(2)])
    backend.log.commit()
    backend.log.stage_remove("q", [1])
    backend.log.stage_mark_redelivered("q", [2])
    backend.log.stage_purge("other")
    assert [(m.seq, m.redelivered) for m in backend.log.read("q", 0, 10)] == [(1, False), (2, False)]
    backend.log.commit()
    assert [(m.seq, m.redelivered) for m in backend.log.read("q", 0, 10)] == [(2, True)]


def test_commit_with_nothing_staged_is_harmless(backend: Backend) -> None:
    backend.log.commit()
    backend.log.commit()
    assert backend.log.read("q", 0, 10) == []


def test_read_is_in_seq_order_across_batches(backend: Backend) -> None:
    backend.log.stage_append([msg(s) for s in (1, 2, 3)])
    backend.log.commit()
    backend.log.stage_append([msg(s) for s in (10, 5, 7)])  # out of order within a batch
    backend.log.commit()
    backend.log.stage_append([msg(4)])  # below the current maximum (a store must not care)
    backend.log.commit()
    assert seqs(backend) == [1, 2, 3, 4, 5, 7, 10]


def test_after_seq_and_limit_page_through_a_queue(backend: Backend) -> None:
    backend.log.stage_append([msg(s) for s in range(1, 101)])
    backend.log.commit()
    backend.log.stage_remove("q", list(range(20, 30)))
    backend.log.commit()
    pages, after = [], 0
    while True:
        page = seqs(backend, after=after, limit=7)
        if not page:
            break
        assert len(page) <= 7
        pages.append(page)
        after = page[-1]
    flat = [s for page in pages for s in page]
    assert flat == [s for s in range(1, 101) if not 20 <= s < 30]
    assert all(len(p) == 7 for p in pages[:-1])
    assert seqs(backend, after=15, limit=3) == [16, 17, 18]
    assert seqs(backend, after=19, limit=3) == [30, 31, 32]  # skips the removed range
    assert seqs(backend, after=100, limit=3) == []
    assert seqs(backend, after=-5, limit=1) == [1]
    assert seqs(backend, after=0, limit=0) == []


def test_queues_are_independent(backend: Backend) -> None:
    backend.log.stage_append([msg(1, "a"), msg(1, "ab"), msg(2, "a"), msg(1, "b"), msg(2, "ab")])
    backend.log.commit()
    assert seqs(backend, "a") == [1, 2]
    assert seqs(backend, "ab") == [1, 2]
    assert seqs(backend, "b") == [1]
    assert seqs(backend, "nope") == []
    backend.log.stage_purge("a")
    backend.log.stage_remove("b", [1])
    backend.log.commit()
    assert seqs(backend, "a") == [] and seqs(backend, "b") == []
    assert seqs(backend, "ab") == [1, 2]


# -- remove, redelivered, purge ----------------------------------------------------------------------


def test_remove_and_unknown_seqs_are_ignored(backend: Backend) -> None:
    backend.log.stage_append([msg(s) for s in range(1, 6)])
    backend.log.commit()
    backend.log.stage_remove("q", [2, 4, 99])
    backend.log.stage_remove("unknown-queue", [1])
    backend.log.stage_remove("q", [])
    backend.log.commit()
    assert seqs(backend) == [1, 3, 5]
    backend.log.stage_remove("q", [2])  # already removed
    backend.log.commit()
    assert seqs(backend) == [1, 3, 5]
    backend.reopen()
    assert seqs(backend) == [1, 3, 5]


def test_append_then_remove_in_one_batch_leaves_nothing(backend: Backend) -> None:
    backend.log.stage_append([msg(1), msg(2), msg(3)])
    backend.log.stage_remove("q", [1, 3])  # published and acked before the commit
    backend.log.commit()
    assert seqs(backend) == [2]
    backend.reopen()
    assert seqs(backend) == [2]


def test_mark_redelivered_survives_reopen(backend: Backend) -> None:
    backend.log.stage_append([msg(1), msg(2), msg(3)])
    backend.log.commit()
    backend.log.stage_mark_redelivered("q", [1, 3, 42])
    backend.log.commit()
    backend.reopen()
    assert [(m.seq, m.redelivered) for m in backend.log.read("q", 0, 10)] == [
        (1, True), (2, False), (3, True)
    ]


def test_mark_redelivered_on_a_staged_append(backend: Backend) -> None:
    backend.log.stage_append([msg(1), msg(2)])
    backend.log.stage_mark_redelivered("q", [2])
    backend.log.commit()
    assert [(m.seq, m.redelivered) for m in backend.log.read("q", 0, 10)] == [(1, False), (2, True)]


# -- deadline and requeue count ---------------------------------------------------------------------


def state(b: Backend, queue: str = "q") -> list[tuple[int, bool, int, int]]:
    """(seq, redelivered, requeues, deadline) of every message of ``queue``."""
    return [(m.seq, m.redelivered, m.requeues, m.deadline) for m in b.log.read(queue, 0, 10**6)]


def test_deadline_round_trips(backend: Backend) -> None:
    far = 2**63 - 1  # the largest deadline an int64 holds
    ms = [msg(1), msg(2), msg(3), msg(4, persistent=False)]
    for m, d in zip(ms, (1_700_000_000_123, 0, far, 5)):
        m.deadline = d
    backend.log.stage_append(ms)
    backend.log.commit()
    expected = [(1, False, 0, 1_700_000_000_123), (2, False, 0, 0), (3, False, 0, far), (4, False, 0, 5)]
    assert state(backend) == expected
    backend.log.stage_mark_redelivered("q", [1])  # a requeue keeps the deadline
    backend.log.commit()
    backend.reopen()
    assert state(backend) == [(1, True, 1, 1_700_000_000_123), *expected[1:]]


def test_requeues_count_over_several_commits_and_reopens(backend: Backend) -> None:
    backend.log.stage_append([msg(1), msg(2), msg(3)])
    backend.log.commit()
    backend.log.stage_mark_redelivered("q", [1, 2])
    backend.log.commit()
    assert state(backend) == [(1, True, 1, 0), (2, True, 1, 0), (3, False, 0, 0)]
    backend.log.stage_mark_redelivered("q", [1])
    backend.log.stage_mark_redelivered("q", [1, 3])  # twice in one batch counts twice
    backend.log.commit()
    backend.reopen()
    assert state(backend) == [(1, True, 3, 0), (2, True, 1, 0), (3, True, 1, 0)]
    backend.log.stage_mark_redelivered("q", [1])
    backend.log.stage_remove("q", [2])
    backend.log.commit()
    backend.reopen()
    assert state(backend) == [(1, True, 4, 0), (3, True, 1, 0)]


def test_requeues_of_a_staged_append_count_too(backend: Backend) -> None:
    backend.log.stage_append([msg(1), msg(2)])
    backend.log.stage_mark_redelivered("q", [2])
    backend.log.stage_mark_redelivered("q", [2])
    backend.log.commit()
    assert state(backend) == [(1, False, 0, 0), (2, True, 2, 0)]
    backend.reopen()
    backend.log.stage_mark_redelivered("q", [2])
    backend.log.commit()
    assert state(backend) == [(1, False, 0, 0), (2, True, 3, 0)]


def test_appended_redelivered_flag_and_count_are_kept(backend: Backend) -> None:
    """A message may arrive with a count (moved between store keys) or with only the flag set."""
    flagged = StoredMessage("q", 1, "", "", b"", b"a", True, redelivered=True)
    counted = StoredMessage("q", 2, "", "", b"", b"b", True, redelivered=True, requeues=5)
    implied = StoredMessage("q", 3, "", "", b"", b"c", True, redelivered=False, requeues=2)
    backend.log.stage_append([flagged, counted, implied])
    backend.log.commit()
    backend.reopen()
    # requeues > 0 is reported as redelivered whatever the flag said (storage/api.py).
    assert state(backend) == [(1, True, 0, 0), (2, True, 5, 0), (3, True, 2, 0)]
    backend.log.stage_mark_redelivered("q", [1, 2, 3])
    backend.log.commit()
    backend.reopen()
    assert state(backend) == [(1, True, 1, 0), (2, True, 6, 0), (3, True, 3, 0)]


def test_purge_forgets_requeue_counts(backend: Backend) -> None:
    backend.log.stage_append([msg(1), msg(2)])
    backend.log.commit()
    backend.log.stage_mark_redelivered("q", [1, 1, 2])
    backend.log.commit()
    backend.log.stage_purge("q")
    backend.log.commit()
    backend.log.stage_append([msg(3)])
    backend.log.commit()
    backend.reopen()
    assert state(backend) == [(3, False, 0, 0)]


def test_purge(backend: Backend) -> None:
    backend.log.stage_append([msg(1), msg(2), msg(1, "other")])
    backend.log.commit()
    backend.log.stage_append([msg(3)])  # staged before the purge: purged too
    backend.log.stage_purge("q")
    backend.log.stage_append([msg(4)])  # staged after the purge: kept
    backend.log.stage_mark_redelivered("q", [4])
    assert seqs(backend) == [1, 2]
    backend.log.commit()
    assert [(m.seq, m.redelivered) for m in backend.log.read("q", 0, 10)] == [(4, True)]
    assert seqs(backend, "other") == [1]
    backend.reopen()
    assert seqs(backend) == [4]


def test_close_commits_what_is_staged(backend: Backend) -> None:
    backend.log.stage_append([msg(1)])
    backend.reopen()
    assert seqs(backend) == [1]


def test_read_results_are_copies(backend: Backend) -> None:
    m = msg(1)
    backend.log.stage_append([m])
    m.redelivered = True  # the core mutating its object after staging must not leak into the store
    backend.log.commit()
    got = backend.log.read("q", 0, 1)[0]
    assert got.redelivered is False
    got.redelivered = True
    assert backend.log.read("q", 0, 1)[0].redelivered is False


# -- delivery watermark (stage_delivered) -----------------------------------------------------------


def flags(b: Backend, queue: str = "q") -> list[tuple[int, bool, int]]:
    """(seq, redelivered, requeues) of every message of ``queue``."""
    return [(m.seq, m.redelivered, m.requeues) for m in b.log.read(queue, 0, 10**6)]


def test_delivered_watermark_flags_what_it_covers_once_committed(backend: Backend) -> None:
    backend.log.stage_append([msg(s) for s in range(1, 6)] + [msg(1, "other")])
    backend.log.commit()
    backend.log.stage_delivered("q", 3)
    assert backend.log.has_staged()
    assert flags(backend) == [(s, False, 0) for s in range(1, 6)]  # staged: not yet
    backend.log.commit()
    expected = [(1, True, 0), (2, True, 0), (3, True, 0), (4, False, 0), (5, False, 0)]
    assert flags(backend) == expected  # redelivered, and no failed delivery counted
    assert flags(backend, "other") == [(1, False, 0)]  # per queue
    assert [m.seq for m in backend.log.read("q", 2, 2)] == [3, 4]  # paging is unchanged
    backend.log.stage_delivered("q", 2)  # lower than the watermark: changes nothing
    backend.log.commit()
    backend.reopen()
    assert backend.log.recover() == [QueueRecovery("other", 1, 1), QueueRecovery("q", 5, 5)]
    assert flags(backend) == expected


def test_delivered_watermark_keeps_requeue_counts(backend: Backend) -> None:
    backend.log.stage_append([msg(1), msg(2)])
    backend.log.stage_mark_redelivered("q", [1, 1])
    backend.log.stage_delivered("q", 2)
    backend.log.commit()
    backend.reopen()
    assert flags(backend) == [(1, True, 2), (2, True, 0)]


def test_purge_forgets_the_watermark(backend: Backend) -> None:
    backend.log.stage_append([msg(1), msg(2)])
    backend.log.stage_delivered("q", 2)
    backend.log.commit()
    backend.log.stage_purge("q")  # e.g. deleted, then declared again: its seqs start over
    backend.log.stage_append([msg(1)])
    backend.log.commit()
    assert flags(backend) == [(1, False, 0)]
    backend.reopen()
    backend.log.recover()
    assert flags(backend) == [(1, False, 0)]


def test_watermark_staged_after_a_purge_in_the_same_batch_counts(backend: Backend) -> None:
    backend.log.stage_append([msg(1), msg(2)])
    backend.log.stage_delivered("q", 2)
    backend.log.commit()
    backend.log.stage_purge("q")
    backend.log.stage_append([msg(3), msg(4)])
    backend.log.stage_delivered("q", 3)
    backend.log.commit()
    backend.reopen()
    assert flags(backend) == [(3, True, 0), (4, False, 0)]


def test_recover_lowers_the_watermark_to_what_the_queue_holds(backend: Backend) -> None:
    """Delivered 1..5, then 4 and 5 acked: after a restart the core numbers new messages from 4 again,
    and those must not come back flagged."""
    backend.log.stage_append([msg(s) for s in range(1, 6)])
    backend.log.stage_delivered("q", 5)
    backend.log.commit()
    backend.log.stage_remove("q", [4, 5])
    backend.log.commit()
    backend.reopen()
    assert backend.log.recover() == [QueueRecovery("q", 3, 3)]
    assert flags(backend) == [(1, True, 0), (2, True, 0), (3, True, 0)]
    backend.log.stage_append([msg(4), msg(5)])
    backend.log.commit()
    assert flags(backend)[3:] == [(4, False, 0), (5, False, 0)]
    backend.reopen()
    backend.log.recover()
    assert flags(backend) == [(1, True, 0), (2, True, 0), (3, True, 0), (4, False, 0), (5, False, 0)]


def test_recover_forgets_the_watermark_of_an_emptied_queue(backend: Backend) -> None:
    backend.log.stage_append([msg(1), msg(2)])
    backend.log.stage_delivered("q", 2)
    backend.log.commit()
    backend.log.stage_remove("q", [1, 2])
    backend.log.commit()
    backend.reopen()
    assert backend.log.recover() == []
    backend.log.stage_append([msg(1)])
    backend.log.commit()
    backend.reopen()
    backend.log.recover()
    assert flags(backend) == [(1, False, 0)]


# -- recover -----------------------------------------------------------------------------------------


def test_recover_drops_transient_and_reports_counts(backend: Backend) -> None:
    backend.log.stage_append(
        [msg(1, "a"), msg(2, "a", persistent=False), msg(3, "a"), msg(4, "a", persistent=False)]
        + [msg(1, "b", persistent=False), msg(5, "c"), msg(9, "c")]
    )
    backend.log.commit()
    backend.reopen()
    assert backend.log.recover() == [QueueRecovery("a", 2, 3), QueueRecovery("c", 2, 9)]
    assert seqs(backend, "a") == [1, 3]
    assert seqs(backend, "b") == []
    backend.reopen()
    assert backend.log.recover() == [QueueRecovery("a", 2, 3), QueueRecovery("c", 2, 9)]


def test_recover_on_an_empty_log(backend: Backend) -> None:
    assert backend.log.recover() == []
    backend.log.stage_append([msg(1)])
    backend.log.stage_remove("q", [1])
    backend.log.commit()
    backend.reopen()
    assert backend.log.recover() == []


# -- metadata ----------------------------------------------------------------------------------------

ALL_TYPES: dict[str, Any] = {
    "x-max-length": 10,
    "x-message-ttl": 60_000,
    "big": 2**62,
    "negative": -5,
    "flag": True,
    "off": False,
    "ratio": 0.25,
    "text": "héllo",
    "bytes": b"\x00\xffraw",
    "decimal": Decimal("12.50"),
    "timestamp": datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    "void": None,
    "array": [1, "two", b"3", [4.0, {"five": 5}]],
    "nested": {"inner": {"deeper": {"x": 1}}, "list": []},
    "$looks-like-a-tag": {"$bytes": "not base64 at all"},
    "empty": {},
}


def test_exchange_round_trip(backend: Backend) -> None:
    e1 = ExchangeDefinition("orders", "topic", arguments=dict(ALL_TYPES))
    e2 = ExchangeDefinition("dlx", "fanout", vhost="other", durable=True, auto_delete=True, internal=True)
    e3 = ExchangeDefinition("orders", "direct", vhost="other")  # same name, other vhost
    for e in (e1, e2, e3):
        backend.meta.save_exchange(e)
    assert backend.meta.load().exchanges == [e1, e2, e3]
    backend.reopen()
    loaded = backend.meta.load().exchanges
    assert loaded == [e1, e2, e3]
    assert type(loaded[0].arguments["bytes"]) is bytes
    assert type(loaded[0].arguments["decimal"]) is Decimal
    assert type(loaded[0].arguments["flag"]) is bool and type(loaded[0].arguments["big"]) is int


def test_exchange_resave_updates_in_place_and_delete(backend: Backend) -> None:
    backend.meta.save_exchange(ExchangeDefinition("a", "direct"))
    backend.meta.save_exchange(ExchangeDefinition("b", "direct"))
    changed = ExchangeDefinition("a", "headers", internal=True, arguments={"alternate-exchange": "b"})
    backend.meta.save_exchange(changed)
    assert backend.meta.load().exchanges == [changed, ExchangeDefinition("b", "direct")]
    backend.meta.delete_exchange("/", "a")
    backend.meta.delete_exchange("/", "missing")
    backend.meta.delete_exchange("other", "b")  # wrong vhost: nothing
    backend.reopen()
    assert backend.meta.load().exchanges == [ExchangeDefinition("b", "direct")]


def test_queue_round_trip_and_delete(backend: Backend) -> None:
    q1 = QueueDefinition("jobs", arguments={"x-queue-type": "classic", "x-dead-letter-exchange": "dlx"})
    q2 = QueueDefinition("tmp", vhost="v2", durable=False, exclusive=True, auto_delete=True,
                         arguments=dict(ALL_TYPES))
    backend.meta.save_queue(q1)
    backend.meta.save_queue(q2)
    q1b = QueueDefinition("jobs", arguments={"x-max-length": 5})
    backend.meta.save_queue(q1b)
    backend.reopen()
    assert backend.meta.load().queues == [q1b, q2]
    backend.meta.delete_queue("v2", "tmp")
    backend.meta.delete_queue("/", "never-declared")
    backend.reopen()
    assert backend.meta.load().queues == [q1b]


def test_binding_round_trip(backend: Backend) -> None:
    b_queue = BindingDefinition("amq.topic", "jobs", "queue", "jobs.#")
    b_e2e = BindingDefinition("orders", "audit", "exchange", "")
    args = {"x-match": "all", "format": "pdf", "nested": {"a": [1, b"2"]}}
    b_headers = BindingDefinition("hdrs", "jobs", "queue", "", arguments_key='{"format":"pdf","x-match":"all"}')
    b_other_vhost = BindingDefinition("amq.topic", "jobs", "queue", "jobs.#", vhost="v2")
    backend.meta.save_binding(b_queue, {})
    backend.meta.save_binding(b_e2e, {})
    backend.meta.save_binding(b_headers, args)
    backend.meta.save_binding(b_other_vhost, {"k": 1})
    backend.meta.save_binding(b_queue, {})  # idempotent re-save
    backend.reopen()
    d = backend.meta.load()
    assert d.bindings == [b_queue, b_e2e, b_headers, b_other_vhost]
    assert d.bindings[1].destination_kind == "exchange"
    assert d.binding_arguments == {b_queue: {}, b_e2e: {}, b_headers: args, b_other_vhost: {"k": 1}}
    backend.meta.delete_binding(b_e2e)
    backend.meta.delete_binding(BindingDefinition("nope", "nope", "queue", ""))
    backend.reopen()
    assert backend.meta.load().bindings == [b_queue, b_headers, b_other_vhost]


def test_bindings_differing_only_by_arguments_are_distinct(backend: Backend) -> None:
    b1 = BindingDefinition("hdrs", "q", "queue", "", arguments_key='{"a":1}')
    b2 = BindingDefinition("hdrs", "q", "queue", "", arguments_key='{"a":2}')
    b3 = BindingDefinition("hdrs", "q", "exchange", "", arguments_key='{"a":1}')
    backend.meta.save_binding(b1, {"a": 1})
    backend.meta.save_binding(b2, {"a": 2})
    backend.meta.save_binding(b3, {"a": 1})
    backend.meta.delete_binding(b1)
    backend.reopen()
    d = backend.meta.load()
    assert d.bindings == [b2, b3]
    assert d.binding_arguments == {b2: {"a": 2}, b3: {"a": 1}}


def test_deleting_exchange_or_queue_leaves_bindings_to_the_core(backend: Backend) -> None:
    backend.meta.save_exchange(ExchangeDefinition("e", "direct"))
    backend.meta.save_queue(QueueDefinition("q"))
    b = BindingDefinition("e", "q", "queue", "k")
    backend.meta.save_binding(b, {})
    backend.meta.delete_exchange("/", "e")
    backend.meta.delete_queue("/", "q")
    d = backend.meta.load()
    assert d.exchanges == [] and d.queues == [] and d.bindings == [b]


def test_loaded_definitions_are_copies(backend: Backend) -> None:
    args: dict[str, Any] = {"nested": {"a": 1}}
    e = ExchangeDefinition("e", "direct", arguments=args)
    backend.meta.save_exchange(e)
    args["nested"]["a"] = 2  # mutating after save must not change what is stored
    loaded = backend.meta.load().exchanges[0]
    assert loaded.arguments == {"nested": {"a": 1}}
    loaded.arguments["nested"]["a"] = 3
    assert backend.meta.load().exchanges[0].arguments == {"nested": {"a": 1}}


def test_empty_metadata(backend: Backend) -> None:
    d = backend.meta.load()
    assert (d.exchanges, d.queues, d.bindings, d.binding_arguments) == ([], [], [], {})


# -- runtime configuration records ------------------------------------------------------------------


def test_records_round_trip_per_kind_in_first_save_order(backend: Backend) -> None:
    backend.meta.save_record("user", "bob", {"tags": ["management"], "hash": "abc"})
    backend.meta.save_record("policy", "/\x00ha", {"pattern": "^ha\\.", "priority": 1})
    backend.meta.save_record("user", "alice", {"tags": [], "hash": "def"})
    backend.meta.save_record("user", "bob", {"tags": ["administrator"], "hash": "abc"})  # re-save keeps its place
    backend.reopen()
    assert list(backend.meta.load_records("user").items()) == [
        ("bob", {"tags": ["administrator"], "hash": "abc"}),
        ("alice", {"tags": [], "hash": "def"}),
    ]
    assert backend.meta.load_records("policy") == {"/\x00ha": {"pattern": "^ha\\.", "priority": 1}}
    assert backend.meta.load_records("vhost") == {}


def test_record_delete_and_unknown_delete(backend: Backend) -> None:
    backend.meta.save_record("vhost", "/", {})
    backend.meta.save_record("vhost", "prod", {"description": "x"})
    backend.meta.delete_record("vhost", "/")
    backend.meta.delete_record("vhost", "missing")
    backend.meta.delete_record("user", "prod")  # same key, other kind: nothing
    backend.reopen()
    assert backend.meta.load_records("vhost") == {"prod": {"description": "x"}}


def test_record_values_are_copies(backend: Backend) -> None:
    value = {"tags": ["a"]}
    backend.meta.save_record("user", "u", value)
    value["tags"].append("b")
    loaded = backend.meta.load_records("user")
    loaded["u"]["tags"].append("c")
    assert backend.meta.load_records("user") == {"u": {"tags": ["a"]}}
