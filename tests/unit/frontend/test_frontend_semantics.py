"""Sans-IO tests of the AMQP 0-9-1 front end: a ``ClientPeer`` wired to an ``AMQPConnection`` over a core
``Broker`` on memory stores, with no sockets and no event loop. ``flush()`` stands in for the transport's
once-per-loop-iteration batch cycle (dispatch, group commit, after-commit hooks).

Expected behaviour is RabbitMQ 3.10's: ``loopback_users`` refuses guest from a non-loopback peer with 403
(clients announcing ``authentication_failure_close``), and publisher confirms are released only once the
store commit that holds the messages is done.
"""

from __future__ import annotations

from typing import Any

from pamqp import commands

from mailslot.core.broker import Broker
from mailslot.frontends.amqp091 import AMQPConnection, AMQPPropertiesCodec
from mailslot.protocols.amqp091.peer import ClientPeer, method
from mailslot.storage.memory import MemoryMessageLog, MemoryMetadataStore

USERS = {"guest": "guest", "alice": "secret"}


class CountingLog(MemoryMessageLog):
    """The memory message log, counting commits and what each commit held."""

    def __init__(self) -> None:
        super().__init__()
        self.commits = 0

    def commit(self) -> None:
        self.commits += 1
        super().commit()


class Wire:
    """One client connection on an in-memory wire."""

    def __init__(self, *, peer_host: str = "127.0.0.1", client: ClientPeer | None = None) -> None:
        self.log = CountingLog()
        self.core = Broker(self.log, MemoryMetadataStore(), AMQPPropertiesCodec())
        self.outbox: set[AMQPConnection] = set()
        self.conn = AMQPConnection(
            self.core,
            peer_host=peer_host,
            users=USERS,
            loopback_users=frozenset({"guest"}),
            heartbeat=60,
            frame_max=131072,
            channel_max=2047,
            max_message_size=16 * 1024 * 1024,
            now=0.0,
            outbox=self.outbox,
        )
        self.client = client or ClientPeer()
        self.now = 0.0

    def send(self, data: bytes, *, flush: bool = True) -> list[tuple[int, Any]]:
        """Feed ``data`` in ONE receive() call, optionally run the batch cycle, return the frames sent back
        (answering the handshake automatically, as the peer does)."""
        self.conn.receive(data, self.now)
        if flush:
            self.core.flush()
        return self.collect()

    def collect(self) -> list[tuple[int, Any]]:
        got: list[tuple[int, Any]] = []
        while True:
            frames, reply = self.client.receive_data(self.conn.data_to_send())
            got.extend(frames)
            if not reply or self.conn.terminated:
                return got
            self.conn.receive(reply, self.now)
            self.core.flush()

    def handshake(self) -> list[tuple[int, Any]]:
        return self.send(self.client.start())


def _names(frames: list[tuple[int, Any]]) -> list[str]:
    return [getattr(f, "name", type(f).__name__) for _, f in frames]


# --------------------------------------------------------------------------- loopback_users


def test_guest_from_non_loopback_peer_refused_403() -> None:
    wire = Wire(peer_host="10.1.2.3")
    frames = wire.handshake()
    closes = [f for _, f in frames if isinstance(f, commands.Connection.Close)]
    assert not any(isinstance(f, commands.Connection.OpenOk) for _, f in frames), _names(frames)
    assert len(closes) == 1, _names(frames)
    assert closes[0].reply_code == 403
    assert closes[0].reply_text == (
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
    )


def test_guest_from_ipv6_loopback_accepted() -> None:
    wire = Wire(peer_host="::1")
    frames = wire.handshake()
    assert any(isinstance(f, commands.Connection.OpenOk) for _, f in frames), _names(frames)


def test_non_guest_user_from_non_loopback_peer_accepted() -> None:
    wire = Wire(peer_host="10.1.2.3", client=ClientPeer("alice", "secret"))
    frames = wire.handshake()
    assert any(isinstance(f, commands.Connection.OpenOk) for _, f in frames), _names(frames)
    assert not any(isinstance(f, commands.Connection.Close) for _, f in frames)


def test_non_guest_wrong_password_from_non_loopback_refused() -> None:
    wire = Wire(peer_host="10.1.2.3", client=ClientPeer("alice", "nope"))
    frames = wire.handshake()
    closes = [f for _, f in frames if isinstance(f, commands.Connection.Close)]
    assert [c.reply_code for c in closes] == [403]


# --------------------------------------------------------------------------- group commit and confirms


def _open_confirming_channel(wire: Wire, queue: str, *, durable: bool = True) -> None:
    frames = wire.handshake()
    assert any(isinstance(f, commands.Connection.OpenOk) for _, f in frames)
    frames = wire.send(
        wire.client.open_channel(1)
        + method(1, commands.Queue.Declare(queue=queue, durable=durable))
        + method(1, commands.Confirm.Select())
    )
    assert _names(frames) == ["Channel.OpenOk", "Queue.DeclareOk", "Confirm.SelectOk"]


