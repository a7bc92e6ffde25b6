"""Hostile peers on the AMQP side: each class of the anchors' advisories is tried against a real broker and
answered with an error (or a closed socket), never a crash or runaway memory; after each, the broker still
serves a well-behaved client.

Handshakes that never finish, connection floods (the connection cap, file descriptors never exhausted),
failed-login floods (slowed down), channel-max exhaustion, oversized and malformed credentials.
"""

from __future__ import annotations

import os
import resource
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
from pamqp import commands, encode, frame

from helpers import outcome, wait_for
from mailslot.protocols.amqp091.peer import PROTOCOL_HEADER
from mailslot.testing import broker_in_thread

pytestmark = pytest.mark.timeout(120)


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True once the broker closed the socket (reads return b"" or the connection resets)."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _works(url: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    conn.channel().queue_declare("", exclusive=True)
    conn.close()


def _start_ok(response: bytes, mechanism: str = "PLAIN") -> bytes:
    """connection.start-ok with ``response`` as raw bytes (pamqp would insist on text), framed by hand."""
    payload = (struct.pack(">HH", 10, 11)
               + encode.field_table({"capabilities": {"authentication_failure_close": True}})
               + encode.short_string(mechanism) + struct.pack(">I", len(response)) + response
               + encode.short_string("en_US"))
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


def _after_start(port: int) -> socket.socket:
    """A raw client that sent the protocol header and read connection.start."""
    sock = _raw(port)
    sock.sendall(PROTOCOL_HEADER)
    got = b""
    while b"\xce" not in got[7:]:
        got += sock.recv(65536)
    return sock


def test_a_handshake_that_never_finishes_is_cut_off() -> None:
    with broker_in_thread(handshake_timeout=0.5) as broker:
        silent = _raw(broker.amqp_port)  # never sends a byte
        header_only = _raw(broker.amqp_port)
        header_only.sendall(PROTOCOL_HEADER)  # then stops before start-ok
        start = time.monotonic()
        assert _closed_by_peer(silent, 10)
        assert _closed_by_peer(header_only, 10)
        assert time.monotonic() - start < 8
        _works(broker.amqp_url)


def test_the_default_handshake_timeout_is_rabbitmqs() -> None:
    from mailslot.bootstrap import BrokerConfig

    assert BrokerConfig().handshake_timeout == 10.0


def test_connections_over_the_cap_are_closed_at_once() -> None:
    with broker_in_thread(max_connections=4) as broker:
        held = [_after_start(broker.amqp_port) for _ in range(4)]
        extra = _raw(broker.amqp_port)
        extra.sendall(PROTOCOL_HEADER)
        assert _closed_by_peer(extra, 5)  # no connection.start: closed before any byte is read
        held.pop().close()
        wait_for(lambda: broker.run_threadsafe(lambda: len(broker._listener.streams)) < 4,  # noqa: SLF001
                 what="the closed socket is gone")
        _works(broker.amqp_url)
        for sock in held:
            sock.close()


def test_a_connection_flood_never_exhausts_file_descriptors(tmp_path: Path) -> None:
    """A broker process limited to 256 descriptors takes 128 connections (256 - FD_RESERVE) and closes the
    rest at once; flooded with 400 sockets, it still serves, and its descriptors stay under the limit."""
    limit = 256
    code = (
        "import resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit})); "
        "from mailslot.cli.main import app; sys.argv = ['mailslot'] + sys.argv[1:]; app()"
    )
    log = tmp_path / "broker.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--host", "127.0.0.1", "--port", "0", "--http-port", "none",
             "--prometheus-port", "none", "--store", "memory", "--data-dir", str(tmp_path / "data")],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        def port() -> int:
            for line in log.read_text().splitlines():
                if "AMQP listening on" in line:
                    return int(line.rsplit(":", 1)[1])
            assert process.poll() is None, log.read_text()
            return 0

        amqp = wait_for(port, timeout=30, what="the broker's port")
        flood: list[socket.socket] = []
        try:
            for _ in range(400):
                sock = socket.socket()
                sock.settimeout(5)
                sock.connect(("127.0.0.1", amqp))
                sock.sendall(PROTOCOL_HEADER)
                flood.append(sock)
            closed = sum(_closed_by_peer(sock, 0.05) for sock in flood[-100:])
            assert closed >= 90, "sockets over the cap are closed at once"
            assert process.poll() is None
            fds = len(os.listdir(f"/proc/{process.pid}/fd"))
            assert fds < limit
        finally:
            for sock in flood:
                sock.close()
        wait_for(lambda: len(os.listdir(f"/proc/{process.pid}/fd")) < 64, timeout=20, what="descriptors released")
        _works(f"amqp://guest:guest@127.0.0.1:{amqp}/%2F")
        assert "connection limit (128) reached" in log.read_text()
    finally:
        process.terminate()
        process.wait(20)


