"""tx.commit is one store batch, and tx.commit-ok leaves only after that batch's commit returned.

docs/transactions.md: a transaction's publishes (to any number of queues) and acks are staged by
``tx.commit`` in one go, so they land in the store's next group commit together (one SQLite
transaction / one checksummed segment batch: all or nothing after a crash). The sans-IO wire of
test_frontend_semantics.py, with a message log that records what each commit held.
"""

from __future__ import annotations

from pamqp import commands

from mailslot.protocols.amqp091.peer import method
from mailslot.storage.api import StoredMessage
from mailslot.storage.memory import MemoryMessageLog

from .test_frontend_semantics import Wire, _names

PERSISTENT = commands.Basic.Properties(delivery_mode=2)


class RecordingLog(MemoryMessageLog):
    """Records the staged writes each commit made durable: (kind, queue name, seqs)."""

    def __init__(self) -> None:
        super().__init__()
        self.staged: list[tuple[str, str, tuple[int, ...]]] = []
        self.commits: list[list[tuple[str, str, tuple[int, ...]]]] = []
        self.on_commit = lambda: None

    def stage_append(self, messages: list[StoredMessage]) -> None:
        for m in messages:
            self.staged.append(("append", m.queue.split("\x00")[-1], (m.seq,)))
        super().stage_append(messages)

    def stage_remove(self, queue: str, seqs: list[int]) -> None:
        self.staged.append(("remove", queue.split("\x00")[-1], tuple(seqs)))
        super().stage_remove(queue, seqs)

    def commit(self) -> None:
        if self.has_staged():
            self.on_commit()
            self.commits.append(self.staged)
            self.staged = []
        super().commit()


def _wire() -> tuple[Wire, RecordingLog]:
    wire = Wire()
    log = RecordingLog()
    wire.log = log  # type: ignore[assignment]
    wire.core.log = log
    for vhost in wire.core.vhosts.values():
        vhost.log = log
    wire.handshake()
    declares = b"".join(method(1, commands.Queue.Declare(queue=q, durable=True)) for q in ("in", "out-a", "out-b"))
    frames = wire.send(wire.client.open_channel(1) + declares)
    assert _names(frames) == ["Channel.OpenOk"] + ["Queue.DeclareOk"] * 3
    wire.send(wire.client.publish(1, "", "in", b"input-1", PERSISTENT))
    return wire, log


def test_publishes_to_two_queues_and_an_ack_are_one_commit_and_commit_ok_follows_it() -> None:
    wire, log = _wire()
    frames = wire.send(method(1, commands.Basic.Get(queue="in")) + method(1, commands.Tx.Select()))
    got = [f for _, f in frames if isinstance(f, commands.Basic.GetOk)]
    assert len(got) == 1 and "Tx.SelectOk" in _names(frames), _names(frames)
    tag = got[0].delivery_tag
    commits_before = len(log.commits)
    pending_at_commit: list[list[str]] = []

    def on_commit() -> None:  # what the client could already read when the batch is written
        frames, _ = wire.client.receive_data(wire.conn.data_to_send())
        pending_at_commit.append(_names(frames))

    log.on_commit = on_commit
    tx = (
        wire.client.publish(1, "", "out-a", b"a-of-1", PERSISTENT)
        + wire.client.publish(1, "", "out-b", b"b-of-1", PERSISTENT)
        + method(1, commands.Basic.Ack(delivery_tag=tag))
        + method(1, commands.Tx.Commit())
    )
    frames = wire.send(tx, flush=False)
    assert "Tx.CommitOk" not in _names(frames) and len(log.commits) == commits_before  # nothing durable yet
    wire.core.flush()
    assert len(log.commits) == commits_before + 1  # ONE commit holds the whole transaction
    batch = log.commits[-1]
    assert sorted((kind, queue) for kind, queue, _ in batch) == [
        ("append", "out-a"), ("append", "out-b"), ("remove", "in")
    ], batch
    assert pending_at_commit == [[]]  # tx.commit-ok was not queued before the commit ran
    assert _names(wire.collect()) == ["Tx.CommitOk"]


def test_a_failed_commit_sends_no_commit_ok() -> None:
    wire, log = _wire()
    wire.send(method(1, commands.Tx.Select()))

    def fail() -> None:
        raise OSError("disk full")

    log.on_commit = fail
    frames = wire.send(
        wire.client.publish(1, "", "out-a", b"x", PERSISTENT) + method(1, commands.Tx.Commit())
    )
    names = _names(frames)
    assert "Tx.CommitOk" not in names, names
    closes = [f for _, f in frames if isinstance(f, commands.Channel.Close)]
    assert [c.reply_code for c in closes] == [541], names
