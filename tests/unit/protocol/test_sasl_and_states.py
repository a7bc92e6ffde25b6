"""SASL mechanisms as a pluggable module, reply codes as an IntEnum, and the channel-0 state table."""

from __future__ import annotations

import pytest
from pamqp import commands

from mailslot.protocols.amqp091 import (
    PROTOCOL_HEADER,
    ConnectionStartOk,
    ConnectionTerminated,
    ReplyCode,
    State,
    is_hard,
    reply_text,
)
from mailslot.protocols.amqp091.peer import ClientPeer, method
from mailslot.protocols.amqp091.sasl import (
    AMQPlain,
    Credentials,
    Plain,
    amqplain_response,
    plain_response,
)

from .helpers import close_of, frames, handshake, new_server


@pytest.mark.parametrize(("raw", "expected"), [
    (b"\0guest\0guest", Credentials("guest", "guest")),
    (b"\0\0", Credentials("", "")),
    (b"authz\0guest\0guest", None),  # RabbitMQ ignores no authorisation identity: it refuses it
    (b"guest\0guest", None),
    (b"\0guest\0gu\0est", None),
    (b"\0\xff\0x", None),
])
def test_plain(raw: bytes, expected: Credentials | None) -> None:
    assert Plain().decode(raw) == expected


def test_amqplain_round_trip_and_garbage() -> None:
    assert AMQPlain().decode(amqplain_response("alice", "pw").encode()) == Credentials("alice", "pw")
    assert AMQPlain().decode(b"\x05LOGINS\x00\x00") is None  # truncated table
    assert AMQPlain().decode(b"") is None  # no LOGIN / PASSWORD
    assert Plain().decode(plain_response("bob", "x").encode()) == Credentials("bob", "x")


class _External:
    """A stand-in for SASL EXTERNAL: the identity comes from elsewhere (a TLS certificate)."""

    name = "EXTERNAL"

    def decode(self, response: bytes) -> Credentials | None:
        return Credentials("", None) if response == b"" else None


def test_a_new_mechanism_is_offered_and_decoded() -> None:
    server = new_server(mechanisms=(_External(), Plain()))
    server.receive_data(PROTOCOL_HEADER, 0)
    ((_, start),) = frames(server)
    assert start.mechanisms == "EXTERNAL PLAIN"
    events = server.receive_data(method(0, commands.Connection.StartOk(
        client_properties={}, mechanism="EXTERNAL", response="", locale="en_US")), 0)
    assert events == [ConnectionStartOk("EXTERNAL", "", None, {}, "en_US")]
    assert server.state is State.SECURING


def test_a_mechanism_not_offered_closes_silently() -> None:
    server = new_server(mechanisms=(Plain(),))
    server.receive_data(PROTOCOL_HEADER, 0)
    server.data_to_send()
    client = ClientPeer(mechanism="AMQPLAIN")
    events = server.receive_data(method(0, commands.Connection.StartOk(
        client_properties={}, mechanism="AMQPLAIN", response=client.response(), locale="en_US")), 0)
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert server.data_to_send() == b""


def test_reply_codes() -> None:
    assert ReplyCode.NOT_FOUND == 404 and ReplyCode(530) is ReplyCode.NOT_ALLOWED
    assert ReplyCode.NOT_FOUND.text("no queue 'q'") == "NOT_FOUND - no queue 'q'" == reply_text(404, "no queue 'q'")
    assert reply_text(999, "odd") == "999 - odd"
    soft = {c for c in ReplyCode if not c.is_hard}
    assert soft == {ReplyCode.CONTENT_TOO_LARGE, ReplyCode.NO_ROUTE, ReplyCode.NO_CONSUMERS,
                    ReplyCode.ACCESS_REFUSED, ReplyCode.NOT_FOUND, ReplyCode.RESOURCE_LOCKED,
                    ReplyCode.PRECONDITION_FAILED}
    assert is_hard(ReplyCode.CHANNEL_ERROR) and not is_hard(404) and is_hard(999)
    assert f"{ReplyCode.NOT_FOUND}" == "404"  # formats as the number it is on the wire


def test_states_through_the_handshake() -> None:
    server = new_server()
    assert server.state is State.HEADER
    client = ClientPeer()
    server.receive_data(client.start(), 0)
    assert server.state is State.STARTING
    _, reply = client.receive_data(server.data_to_send())
    server.receive_data(reply, 0)
    assert server.state is State.SECURING
    with pytest.raises(RuntimeError, match="accept_open"):
        server.accept_open()  # the host's decisions are checked against the table too
    server.accept_login()
    assert server.state is State.TUNING
    _, reply = client.receive_data(server.data_to_send())
    server.receive_data(reply, 0)
    assert server.state is State.OPEN_PENDING
    server.accept_open()
    assert server.state is State.RUNNING
    server.close_connection(320, "CONNECTION_FORCED - bye")
    assert server.state is State.CLOSING
    server.receive_data(method(0, commands.Connection.CloseOk()), 0)
    assert server.state is State.TERMINATED


@pytest.mark.parametrize(("wrong", "state_name"), [
    (commands.Connection.Open(virtual_host="/"), "running"),
    (commands.Connection.TuneOk(channel_max=0, frame_max=0, heartbeat=0), "running"),
    (commands.Connection.StartOk(client_properties={}, mechanism="PLAIN", response="\0a\0b"), "running"),
])
def test_a_method_outside_the_table_is_504_with_the_state_name(wrong: commands.Connection.Open,
                                                                 state_name: str) -> None:
    server, _, _ = handshake()
    server.receive_data(method(0, wrong), 0)
    close = close_of(server)
    assert (close.reply_code, close.reply_text) == (504, f"CHANNEL_ERROR - unexpected method in connection "
                                                         f"state {state_name}")
    assert (close.class_id, close.method_id) == (wrong.index >> 16, wrong.index & 0xFFFF)
    assert server.state is State.CLOSING


def test_a_method_outside_the_table_before_tune_ok_closes_silently() -> None:
    server = new_server()
    server.receive_data(PROTOCOL_HEADER, 0)
    server.data_to_send()
    events = server.receive_data(method(0, commands.Connection.Open(virtual_host="/")), 0)
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert server.data_to_send() == b"" and server.state is State.TERMINATED
