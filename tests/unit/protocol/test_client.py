"""The sans-IO ClientConnection against the sans-IO ServerConnection over an in-memory wire (h2 style),
plus its hand-written deliver/confirm decoding checked against pamqp-encoded frames."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import body, commands, header
from pamqp import frame as pframe

from mailslot.protocols.amqp091 import (
    AckReceived,
    ChannelOpened,
    ConnectionOpen,
    ConnectionStartOk,
    ContentReceived,
    MethodReceived,
    ServerConnection,
    properties,
)
from mailslot.protocols.amqp091.client import ClientConnection, ClientProtocolError
from mailslot.protocols.amqp091.events import (
    ChannelCloseReceived,
    Confirm,
    Connected,
    ConnectionCloseReceived,
    ConnectionTerminated,
    Delivery,
)

from .helpers import new_server


def pump(client: ClientConnection, server: ServerConnection) -> tuple[list, list]:
    """Move bytes both ways until quiet; returns (server events, client events)."""
    s_events: list = []
    c_events: list = []
    for _ in range(20):
        data = client.data_to_send()
        if data:
            s_events += server.receive_data(data, 0.0)
        back = server.data_to_send()
        if back:
            c_events += client.receive_data(back)
        if not data and not back:
            break
    return s_events, c_events


def connected(**kw: object) -> tuple[ClientConnection, ServerConnection]:
    server = new_server(frame_max=kw.pop("server_frame_max", 131072))  # type: ignore[arg-type]
    client = ClientConnection("guest", "secret", "/v", **kw)  # type: ignore[arg-type]
    client.initiate()
    s_events, _ = pump(client, server)
    start_ok = s_events[-1]
    assert isinstance(start_ok, ConnectionStartOk)
    assert (start_ok.mechanism, start_ok.username, start_ok.password) == ("PLAIN", "guest", "secret")
    server.accept_login()
    s_events, c_events = pump(client, server)
    assert isinstance(s_events[-1], ConnectionOpen) and s_events[-1].virtual_host == "/v"
    assert c_events == []
    server.accept_open()
    _, c_events = pump(client, server)
    assert len(c_events) == 1 and isinstance(c_events[0], Connected)
    assert client.is_open
    return client, server


def test_handshake_negotiates_lower_frame_max() -> None:
    client, server = connected(frame_max=0, server_frame_max=65536)
    assert client.frame_max == 65536 == server.frame_max
    assert server.heartbeat == 0  # the client asks for no heartbeats


def test_channel_setup_methods_reach_server_as_pamqp_methods() -> None:
    client, server = connected()
    client.open_channel(1)
    client.confirm_select(1)
    client.basic_qos(1, 1000)
    client.queue_declare(1, "q1", durable=True)
    client.basic_consume(1, "q1", "ctag", no_ack=False)
    s_events, first = pump(client, server)
    assert isinstance(s_events[0], ChannelOpened)
    methods = [e.method for e in s_events[1:]]
    assert [type(m) for m in methods] == [commands.Confirm.Select, commands.Basic.Qos, commands.Queue.Declare,
                                          commands.Basic.Consume]
    assert methods[1].prefetch_count == 1000
    assert methods[2].queue == "q1" and methods[2].durable
    assert methods[3].consumer_tag == "ctag"
    server.send_method(1, commands.Confirm.SelectOk())
    server.send_method(1, commands.Queue.DeclareOk(queue="q1", message_count=3, consumer_count=0))
    _, c_events = pump(client, server)
    c_events = first + c_events
    assert [type(e) for e in c_events] == [MethodReceived, MethodReceived, MethodReceived]
    assert isinstance(c_events[0].method, commands.Channel.OpenOk)
    assert c_events[2].method.message_count == 3


@pytest.mark.parametrize("size", [16, 256, 4096, 200_000])
def test_batch_publish_stamped_and_confirms(size: int) -> None:
    client, server = connected()
    client.open_channel(1)
    client.confirm_select(1)
    pump(client, server)
    props = commands.Basic.Properties(delivery_mode=2, content_type="application/octet-stream")
    template = client.publish_template(1, "", "q1", b"x" * size, properties=props, stamp_size=16)
    stamp = struct.Struct(">QQ")
    assert client.publish_stamped(template, [stamp.pack(1000 + i, i) for i in range(50)]) == 50
    assert client.publish(template, 3) == 53
    s_events, _ = pump(client, server)
    contents = [e for e in s_events if isinstance(e, ContentReceived)]
    assert len(contents) == 53
    for i, e in enumerate(contents[:50]):
        assert e.body[:16] == stamp.pack(1000 + i, i)
        assert e.body[16:] == b"x" * (size - 16)
        assert e.method.routing_key == "q1" and e.method.exchange == ""
        assert properties.delivery_mode(e.properties) == 2
    assert all(e.body == b"x" * size for e in contents[50:])
    server.send_ack(1, 10, True)
    server.send_nack(1, 11, False)
    server.send_ack(1, 53, True)
    _, c_events = pump(client, server)
    assert [(e.delivery_tag, e.multiple, e.ack) for e in c_events] == [(10, True, True), (11, False, False),
                                                                         (53, True, True)]
    assert all(isinstance(e, Confirm) and e.channel == 1 for e in c_events)


@pytest.mark.parametrize("size", [0, 5, 131072 * 2 + 17])
def test_deliveries_and_multi_ack(size: int) -> None:
    client, server = connected()
    client.open_channel(1)
    pump(client, server)
    raw = properties.encode_properties(commands.Basic.Properties(delivery_mode=2, headers={"k": "v"}))
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    for tag in range(1, 6):
        server.send_deliver(1, "ctag-é", tag, tag == 3, "amq.direct", f"rk{tag}", raw, payload)
    data = server.data_to_send()
    events = []
    for i in range(0, len(data), 977):  # split anywhere: partial frames stay as the tail
        events += client.receive_data(data[i:i + 977])
    assert len(events) == 5
    for tag, e in enumerate(events, 1):
        assert isinstance(e, Delivery)
        assert (e.channel, e.consumer_tag, e.delivery_tag, e.redelivered, e.exchange, e.routing_key) == (
            1, "ctag-é", tag, tag == 3, "amq.direct", f"rk{tag}")
        assert e.properties == raw and e.body == payload and type(e.body) is bytes
    client.basic_ack(1, 5, multiple=True)
    s_events, _ = pump(client, server)
    (ack,) = s_events
    assert isinstance(ack, AckReceived) and ack.delivery_tag == 5 and ack.multiple


def test_deliver_decoding_matches_pamqp_encoding() -> None:
    client = ClientConnection()
    client.open_channel(7)
    client.data_to_send()
    deliver = commands.Basic.Deliver(consumer_tag="amq.ctag-X", delivery_tag=2**40 + 1, redelivered=True,
                                     exchange="ex", routing_key="a.b.c")
    props = commands.Basic.Properties(content_type="text/plain")
    wire = (pframe.marshal(deliver, 7) + pframe.marshal(header.ContentHeader(0, 3, props), 7)
            + pframe.marshal(body.ContentBody(b"abc"), 7)
            + pframe.marshal(commands.Basic.Ack(delivery_tag=9, multiple=True), 7)
            + pframe.marshal(commands.Basic.Nack(delivery_tag=10, multiple=False, requeue=False), 7))
    d, a, n = client.receive_data(wire)
    assert isinstance(d, Delivery)
    assert (d.consumer_tag, d.delivery_tag, d.redelivered, d.exchange, d.routing_key, d.body) == (
        "amq.ctag-X", 2**40 + 1, True, "ex", "a.b.c", b"abc")
    assert properties.decode_properties(d.properties).content_type == "text/plain"
    assert (a.delivery_tag, a.multiple, a.ack) == (9, True, True)
    assert (n.delivery_tag, n.multiple, n.ack) == (10, False, False)


def test_basic_return_and_get_ok_are_content_events() -> None:
    client, server = connected()
    client.open_channel(1)
    pump(client, server)
    server.send_content(1, commands.Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="",
                                                 routing_key="nowhere"), b"\x00\x00", b"hi")
    server.send_get_ok(1, 4, False, "", "q", 0, b"\x00\x00", b"got")
    _, events = pump(client, server)
    assert [type(e) for e in events] == [ContentReceived, ContentReceived]
    assert isinstance(events[0].method, commands.Basic.Return) and events[0].body == b"hi"
    assert isinstance(events[1].method, commands.Basic.GetOk) and events[1].body == b"got"


def test_server_closes_channel_and_connection() -> None:
    client, server = connected()
    client.open_channel(1)
    pump(client, server)
    server.close_channel(1, 404, "NOT_FOUND - no queue 'x'", 50, 10)
    _, c_events = pump(client, server)
    assert len(c_events) == 1 and isinstance(c_events[0], ChannelCloseReceived)
    assert (c_events[0].reply_code, c_events[0].class_id, c_events[0].method_id) == (404, 50, 10)
    server.close_connection(320, "CONNECTION_FORCED - shutdown")
    _s_events, c_events = pump(client, server)
    assert [type(e) for e in c_events] == [ConnectionCloseReceived, ConnectionTerminated]
    assert c_events[0].reply_code == 320 and client.closed and server.terminated


def test_client_close_gets_close_ok() -> None:
    client, server = connected()
    client.close()
    _s_events, c_events = pump(client, server)
    assert [type(e) for e in c_events] == [ConnectionTerminated] and client.closed


def test_bad_frame_end_is_a_protocol_error() -> None:
    client = ClientConnection()
    with pytest.raises(ClientProtocolError):
        client.receive_data(b"\x08\x00\x00\x00\x00\x00\x00\x00")


def _deliver_frames(channel: int, tag: int = 1) -> bytes:
    deliver = commands.Basic.Deliver(consumer_tag="c", delivery_tag=tag, redelivered=False, exchange="",
                                     routing_key="q")
    return (pframe.marshal(deliver, channel)
            + pframe.marshal(header.ContentHeader(0, 2, commands.Basic.Properties()), channel)
            + pframe.marshal(body.ContentBody(b"hi"), channel))


@pytest.mark.parametrize("frame", [
    pytest.param(lambda: _deliver_frames(3), id="basic.deliver"),
    pytest.param(lambda: pframe.marshal(commands.Basic.Ack(delivery_tag=1), 3), id="basic.ack"),
    pytest.param(lambda: pframe.marshal(commands.Basic.QosOk(), 3), id="basic.qos-ok"),
    pytest.param(lambda: pframe.marshal(body.ContentBody(b"x"), 3), id="body frame"),
])
def test_frame_on_a_channel_that_is_not_open_is_a_protocol_error(frame) -> None:
    # Documented: a frame on a channel that is not open is the server's fault (it used to be a KeyError).
    client = ClientConnection()
    client.open_channel(1)
    client.data_to_send()
    assert [type(e) for e in client.receive_data(_deliver_frames(1))] == [Delivery]
    with pytest.raises(ClientProtocolError, match="channel 3, which is not open"):
        client.receive_data(frame())


def test_channel_is_gone_after_close_ok_and_after_the_servers_close() -> None:
    client, server = connected()
    client.open_channel(1)
    client.open_channel(2)
    pump(client, server)
    client.close_channel(1)
    server.close_channel(2, 404, "NOT_FOUND - no queue 'x'", 50, 10)
    _, c_events = pump(client, server)
    assert [type(e) for e in c_events] == [ChannelCloseReceived, MethodReceived]
    assert isinstance(c_events[1].method, commands.Channel.CloseOk)
    for channel in (1, 2):  # each raise drops only the frames of its own receive_data call
        with pytest.raises(ClientProtocolError, match=f"channel {channel}, which is not open"):
            client.receive_data(_deliver_frames(channel))


def test_content_out_of_order_is_a_protocol_error() -> None:
    client = ClientConnection()
    client.open_channel(1)
    deliver = commands.Basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="", routing_key="q")
    with pytest.raises(ClientProtocolError, match="expected content header"):
        client.receive_data(pframe.marshal(deliver, 1) + pframe.marshal(commands.Basic.QosOk(), 1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 400), max_size=30), st.sampled_from([4096, 131072]))
def test_any_split_of_the_stream_gives_the_same_client_events(cuts: list[int], frame_max: int) -> None:
    # The client reads with the server's frame reader: same guarantee, checked the same way.
    server = new_server(frame_max=frame_max)
    server.frame_max = frame_max
    for tag in range(1, 4):
        server.send_deliver(1, "ctag", tag, tag == 2, "ex", "rk", b"\x00\x00", bytes([tag]) * 5000 * tag)
    server.send_ack(1, 7, True)
    server.send_get_ok(1, 4, False, "", "q", 3, b"\x10\x00\x02", b"")
    server.send_nack(1, 8, False)
    wire = server.data_to_send()

    def events_of(chunks: list[bytes]) -> list:
        client = ClientConnection(frame_max=frame_max)
        client.open_channel(1)
        out: list = []
        for chunk in chunks:
            out += client.receive_data(chunk)
        return out

    whole = events_of([wire])
    chunks, at = [], 0
    for cut in cuts:
        chunks.append(wire[at:at + cut])
        at += cut
    chunks.append(wire[at:])
    assert events_of(chunks) == whole
    assert [type(e) for e in whole] == [Delivery, Delivery, Delivery, Confirm, ContentReceived, Confirm]
    assert [len(e.body) for e in whole[:3]] == [5000, 10000, 15000]
    assert (whole[3].ack, whole[5].ack) == (True, False)
