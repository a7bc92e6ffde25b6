from __future__ import annotations

from mailslot.protocols.amqp091 import ConnectionTerminated
from mailslot.protocols.amqp091.peer import ClientPeer

from .helpers import handshake, new_server

HB = b"\x08\x00\x00\x00\x00\x00\x00\xce"


def test_handshake_timeout() -> None:
    server = new_server(now=100.0)
    assert server.next_timer() == 110.0
    assert server.handle_timer(109.9) == []
    assert server.handle_timer(110.0) == [ConnectionTerminated("handshake timeout")]
    assert server.data_to_send() == b""


def test_no_handshake_timeout_once_open() -> None:
    server, _client, _ = handshake(client=ClientPeer(heartbeat=0))
    assert server.next_timer() is None
    assert server.handle_timer(1000.0) == []


def test_heartbeat_sent_when_quiet_and_timeout_when_peer_silent() -> None:
    server, _client, _ = handshake(client=ClientPeer(heartbeat=10), now=0.0)
    assert server.heartbeat == 10
    # open-ok was sent in the first half-interval, so the first check sends nothing
    assert server.next_timer() == 5.0
    assert server.handle_timer(5.0) == []
    assert server.data_to_send() == b""
    # quiet for a whole check period -> heartbeat
    assert server.handle_timer(10.0) == []
    assert server.data_to_send() == HB
    server.receive_data(HB, 12.0)  # peer heartbeat refreshes last-received
    assert server.next_timer() == 15.0
    server.handle_timer(15.0)
    server.data_to_send()
    assert server.handle_timer(31.9) == []
    assert server.next_timer() <= 32.0
    assert server.handle_timer(32.0) == [ConnectionTerminated("missed heartbeats")]
    assert server.terminated and server.next_timer() is None


def test_any_outgoing_data_suppresses_heartbeat() -> None:
    server, _client, _ = handshake(client=ClientPeer(heartbeat=10), now=0.0)
    server.handle_timer(5.0)
    server.send_ack(1, 1, False)
    server.data_to_send()
    server.receive_data(HB, 9.0)
    server.handle_timer(10.0)
    assert server.data_to_send() == b""


def test_close_ok_timeout() -> None:
    server, _client, _ = handshake(client=ClientPeer(heartbeat=0))
    server.receive_data(b"", 50.0)
    server.close_connection(320, "CONNECTION_FORCED - bye")
    assert server.next_timer() == 80.0
    assert server.handle_timer(80.0) == [ConnectionTerminated("connection.close-ok not received")]


def test_missed_heartbeat_check_is_suspended_while_the_host_does_not_read() -> None:
    # A publisher blocked by a resource alarm is not read, so its heartbeats cannot arrive: the
    # silence is the broker's doing and must not close it (RabbitMQ pauses the same check).
    server, _client, _ = handshake(client=ClientPeer(heartbeat=10), now=0.0)
    server.suspend_receive_check()
    assert server.handle_timer(100.0) == []
    assert server.next_timer() is not None and server.next_timer() > 100.0  # only our own heartbeats
    server.resume_receive_check(100.0)  # reading again: a fresh interval starts now
    assert server.handle_timer(119.9) == []
    assert server.handle_timer(120.0) == [ConnectionTerminated("missed heartbeats")]
