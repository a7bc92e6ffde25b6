"""Every protocol error a peer can provoke, with RabbitMQ 3.10's code and text."""

from __future__ import annotations

import struct

from pamqp import commands, header
from pamqp import frame as pframe

from mailslot.protocols.amqp091 import (
    ChannelCloseReceived,
    ChannelOpened,
    ConnectionTerminated,
    MethodReceived,
    reply_text,
)
from mailslot.protocols.amqp091.peer import ClientPeer, method

from .helpers import channel_close_of, close_of, frames, handshake, new_server


def _running():
    server, client, _ = handshake()
    return server, client


def _open(server, client, ch: int = 1):
    assert server.receive_data(client.open_channel(ch), 0) == [ChannelOpened(ch)]
    assert isinstance(frames(server)[0][1], commands.Channel.OpenOk)


def test_channel_open_close_cycle() -> None:
    server, client = _running()
    _open(server, client, 1)
    assert server.open_channels == {1}
    events = server.receive_data(client.close_channel(1, 200, "bye"), 0)
    assert events == [ChannelCloseReceived(1, 200, "bye")]
    assert isinstance(frames(server)[0][1], commands.Channel.CloseOk)
    assert server.open_channels == set()
    _open(server, client, 1)  # number is free again


def test_method_on_unopened_channel_is_504() -> None:
    server, _client = _running()
    server.receive_data(method(3, commands.Basic.Qos(prefetch_count=1)), 0)
    close = close_of(server)
    assert close.reply_code == 504
    assert close.reply_text == "CHANNEL_ERROR - expected 'channel.open'"
    assert (close.class_id, close.method_id) == (60, 10)
    assert server.closing


def test_second_channel_open_is_504() -> None:
    server, client = _running()
    _open(server, client)
    server.receive_data(client.open_channel(1), 0)
    close = close_of(server)
    assert (close.reply_code, close.reply_text) == (504, "CHANNEL_ERROR - second 'channel.open' seen")
    assert (close.class_id, close.method_id) == (20, 10)


def test_channel_max_counts_channels_530() -> None:
    server, client, _ = handshake(client=ClientPeer(channel_max=2))
    _open(server, client, 1)
    _open(server, client, 7)  # RabbitMQ limits the count of channels, not their numbers
    server.receive_data(client.open_channel(9), 0)
    close = close_of(server)
    assert close.reply_code == 530
    assert close.reply_text == "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"


def test_publish_before_open_during_handshake_is_silent_close() -> None:
    # rabbit_reader: a frame on channel != 0 before 'running' is unexpected_frame; in the tuning state
    # RabbitMQ closes without a word.
    server = new_server()
    client = ClientPeer()
    server.receive_data(client.start(), 0)
    _, reply = client.receive_data(server.data_to_send())
    server.receive_data(reply, 0)
    server.accept_login()
    server.data_to_send()
    events = server.receive_data(client.publish(1, "", "q", b"x"), 0)
    assert isinstance(events[-1], ConnectionTerminated)
    assert server.data_to_send() == b""


def test_publish_after_tune_ok_before_open_is_505() -> None:
    server = new_server()
    client = ClientPeer()
    server.receive_data(client.start(), 0)
    _, reply = client.receive_data(server.data_to_send())
    server.receive_data(reply, 0)
    server.accept_login()
    server.data_to_send()
    tune_ok = method(0, commands.Connection.TuneOk(channel_max=10, frame_max=131072, heartbeat=0))
    server.receive_data(tune_ok + client.publish(1, "", "q", b"x"), 0)
    close = close_of(server)
    assert close.reply_code == 505
    assert close.reply_text.startswith("UNEXPECTED_FRAME - type 1, all octets = <<")


def test_unexpected_connection_method_while_running_is_504() -> None:
    server, _client = _running()
    server.receive_data(method(0, commands.Connection.Open(virtual_host="/")), 0)
    close = close_of(server)
    assert close.reply_code == 504
    assert close.reply_text == "CHANNEL_ERROR - unexpected method in connection state running"
    assert (close.class_id, close.method_id) == (10, 40)


