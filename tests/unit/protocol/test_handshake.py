from __future__ import annotations

from pamqp import commands

from mailslot.protocols.amqp091 import (
    PROTOCOL_HEADER,
    ConnectionOpen,
    ConnectionStartOk,
    ConnectionTerminated,
)
from mailslot.protocols.amqp091.peer import ClientPeer, method

from .helpers import close_of, frames, handshake, new_server


def test_full_handshake_plain() -> None:
    server, client, events = handshake()
    start_ok = events[0]
    assert isinstance(start_ok, ConnectionStartOk)
    assert (start_ok.mechanism, start_ok.username, start_ok.password) == ("PLAIN", "guest", "guest")
    assert start_ok.client_properties["product"] == "mailslot-test-peer"
    assert start_ok.locale == "en_US"
    assert isinstance(events[1], ConnectionOpen) and events[1].virtual_host == "/"
    assert server.is_open and not server.closing and not server.terminated
    assert (server.frame_max, server.channel_max, server.heartbeat) == (131072, 2047, 60)
    assert client.server_start is not None
    assert client.server_start.mechanisms == "PLAIN AMQPLAIN"
    assert client.server_start.locales == "en_US"
    assert (client.server_start.version_major, client.server_start.version_minor) == (0, 9)
    assert client.tune is not None
    assert (client.tune.channel_max, client.tune.frame_max, client.tune.heartbeat) == (2047, 131072, 60)
    assert isinstance(client.received[-1][1], commands.Connection.OpenOk)


def test_amqplain() -> None:
    _, _, events = handshake(client=ClientPeer("alice", "s3cr3t", mechanism="AMQPLAIN"))
    assert isinstance(events[0], ConnectionStartOk)
    assert (events[0].mechanism, events[0].username, events[0].password) == ("AMQPLAIN", "alice", "s3cr3t")


def test_negotiated_smaller_values() -> None:
    server, _, _ = handshake(client=ClientPeer(frame_max=8192, channel_max=10, heartbeat=0))
    assert (server.frame_max, server.channel_max, server.heartbeat) == (8192, 10, 0)
    assert server.next_timer() is None


def test_wrong_protocol_header_answers_our_header_and_terminates() -> None:
    server = new_server()
    assert server.receive_data(b"GET / HT", 0) == [ConnectionTerminated("bad protocol header")]
    assert server.data_to_send() == PROTOCOL_HEADER
    assert server.terminated
    assert server.receive_data(b"more", 1) == []


def test_amqp_1_0_header_is_refused() -> None:
    server = new_server()
    events = server.receive_data(b"AMQP\x00\x01\x00\x00", 0)
    assert isinstance(events[0], ConnectionTerminated)
    assert server.data_to_send() == PROTOCOL_HEADER


def test_header_in_pieces() -> None:
    server = new_server()
    assert server.receive_data(b"AMQ", 0) == []
    assert server.data_to_send() == b""
    assert server.receive_data(b"P\x00\x00\x09\x01", 0) == []
    f = frames(server)
    assert isinstance(f[0][1], commands.Connection.Start)


def _started(client: ClientPeer) -> tuple:
    server = new_server()
    server.receive_data(client.start(), 0)
    _, reply = client.receive_data(server.data_to_send())
    return server, reply


def test_unknown_mechanism_closes_silently() -> None:
    client = ClientPeer(mechanism="EXTERNAL")
    server, reply = _started(client)
    events = server.receive_data(reply, 0)
    assert isinstance(events[-1], ConnectionTerminated)
    assert server.data_to_send() == b""


def test_bad_plain_response_closes_silently() -> None:
    server = new_server()
    server.receive_data(PROTOCOL_HEADER, 0)
    server.data_to_send()
    bad = method(0, commands.Connection.StartOk(client_properties={}, mechanism="PLAIN", response="guest:guest"))
    events = server.receive_data(bad, 0)
    assert isinstance(events[-1], ConnectionTerminated)
    assert server.data_to_send() == b""


def test_refuse_login_with_capability_sends_403() -> None:
    client = ClientPeer()
    server, reply = _started(client)
    server.receive_data(reply, 0)
    events = server.refuse_login()
    assert isinstance(events[0], ConnectionTerminated)
    close = close_of(server)
    assert close.reply_code == 403
    assert close.reply_text == ("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
                                "For details see the broker logfile.")
    assert server.terminated


def test_refuse_login_without_capability_is_silent() -> None:
    client = ClientPeer(client_properties={"product": "old"})
    server, reply = _started(client)
    server.receive_data(reply, 0)
    server.refuse_login()
    assert server.data_to_send() == b""
    assert server.terminated


def test_frames_wait_while_login_is_decided() -> None:
    client = ClientPeer()
    server, reply = _started(client)
    # client pipelines tune-ok + open before the server even answered (impatient client)
    pipelined = reply + method(0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=60)) \
        + method(0, commands.Connection.Open(virtual_host="/v"))
    events = server.receive_data(pipelined, 0)
    assert [type(e) for e in events] == [ConnectionStartOk]
    server.accept_login()
    events = server.receive_data(b"", 0)
    assert events == [ConnectionOpen("/v")]


def test_connection_close_from_client() -> None:
    server, _client, _ = handshake()
    events = server.receive_data(method(0, commands.Connection.Close(reply_code=200, reply_text="bye",
                                                                     class_id=0, method_id=0)), 1)
    assert [type(e).__name__ for e in events] == ["ConnectionCloseReceived", "ConnectionTerminated"]
    assert events[0].reply_code == 200 and events[0].reply_text == "bye"
    assert isinstance(frames(server)[0][1], commands.Connection.CloseOk)


def test_server_close_waits_for_close_ok() -> None:
    server, client, _ = handshake()
    server.close_connection(320, "CONNECTION_FORCED - shutdown")
    assert server.closing
    close = close_of(server)
    assert (close.reply_code, close.reply_text) == (320, "CONNECTION_FORCED - shutdown")
    # everything but close-ok is ignored
    assert server.receive_data(client.open_channel(1), 1) == []
    assert server.data_to_send() == b""
    events = server.receive_data(method(0, commands.Connection.CloseOk()), 1)
    assert events == [ConnectionTerminated("connection closed")]


def test_close_crossing_close() -> None:
    server, _client, _ = handshake()
    server.close_connection(320, "CONNECTION_FORCED - x")
    server.data_to_send()
    events = server.receive_data(method(0, commands.Connection.Close(reply_code=200, reply_text="bye",
                                                                     class_id=0, method_id=0)), 1)
    assert isinstance(events[-1], ConnectionTerminated)
    assert isinstance(frames(server)[0][1], commands.Connection.CloseOk)


def test_blocked_unblocked() -> None:
    server, _, _ = handshake()
    server.send_blocked("low on memory")
    server.send_unblocked()
    f = frames(server)
    assert isinstance(f[0][1], commands.Connection.Blocked) and f[0][1].reason == "low on memory"
    assert isinstance(f[1][1], commands.Connection.Unblocked)