def test_100_persistent_publishes_one_commit_one_multiple_ack() -> None:
    wire = Wire()
    _open_confirming_channel(wire, "q")
    before = wire.log.commits
    persistent = commands.Basic.Properties(delivery_mode=2)
    batch = b"".join(wire.client.publish(1, "", "q", b"m%d" % i, persistent) for i in range(100))

    # One read buffer: everything is staged, nothing committed and nothing confirmed yet.
    frames = wire.send(batch, flush=False)
    assert wire.log.commits == before
    assert not any(isinstance(f, (commands.Basic.Ack, commands.Basic.Nack)) for _, f in frames), _names(frames)

    # The batch cycle: exactly one store commit, then exactly one basic.ack multiple=true for tag 100.
    wire.core.flush()
    assert wire.log.commits == before + 1
    frames = wire.collect()
    acks = [f for _, f in frames if isinstance(f, (commands.Basic.Ack, commands.Basic.Nack))]
    assert len(acks) == 1, _names(frames)
    assert isinstance(acks[0], commands.Basic.Ack)
    assert (acks[0].delivery_tag, acks[0].multiple) == (100, True)

    # The messages are in the queue.
    frames = wire.send(method(1, commands.Queue.Declare(queue="q", durable=True, passive=True)))
    ok = [f for _, f in frames if isinstance(f, commands.Queue.DeclareOk)]
    assert ok and ok[0].message_count == 100


def test_confirm_waits_for_the_commit_it_depends_on() -> None:
    """The ack is produced by the flush that commits, never by receive() itself."""
    wire = Wire()
    _open_confirming_channel(wire, "q")
    seen_at_commit: list[int] = []
    real_commit = wire.log.commit

    def commit() -> None:
        # No ack may be queued for the client before the messages are committed.
        pending = wire.conn.data_to_send()
        frames, _ = wire.client.receive_data(pending)
        seen_at_commit.append(sum(isinstance(f, commands.Basic.Ack) for _, f in frames))
        real_commit()

    wire.log.commit = commit  # type: ignore[method-assign]
    persistent = commands.Basic.Properties(delivery_mode=2)
    wire.send(b"".join(wire.client.publish(1, "", "q", b"x", persistent) for _ in range(3)), flush=False)
    wire.core.flush()
    assert seen_at_commit == [0]
    acks = [f for _, f in wire.collect() if isinstance(f, commands.Basic.Ack)]
    assert [(a.delivery_tag, a.multiple) for a in acks] == [(3, True)]


def test_confirm_of_single_publish_is_not_multiple() -> None:
    wire = Wire()
    _open_confirming_channel(wire, "q")
    wire.send(wire.client.publish(1, "", "q", b"x", commands.Basic.Properties(delivery_mode=2)), flush=False)
    wire.core.flush()
    acks = [f for _, f in wire.collect() if isinstance(f, commands.Basic.Ack)]
    assert [(a.delivery_tag, a.multiple) for a in acks] == [(1, False)]


# --------------------------------------------------------------------------- how a connection closes


def test_shutdown_closes_with_320_and_requeues_unacked() -> None:
    # The front end, not the transport, says how a shutdown closes a connection (RabbitMQ's words).
    wire = Wire()
    wire.handshake()
    wire.send(method(1, commands.Channel.Open()) + method(1, commands.Queue.Declare(queue="q", durable=True)))
    wire.send(wire.client.publish(1, "", "q", b"m"))
    wire.send(method(1, commands.Basic.Consume(queue="q", consumer_tag="c")))
    queue = wire.core.vhosts["/"].queues["q"]
    assert queue.message_count == 0  # delivered, unacked
    wire.conn.shutdown()
    frames = wire.collect()
    closes = [f for _, f in frames if isinstance(f, commands.Connection.Close)]
    assert [(c.reply_code, c.reply_text) for c in closes] == [
        (320, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")]
    assert wire.conn.closed and queue.message_count == 1  # back in the queue
    wire.conn.shutdown()  # twice is harmless: one close frame
    assert wire.collect() == []


def test_ack_with_unknown_tag_closes_the_channel_with_the_ack_method_ids() -> None:
    # Acks take the protocol layer's fast path (no pamqp object); the error reply still names basic.ack.
    wire = Wire()
    wire.handshake()
    wire.send(method(1, commands.Channel.Open()))
    frames = wire.send(wire.client.ack(1, 99))
    closes = [f for _, f in frames if isinstance(f, commands.Channel.Close)]
    assert [(c.reply_code, c.reply_text, c.class_id, c.method_id) for c in closes] == [
        (406, "PRECONDITION_FAILED - unknown delivery tag 99", 60, 80)]
