"""Pure tests: the sans-IO publish_batch encoding (byte-identical to the pamqp-based template path), heartbeat
negotiation, and the confirm tracker's bookkeeping (out-of-order and multiple acks/nacks)."""

from __future__ import annotations

import asyncio

import pytest
from pamqp import commands

from mailslot.client.confirms import ConfirmTracker
from mailslot.client.errors import ConnectionLost, PublishNacked
from mailslot.client.message import PERSISTENT, build_properties
from mailslot.client.url import ConnectParams
from mailslot.protocols.amqp091.client import ClientConnection
from mailslot.protocols.amqp091.properties import encode_properties


def _client(frame_max: int = 4096) -> ClientConnection:
    c = ClientConnection(frame_max=frame_max)
    c.open_channel(1)
    c.data_to_send()
    return c


@pytest.mark.parametrize("size", [0, 1, 256, 4088, 4089, 20000])
def test_publish_batch_matches_publish_template(size: int) -> None:
    body = bytes(i % 251 for i in range(size))
    props = build_properties(True, headers={"h": 1}, message_id="m")
    a, b = _client(), _client()
    seq = a.publish_batch(1, [("ex", "rk", body), ("", "q", body)], props)
    expected = [b.publish_template(1, "ex", "rk", body, properties=props).whole,
                b.publish_template(1, "", "q", body, properties=props).whole]
    assert seq == 2 and a.publish_seq(1) == 2
    assert a.data_to_send() == b"".join(expected)
    assert a.publish_raw(1, "ex", "rk", PERSISTENT, b"x") == 3


def test_persistent_block_is_pamqps() -> None:
    assert PERSISTENT == encode_properties(commands.Basic.Properties(delivery_mode=2))


def test_heartbeat_negotiation_is_opt_in() -> None:
    from mailslot.protocols.amqp091 import ServerConnection

    def pump(client: ClientConnection, server: ServerConnection) -> None:
        for _ in range(10):
            data = client.data_to_send()
            if data:
                server.receive_data(data, 0.0)
            back = server.data_to_send()
            if back:
                client.receive_data(back)

    for negotiate, ours, expected in ((False, 0, 0), (True, 0, 60), (True, 10, 10), (True, 600, 60)):
        server = ServerConnection(heartbeat=60, server_properties={"product": "test"})
        client = ClientConnection(heartbeat=ours, negotiate_heartbeat=negotiate)
        client.initiate()
        pump(client, server)
        server.accept_login()
        pump(client, server)
        assert client.heartbeat == expected


def test_url_parsing() -> None:
    p = ConnectParams.parse("amqp://u%40x:p%2Fw@h:5673/v%2Fh?heartbeat=5")
    assert (p.host, p.port, p.username, p.password, p.vhost, p.heartbeat) == ("h", 5673, "u@x", "p/w", "v/h", 5)
    assert ConnectParams.parse("amqp://localhost").vhost == "/"


async def test_confirm_tracker_out_of_order_and_nacks() -> None:
    t = ConfirmTracker()
    t.seq = 6
    a = t.add_waiter(1, 3)
    b = t.add_waiter(4, 4)
    c = t.add_waiter(5, 6)
    t.on_confirm(2, False, True)
    t.on_confirm(3, False, False)  # nack, out of order
    assert not a.done()
    t.on_confirm(1, False, True)
    assert a.done() and isinstance(a.exception(), PublishNacked)
    assert a.exception().indexes == [2]  # type: ignore[union-attr]
    t.on_confirm(6, False, True)
    t.on_confirm(4, True, True)
    assert b.done() and b.result() is None and not c.done()
    t.on_confirm(6, True, False)  # multiple nack: 5 is nacked, 6 was acked before
    assert c.exception().indexes == [0]  # type: ignore[union-attr]
    assert t.in_flight == 0 and not t.nacks


async def test_confirm_tracker_fail() -> None:
    t = ConfirmTracker()
    t.seq = 2
    w = t.add_waiter(1, 2)
    p = t.wait_progress()
    t.fail(ConnectionLost())
    assert isinstance(w.exception(), ConnectionLost) and p.done()
    late = t.add_waiter(3, 3)
    assert isinstance(late.exception(), ConnectionLost)
    await asyncio.sleep(0)