def _tuning():
    server = new_server()
    client = ClientPeer()
    server.receive_data(client.start(), 0)
    _, reply = client.receive_data(server.data_to_send())
    server.receive_data(reply, 0)
    server.accept_login()
    server.data_to_send()
    return server


def test_tune_ok_frame_max_too_big_is_530() -> None:
    server = _tuning()
    server.receive_data(method(0, commands.Connection.TuneOk(channel_max=10, frame_max=200000, heartbeat=0)), 0)
    close = close_of(server)
    assert close.reply_code == 530
    assert close.reply_text == ("NOT_ALLOWED - negotiated frame_max = 200000 is higher than the maximum "
                                "allowed value (131072)")
    assert (close.class_id, close.method_id) == (10, 30)


def test_tune_ok_frame_max_zero_is_530() -> None:
    server = _tuning()
    server.receive_data(method(0, commands.Connection.TuneOk(channel_max=10, frame_max=0, heartbeat=0)), 0)
    assert close_of(server).reply_text == ("NOT_ALLOWED - negotiated frame_max = 0 is higher than the maximum "
                                           "allowed value (131072)")


def test_tune_ok_frame_max_too_small_is_530() -> None:
    server = _tuning()
    server.receive_data(method(0, commands.Connection.TuneOk(channel_max=10, frame_max=1000, heartbeat=0)), 0)
    assert close_of(server).reply_text == ("NOT_ALLOWED - negotiated frame_max = 1000 is lower than the minimum "
                                           "allowed value (4096)")


def test_tune_ok_channel_max_zero_is_530() -> None:
    server = _tuning()
    server.receive_data(method(0, commands.Connection.TuneOk(channel_max=0, frame_max=4096, heartbeat=0)), 0)
    assert close_of(server).reply_text == ("NOT_ALLOWED - negotiated channel_max = 0 (no limit) is higher than "
                                           "the maximum allowed value (2047)")


def test_frame_over_4096_before_tune_is_fatal_501() -> None:
    server = new_server()
    server.receive_data(b"AMQP\x00\x00\x09\x01", 0)
    server.data_to_send()
    big = method(0, commands.Connection.StartOk(client_properties={"x": "y" * 5000}, mechanism="PLAIN",
                                                response="\0a\0b"))
    events = server.receive_data(big, 0)
    assert isinstance(events[-1], ConnectionTerminated)
    # still in the handshake: RabbitMQ does not answer, it closes.
    assert server.data_to_send() == b""


def test_frame_over_frame_max_is_fatal_501() -> None:
    server, client, _ = handshake(client=ClientPeer(frame_max=8192))
    _open(server, client)
    data = struct.pack(">BHI", 3, 1, 9000) + b"\0" * 9000 + b"\xce"
    events = server.receive_data(data, 0)
    assert isinstance(events[-1], ConnectionTerminated)
    close = close_of(server)
    assert close.reply_code == 501
    assert close.reply_text == "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,9000,8184}"


def test_frame_exactly_frame_max_is_accepted() -> None:
    # rabbit_reader allows FrameMax - 8 + ?FRAME_SIZE_FUDGE (8) octets of payload.
    server, client, _ = handshake(client=ClientPeer(frame_max=8192))
    _open(server, client)
    body = b"z" * 8192
    data = client.publish(1, "", "q", b"")[:-0 or None]
    pub = pframe.marshal(commands.Basic.Publish(routing_key="q"), 1)
    hdr = pframe.marshal(header.ContentHeader(0, len(body), commands.Basic.Properties()), 1)
    raw = struct.pack(">BHI", 3, 1, len(body)) + body + b"\xce"
    events = server.receive_data(pub + hdr + raw, 0)
    assert events[-1].body == body
    del data


def test_wrong_frame_end_is_fatal_501() -> None:
    server, client = _running()
    bad = bytearray(client.open_channel(1))
    bad[-1] = 0
    events = server.receive_data(bytes(bad), 0)
    assert isinstance(events[-1], ConnectionTerminated)
    close = close_of(server)
    assert close.reply_code == 501
    assert close.reply_text.startswith("FRAME_ERROR - type 1, all octets = <<0,20,0,10,")
    assert close.reply_text.endswith(": {invalid_frame_end_marker,0}")


