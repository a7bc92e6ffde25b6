"""Pure parts of mailslot.worker: keys, derived keys, outputs, the SQLite inbox's SQL."""

from __future__ import annotations

import sqlite3

import pytest

from mailslot.client.message import Message, build_properties
from mailslot.worker import DEDUP_HEADER, Guarantee, Job, SQLiteInbox, Worker, derive_key, message_key
from mailslot.worker.api import delivery_count


def _message(headers=None, message_id=None, redelivered=False) -> Message:
    raw = build_properties(True, headers, message_id)
    return Message(None, 0, 1, redelivered, "", "q", raw, b"body")  # type: ignore[arg-type]


def test_key_prefers_the_dedup_header_then_message_id():
    assert message_key(_message({DEDUP_HEADER: "k1"}, "m1")) == "k1"
    assert message_key(_message({"other": 1}, "m1")) == "m1"
    assert message_key(_message({DEDUP_HEADER: 42})) == "42"
    assert message_key(_message()) is None


def test_delivery_count_from_header_or_flag():
    assert delivery_count(_message()) == 1
    assert delivery_count(_message(redelivered=True)) is None
    assert delivery_count(_message({"x-delivery-count": 2}, redelivered=True)) == 3


def test_outputs_get_derived_keys_in_order():
    job = Job(_message({DEDUP_HEADER: "in-7"}), "in-7", "orders")
    job.publish("invoices", b"a")
    job.publish("audit", b"b", exchange="x", headers={"h": "v"})
    assert [o.key for o in job.outputs] == [derive_key("orders", "in-7", 0), derive_key("orders", "in-7", 1)]
    assert job.outputs[1].headers_with_key() == {"h": "v", DEDUP_HEADER: "orders:in-7:1"}
    assert derive_key("orders", "in-7", 0) != derive_key("billing", "in-7", 0)


def test_outputs_of_a_keyless_input_have_no_key():
    job = Job(_message(), None, "q")
    job.publish("out", b"x")
    assert job.outputs[0].key is None and job.outputs[0].headers_with_key() is None


def test_exactly_once_needs_an_inbox_and_a_plain_function(tmp_path):
    with pytest.raises(ValueError, match="inbox"):
        Worker("amqp://x", "q", lambda job: None, guarantee="exactly-once")

    async def handler(job):
        pass

    with pytest.raises(TypeError, match="plain function"):
        Worker("amqp://x", "q", handler, guarantee=Guarantee.EXACTLY_ONCE, inbox=SQLiteInbox(tmp_path / "a.db"))
    with pytest.raises(ValueError):
        Worker("amqp://x", "q", handler, guarantee="twice")


def test_sqlite_inbox_claims_once_and_rolls_back_with_the_transaction(tmp_path):
    inbox = SQLiteInbox(tmp_path / "app.db")
    s = inbox.session()
    s.db.execute("CREATE TABLE effects (k TEXT)")
    with pytest.raises(RuntimeError), s.transaction():
        assert s.claim("a")
        s.db.execute("INSERT INTO effects VALUES ('a')")
        raise RuntimeError("handler failed")
    with s.transaction():
        assert s.claim("a")  # the failed transaction left no key behind
        s.db.execute("INSERT INTO effects VALUES ('a')")
        job = Job(_message(), "a", "q")
        job.publish("out", b"x", headers={"n": 1})
        s.record_outputs("a", job.outputs)
    with s.transaction():
        assert not s.claim("a")
        pending = s.pending_outputs("a")
    assert [(o.routing_key, o.body, o.headers, o.key) for o in pending] == [("out", b"x", {"n": 1}, "q:a:0")]
    s.outputs_confirmed("a")
    assert s.pending_outputs("a") == []
    s.close()
    db = sqlite3.connect(tmp_path / "app.db")
    assert db.execute("SELECT count(*) FROM effects").fetchone() == (1,)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert inbox.prune(older_than=3600) == 0
    assert inbox.prune(older_than=-1) == 1


def test_sqlite_inbox_rejects_odd_table_prefixes(tmp_path):
    with pytest.raises(ValueError):
        SQLiteInbox(tmp_path / "a.db", table_prefix="x; DROP TABLE y")
