"""A data directory written before messages named their properties codec recovers unchanged: its messages
are read as AMQP 0-9-1's and delivered with the property block they were published with."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mailslot import client
from mailslot.storage.api import QueueDefinition
from mailslot.storage.sqlite import DB_FILENAME, SqliteMetadataStore
from mailslot.storage.sqlite._schema import migrations
from mailslot.testing import running_broker

# Written by main before codecs were stored (see tests/storage/test_segments.py).
V3_SEGMENT = (Path(__file__).parents[1] / "storage" / "golden" / "segment_v3.seg").read_bytes()


def _metadata_with_queue(db: Path) -> None:
    meta = SqliteMetadataStore(db)
    meta.save_queue(QueueDefinition("q", "/", True, False, False, {}))
    meta.close()


def old_segments_dir(data_dir: Path) -> None:
    """Segment store: a version-3 segment as main wrote it (tests/storage/test_segments.py)."""
    (data_dir / "log").mkdir(parents=True)
    (data_dir / "log" / "00000001.seg").write_bytes(V3_SEGMENT)
    _metadata_with_queue(data_dir / DB_FILENAME)


def old_sqlite_dir(data_dir: Path) -> None:
    """SQLite store at schema version 4 (main before codecs: no codec column), holding the same two messages."""
    data_dir.mkdir(parents=True)
    with sqlite3.connect(data_dir / DB_FILENAME) as conn:
        for _, script in migrations()[:4]:
            conn.executescript(script)
        conn.execute("PRAGMA user_version = 4")
        conn.executemany(
            "INSERT INTO messages (queue, seq, persistent, redelivered, deadline, exchange, routing_key, properties,"
            " body) VALUES ('/' || char(0) || 'q', ?, 1, ?, 0, ?, 'q', ?, ?)",
            [(1, 0, "", bytes.fromhex("b0800a746578742f706c61696e00000008016b53000000017602036d2d31"), b"hello"),
             (2, 3, "amq.direct", b"\x10\x00\x02", b"again")])
    _metadata_with_queue(data_dir / DB_FILENAME)


@pytest.mark.parametrize(("store", "make"), [("segments", old_segments_dir), ("sqlite", old_sqlite_dir)])
async def test_an_old_data_directory_recovers_and_delivers_as_published(tmp_path: Path, store: str, make) -> None:
    data_dir = tmp_path / "data"
    make(data_dir)
    async with running_broker(store=store, data_dir=data_dir) as broker, await client.connect(broker.amqp_url) as conn:
        ch = await conn.channel()
        first = await ch.get("q", no_ack=True)
        second = await ch.get("q", no_ack=True)
    assert first is not None and second is not None
    assert (first.body, first.redelivered, first.exchange) == (b"hello", False, "")
    props = first.properties
    assert (props.content_type, props.delivery_mode, props.headers, props.message_id) == (
        "text/plain", 2, {"k": "v"}, "m-1")
    assert first.raw_properties == bytes.fromhex("b0800a746578742f706c61696e00000008016b53000000017602036d2d31")
    assert (second.body, second.redelivered, second.exchange) == (b"again", True, "amq.direct")
    assert second.headers == {"x-delivery-count": 3}  # its requeue count survived too (RabbitMQ's header)