def test_unknown_frame_type_is_501() -> None:
    server, _client = _running()
    server.receive_data(struct.pack(">BHI", 9, 0, 3) + b"abc\xce", 0)
    close = close_of(server)
    assert (close.reply_code, close.reply_text) == (501, 'FRAME_ERROR - type 9, all octets = <<"abc">>: unknown_frame')


def test_heartbeat_on_channel_is_505() -> None:
    server, _client = _running()
    server.receive_data(b"\x08\x00\x01\x00\x00\x00\x00\xce", 0)
    close = close_of(server)
    assert (close.reply_code, close.reply_text) == (505, "UNEXPECTED_FRAME - type 8, all octets = <<>>")


def test_unknown_method_id_drops_connection() -> None:
    # RabbitMQ's lookup_method_name exits {unknown_method_id, Id}: the connection dies without a close.
    server, client = _running()
    _open(server, client)
    payload = struct.pack(">HH", 60, 99)
    events = server.receive_data(struct.pack(">BHI", 1, 1, 4) + payload + b"\xce", 0)
    assert isinstance(events[-1], ConnectionTerminated)
    assert server.data_to_send() == b""


def test_undecodable_arguments_is_501() -> None:
    server, client = _running()
    _open(server, client)
    payload = struct.pack(">HH", 60, 10) + b"\x01"  # basic.qos truncated
    server.receive_data(struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce", 0)
    close = close_of(server)
    assert (close.reply_code, close.reply_text) == (501, "FRAME_ERROR - cannot decode <<1>>")
    assert (close.class_id, close.method_id) == (60, 10)


def test_undecodable_publish_is_501() -> None:
    server, client = _running()
    _open(server, client)
    payload = struct.pack(">HH", 60, 40) + b"\x00\x00\x05ab"
    server.receive_data(struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce", 0)
    close = close_of(server)
    assert close.reply_code == 501 and (close.class_id, close.method_id) == (60, 40)


def test_channel_flow() -> None:
    server, client = _running()
    _open(server, client)
    events = server.receive_data(method(1, commands.Channel.Flow(active=True)), 0)
    assert isinstance(events[0], MethodReceived) and events[0].method.active is True
    ok = frames(server)[0]
    assert ok[0] == 1 and isinstance(ok[1], commands.Channel.FlowOk) and ok[1].active is True
    server.receive_data(method(1, commands.Channel.Flow(active=False)), 0)
    close = close_of(server)
    assert (close.reply_code, close.reply_text) == (540, "NOT_IMPLEMENTED - active=false")


def test_server_channel_close_ignores_until_close_ok() -> None:
    server, client = _running()
    _open(server, client)
    server.close_channel(1, 404, reply_text(404, "no queue 'q' in vhost '/'"), 50, 10)
    ch, close = channel_close_of(server)
    assert ch == 1 and close.reply_code == 404 and (close.class_id, close.method_id) == (50, 10)
    assert server.open_channels == set()
    # methods and whole publishes are ignored on a closing channel
    assert server.receive_data(method(1, commands.Basic.Qos(prefetch_count=1)) + client.publish(1, "", "q", b"x"), 0) == []
    # a crossing channel.close is answered with close-ok
    server.receive_data(client.close_channel(1), 0)
    assert isinstance(frames(server)[0][1], commands.Channel.CloseOk)
    assert server.receive_data(method(1, commands.Channel.CloseOk()), 0) == []
    _open(server, client, 1)


def test_garbage_never_raises() -> None:
    import random
    rnd = random.Random(7)
    for _ in range(300):
        server, client = _running()
        blob = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 200)))
        if rnd.random() < 0.5:
            blob = struct.pack(">BHI", rnd.choice([1, 2, 3, 8]), rnd.randint(0, 3), len(blob)) + blob + b"\xce"
        server.receive_data(client.open_channel(1) + blob, 0)
        server.data_to_send()
