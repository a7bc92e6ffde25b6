"""Leases and fencing on the PostgreSQL store of a cluster node (mailslot.cluster.leases, .store).

Two nodes are two store objects on one schema, under different node names, as two processes would be;
the processes themselves are in test_takeover.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from helpers import wait_for
from mailslot.cluster import ClusterMessageLog, ClusterMetadataStore, LeaseTable, open_cluster_store
from mailslot.core.storekeys import lane_key, queue_key
from mailslot.storage.api import QueueDefinition, StoredMessage
from mailslot.storage.postgres import FencedError, PostgresSettings

Q1 = queue_key("/", "q1")
Q2 = queue_key("/", "q2")


def _message(queue: str, seq: int, body: bytes = b"") -> StoredMessage:
    return StoredMessage(queue, seq, "", "q", b"", body or f"{queue}-{seq}".encode(), persistent=True)


@pytest.fixture
def open_node(cluster_settings: Callable[[str], PostgresSettings]) -> Iterator[
        Callable[..., tuple[ClusterMessageLog, ClusterMetadataStore]]]:
    opened: list[tuple[ClusterMessageLog, ClusterMetadataStore]] = []

    def open_(name: str, ttl: float = 10.0) -> tuple[ClusterMessageLog, ClusterMetadataStore]:
        pair = open_cluster_store(cluster_settings(name), ttl)
        opened.append(pair)
        return pair

    yield open_
    for message_log, metadata in opened:
        message_log.close()
        metadata.close()


def _bodies(settings: PostgresSettings) -> list[bytes]:
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(settings.schema)))
        return [bytes(b) for (b,) in conn.execute("SELECT body FROM messages ORDER BY log_id, seq").fetchall()]


def _expire(settings: PostgresSettings, queue: str) -> None:
    """What a pause past the TTL looks like from the database: the lease is no longer renewed."""
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(settings.schema)))
        conn.execute("UPDATE leases SET expires_at = now() - interval '1 second' WHERE queue = %s", (queue.encode(),))


def test_a_lease_is_taken_renewed_and_expires_on_the_database_clock(
    cluster_settings: Callable[[str], PostgresSettings], open_node: Callable[..., object]
) -> None:
    open_node("a")  # migrates the schema
    ttl = 0.6
    a, b = LeaseTable(cluster_settings("a"), ttl), LeaseTable(cluster_settings("b"), ttl)
    try:
        assert a.take([Q1]) == {Q1: 1}
        assert b.take([Q1]) == {}, "a live lease was taken"
        assert a.renew() == set()
        taken_at = time.monotonic()
        taken = wait_for(lambda: b.take([Q1]), what="the lease to expire and be taken")
        assert time.monotonic() - taken_at >= ttl * 0.9  # not before the TTL (the db's clock, ~same rate)
        assert taken == {Q1: 2}
        assert a.renew() == {Q1}, "the former holder must learn it lost the lease"
        assert Q1 not in a.held
        assert [(lease.owner, lease.epoch) for lease in b.table()] == [("b", 2)]
    finally:
        a.close()
        b.close()


def test_a_node_whose_lease_was_taken_over_has_its_write_refused_and_nothing_of_it_lands(
    cluster_settings: Callable[[str], PostgresSettings],
    open_node: Callable[..., tuple[ClusterMessageLog, ClusterMetadataStore]],
) -> None:
    log_a, meta_a = open_node("a")
    log_b, _ = open_node("b")
    meta_a.save_queue(QueueDefinition("q1"))  # a declares q1 and q2: it owns both
    meta_a.save_queue(QueueDefinition("q2"))
    assert set(log_a.leases.held) == {Q1, Q2}
    log_a.stage_append([_message(Q1, 1), _message(Q1, 2)])
    log_a.stage_append([_message(lane_key("/", "q1", 3), 1)])  # a lane of q1: covered by q1's lease
    log_a.commit()

    # a is paused past its lease of q1 (not q2); b takes q1 over and reads what a committed.
    _expire(cluster_settings("a"), Q1)
    assert log_b.leases.take([Q1]) == {Q1: 2}
    recovered = {r.queue: (r.count, r.max_seq) for r in log_b.adopt({Q1: 2})}
    assert recovered == {Q1: (2, 2), lane_key("/", "q1", 3): (1, 1)}

    # a wakes up, unaware, and writes for q1 (a new message, an ack) and for q2 in one batch.
    log_a.stage_append([_message(Q1, 3, b"stale"), _message(Q2, 1, b"q2-in-the-refused-batch")])
    log_a.stage_remove(Q1, [1])
    with pytest.raises(FencedError, match="lost the lease"):
        log_a.commit()
    bodies = _bodies(cluster_settings("a"))
    assert b"stale" not in bodies and b"q2-in-the-refused-batch" not in bodies
    assert b"/\x00q1-1" in bodies, "the refused batch's ack of message 1 landed"

    # a goes on with the queue it still holds; the new owner writes q1.
    log_a.stage_append([_message(Q2, 2, b"q2-after")])
    log_a.commit()
    log_b.stage_append([_message(Q1, 3, b"b-writes-q1")])
    log_b.commit()
    bodies = _bodies(cluster_settings("a"))
    assert b"q2-after" in bodies and b"b-writes-q1" in bodies


def test_a_takeover_waits_for_the_owners_batch_in_flight(
    cluster_settings: Callable[[str], PostgresSettings],
    open_node: Callable[..., tuple[ClusterMessageLog, ClusterMetadataStore]],
) -> None:
    """FOR SHARE on the lease rows: a takeover that starts while a batch of the owner is between its
    fence and its COMMIT waits, then sees that batch's rows when it reads the queue back."""
    log_a, meta_a = open_node("a")
    log_b, _ = open_node("b")
    meta_a.save_queue(QueueDefinition("q1"))
    settings = cluster_settings("a")
    _expire(settings, Q1)  # a stopped renewing, but its batch below still holds epoch 1
    with psycopg.connect(settings.dsn, autocommit=True) as owner:  # a's batch, held open by the test
        owner.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(settings.schema)))
        owner.execute("BEGIN")
        owner.execute("SELECT check_leases('a', %s, %s)", ([Q1.encode()], [1]))
        owner.execute("INSERT INTO logs (key, lease_group) VALUES (%s, %s)", (Q1.encode(), Q1.encode()))
        owner.execute("INSERT INTO messages (log_id, seq, persistent, exchange, routing_key, properties, body)"
                      " SELECT id, 1, true, '', '', '', 'in-flight' FROM logs WHERE key = %s", (Q1.encode(),))
        result: dict[str, object] = {}
        taker = threading.Thread(target=lambda: result.update(taken=log_b.leases.take([Q1])))
        taker.start()
        taker.join(0.5)
        assert taker.is_alive(), "the takeover did not wait for the owner's transaction"
        owner.execute("COMMIT")
    taker.join(10)
    assert result["taken"] == {Q1: 2}
    assert [(r.count, r.max_seq) for r in log_b.adopt({Q1: 2})] == [(1, 1)]
