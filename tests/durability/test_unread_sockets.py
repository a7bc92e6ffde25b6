"""Peers that never read their socket cannot grow broker memory without bound.

The broker runs in a child process so that its RSS is its own. A raw client (no library) sends
and never reads: the broker must stop reading it once what it writes back piles up, and a consumer
that never reads must not pull a backlog into the broker's socket buffers.
"""

from __future__ import annotations

import socket
import time

import pika
import psutil
import pytest
from pamqp import commands

from mailslot.protocols.amqp091.peer import ClientPeer, method

from .broker_process import BrokerProcess

pytestmark = pytest.mark.slow

BODY = b"x" * 60_000
MB = 1024 * 1024


def _raw_client(port: int) -> socket.socket:
    """Handshake and open channel 1 with a raw socket; returns it non-blocking."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    peer = ClientPeer()
    sock.sendall(peer.start())
    opened = False
    deadline = time.monotonic() + 5
    while not opened and time.monotonic() < deadline:
        frames, reply = peer.receive_data(sock.recv(65536))
        if reply:
            sock.sendall(reply)
        opened = any(isinstance(f, commands.Connection.OpenOk) for _, f in frames)
    assert opened, "handshake did not complete"
    sock.sendall(method(1, commands.Channel.Open()))
    frames: list = []
    while not any(isinstance(f, commands.Channel.OpenOk) for _, f in frames):  # channel 1 is open
        frames, _ = peer.receive_data(sock.recv(65536))
    sock.setblocking(False)
    return sock


def _flood(sock: socket.socket, data: bytes, budget: int, stall: float = 2.0) -> int:
    """Send ``data`` over and over, never reading, until ``budget`` bytes or the broker stops taking
    them for ``stall`` seconds. Returns the bytes it took."""
    sent = 0
    view = memoryview(data)
    offset = 0
    last_progress = time.monotonic()
    while sent < budget and time.monotonic() - last_progress < stall:
        try:
            n = sock.send(view[offset:])
        except BlockingIOError:
            time.sleep(0.01)
            continue
        sent += n
        offset = (offset + n) % len(data)
        last_progress = time.monotonic()
    return sent


def _rss(broker: BrokerProcess) -> int:
    assert broker.process is not None
    return psutil.Process(broker.process.pid).memory_info().rss


def test_a_publisher_that_never_reads_is_no_longer_read(tmp_path):
    broker = BrokerProcess(data_dir=tmp_path / "data")
    port = broker.start().port
    try:
        before = _rss(broker)
        sock = _raw_client(port)
        # Mandatory publishes nobody can route: each one makes the broker write a basic.return
        # carrying the whole body back. The client never reads them.
        one = ClientPeer().publish(1, "", "no-such-queue", BODY, mandatory=True)
        sent = _flood(sock, one * 16, budget=400 * MB)
        grown = _rss(broker) - before
        sock.close()
        assert sent < 150 * MB, f"the broker kept reading a peer that does not read ({sent / MB:.0f} MB)"
        assert grown < 120 * MB, f"broker memory grew by {grown / MB:.0f} MB"
        # The broker is fine for everyone else.
        connection = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = connection.channel()
        channel.queue_declare("after", auto_delete=True)
        connection.close()
    finally:
        broker.kill()


def test_a_consumer_that_never_reads_does_not_pull_the_backlog_into_memory(tmp_path):
    broker = BrokerProcess(data_dir=tmp_path / "data")
    port = broker.start().port
    try:
        connection = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = connection.channel()
        channel.queue_declare("backlog")
        channel.confirm_delivery()
        sock = _raw_client(port)
        sock.setblocking(True)
        sock.sendall(method(1, commands.Basic.Consume(queue="backlog", consumer_tag="deaf", no_ack=True)))
        before = _rss(broker)
        for _ in range(2_500):  # 150 MB of transient messages, none of which the consumer reads
            channel.basic_publish("", "backlog", BODY)
        time.sleep(0.5)
        grown = _rss(broker) - before
        waiting = channel.queue_declare("backlog", passive=True).method.message_count
        connection.close()
        sock.close()
        assert waiting > 1_000, "the broker pushed the backlog at a consumer that does not read"
        assert grown < 120 * MB, f"broker memory grew by {grown / MB:.0f} MB"
    finally:
        broker.kill()