def test_failed_login_floods_are_slowed_down() -> None:
    with broker_in_thread() as broker:
        bad = broker.amqp_url.replace("guest:guest", "guest:wrong")
        timings = []
        for _ in range(9):
            start = time.monotonic()
            with pytest.raises(pika.exceptions.ProbableAuthenticationError):
                pika.BlockingConnection(pika.URLParameters(bad))
            timings.append(time.monotonic() - start)
        assert max(timings[:5]) < 0.25 + min(timings[:5]) * 4  # the first failures are answered at once
        assert timings[-1] >= 0.9  # the 9th waits 2 ** 3 * 0.25 s
        # A right password from the same source is slowed too (a fast "yes" would tell the guesser).
        start = time.monotonic()
        _works(broker.amqp_url)
        assert time.monotonic() - start >= 1.0


def test_channel_max_exhaustion_closes_the_connection() -> None:
    with broker_in_thread(channel_max=8) as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
        for _ in range(8):
            conn.channel()
        # pika refuses to open more than it negotiated itself; speak the wire to go past it.
        conn.close()
        sock = _after_start(broker.amqp_port)
        sock.sendall(_start_ok(b"\x00guest\x00guest"))
        tune = b""
        while b"\xce" not in tune:  # connection.tune: the broker has taken start-ok (a barrier, not a sleep)
            tune += sock.recv(65536)
        sock.sendall(frame.marshal(commands.Connection.TuneOk(channel_max=8, frame_max=131072, heartbeat=0), 0))
        sock.sendall(frame.marshal(commands.Connection.Open(virtual_host="/"), 0))
        for number in range(1, 10):
            sock.sendall(frame.marshal(commands.Channel.Open(), number))
        sock.settimeout(5)
        data = b""
        while b"NOT_ALLOWED" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert b"number of channels opened (8) has reached the negotiated channel_max (8)" in data
        sock.close()
        _works(broker.amqp_url)


@pytest.mark.parametrize(
    "mechanism, response",
    [
        ("PLAIN", b"no-nul-bytes-at-all"),
        ("PLAIN", b"\x00user\x00pass\x00extra"),
        ("PLAIN", b"\x00\xff\xfe\x00\xff"),  # not UTF-8
        ("AMQPLAIN", b"\x05LOGINS\x00\x00\x00\xffshort"),  # a table that lies about its length
        ("CRAM-MD5", b"anything"),  # not offered
        ("PLAIN", b"\x00guest\x00" + b"x" * 3000),  # long, but within the 4096-octet pre-tune frame
    ],
)
def test_malformed_credentials_are_refused_quietly(mechanism: str, response: bytes) -> None:
    with broker_in_thread() as broker:
        sock = _after_start(broker.amqp_port)
        sock.sendall(_start_ok(response, mechanism))
        assert _closed_by_peer(sock, 10)
        _works(broker.amqp_url)


def test_oversized_credentials_are_refused_before_they_are_buffered() -> None:
    with broker_in_thread() as broker:
        sock = _after_start(broker.amqp_port)
        huge = _start_ok(b"\x00guest\x00" + b"x" * (1 << 20))  # 1 MiB: over the pre-tune frame limit (4096)
        try:
            sock.sendall(huge)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: that is the answer
        assert _closed_by_peer(sock, 10)
        _works(broker.amqp_url)


def test_user_deletion_and_password_change_close_connections_from_mailslot() -> None:
    """Both close with 320 CONNECTION_FORCED; RabbitMQ 3.10 leaves connections open on a password change,
    mailslot does not (docs/access-control.md)."""
    with broker_in_thread() as broker:
        admin = broker.access_admin
        broker.run_threadsafe(lambda: (admin.add_user("eve", "pw-eve"), admin.set_permissions("eve", "/", ".*", ".*", ".*")))
        url = broker.amqp_url.replace("guest:guest", "eve:pw-eve")
        conn = pika.BlockingConnection(pika.URLParameters(url))
        broker.run_threadsafe(lambda: admin.change_password("eve", "new"))
        result = outcome(lambda: [conn.process_data_events(time_limit=0.2) for _ in range(50)])
        assert result == ("connection", 320, "CONNECTION_FORCED - user 'eve' password changed")
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.URLParameters(url))
        pika.BlockingConnection(pika.URLParameters(url.replace("pw-eve", "new"))).close()


@pytest.fixture(autouse=True)
def _enough_descriptors() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    yield
