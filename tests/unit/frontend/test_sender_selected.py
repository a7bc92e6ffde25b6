"""Sender-selected distribution in the AMQP 0-9-1 front end (frontends/amqp091/sender_selected.py): CC and BCC
add routing keys, BCC is cut out of the property block byte for byte, a header of the wrong type is RabbitMQ
3.10's 406, and a publish without them keeps its property block as it came."""

from __future__ import annotations

from typing import Any

import pytest
from pamqp import commands, header

from mailslot.core.errors import PreconditionFailed
from mailslot.frontends.amqp091 import sender_selected
from mailslot.protocols.amqp091 import properties as props
from mailslot.protocols.amqp091.peer import method

from .test_frontend_semantics import Wire


def _raw(**kwargs: Any) -> bytes:
    return props.encode_properties(commands.Basic.Properties(**kwargs))


def test_cc_and_bcc_add_keys_and_only_bcc_is_removed() -> None:
    raw = _raw(content_type="text/plain", headers={"a": 1, "CC": ["x", "y"], "BCC": ["z"], "b": "B"}, priority=3)
    keys, kept = sender_selected.read(raw)
    assert keys == ("x", "y", "z")
    # Byte for byte what an encoder writes without BCC: other fields and the header order untouched.
    assert kept == _raw(content_type="text/plain", headers={"a": 1, "CC": ["x", "y"], "b": "B"}, priority=3)


def test_bcc_alone_leaves_an_empty_table() -> None:
    keys, kept = sender_selected.read(_raw(headers={"BCC": ["z"]}, delivery_mode=2))
    assert keys == ("z",)
    assert props.headers(kept) == {}  # as RabbitMQ's strip_header: the table stays, empty
    assert props.delivery_mode(kept) == 2


def test_a_block_without_the_headers_is_returned_as_it_is() -> None:
    raw = _raw(headers={"ACCOUNT": "CC"})  # the marker bytes appear, the headers do not
    keys, kept = sender_selected.read(raw)
    assert keys == ()
    assert kept is raw


def test_array_elements_that_are_not_strings_are_skipped() -> None:
    assert sender_selected.read(_raw(headers={"CC": ["a", 5, True, "b"]}))[0] == ("a", "b")


@pytest.mark.parametrize(
    ("headers", "text"),
    [
        ({"CC": "q"}, 'invalid message: {unacceptable_type_in_header,"CC",longstr}'),
        ({"BCC": "q"}, 'invalid message: {unacceptable_type_in_header,"BCC",longstr}'),
        ({"CC": "q", "BCC": 7}, 'invalid message: {unacceptable_type_in_header,"CC",longstr}'),  # CC first
        ({"CC": ["ok"], "BCC": {"t": 1}}, 'invalid message: {unacceptable_type_in_header,"BCC",table}'),
    ],
)
def test_a_header_that_is_no_array_is_refused_as_rabbitmq_does(headers: dict[str, Any], text: str) -> None:
    with pytest.raises(PreconditionFailed) as raised:
        sender_selected.read(_raw(headers=headers))
    assert str(raised.value) == text


# ---- through the front end -------------------------------------------------------------------------


def _open(wire: Wire, queues: tuple[str, ...]) -> None:
    wire.handshake()
    setup = wire.client.open_channel(1)
    for name in queues:
        setup += method(1, commands.Queue.Declare(queue=name))
        setup += method(1, commands.Queue.Bind(queue=name, exchange="amq.direct", routing_key=name))
    wire.send(setup)


def _get(wire: Wire, queue: str) -> tuple[commands.Basic.GetOk, commands.Basic.Properties] | None:
    frames = wire.send(method(1, commands.Basic.Get(queue=queue, no_ack=True)))
    got = [f for _, f in frames if isinstance(f, commands.Basic.GetOk)]
    if not got:
        return None
    content = [f for _, f in frames if isinstance(f, header.ContentHeader)]
    return got[0], content[0].properties


def test_publish_reaches_cc_and_bcc_queues_without_bcc_and_with_its_own_key() -> None:
    wire = Wire()
    _open(wire, ("main", "copy", "hidden", "other"))
    properties = commands.Basic.Properties(headers={"CC": ["copy"], "BCC": ["hidden"], "h": "v"})
    wire.send(wire.client.publish(1, "amq.direct", "main", b"m", properties))
    for queue in ("main", "copy", "hidden"):
        got = _get(wire, queue)
        assert got is not None, queue
        get_ok, delivered = got
        assert get_ok.routing_key == "main"
        assert delivered.headers == {"CC": ["copy"], "h": "v"}
    assert _get(wire, "other") is None


def test_a_mandatory_publish_routed_only_by_cc_is_not_returned() -> None:
    wire = Wire()
    _open(wire, ("copy",))
    properties = commands.Basic.Properties(headers={"CC": ["copy"]})
    frames = wire.send(wire.client.publish(1, "amq.direct", "nowhere", b"m", properties, mandatory=True))
    assert not any(isinstance(f, commands.Basic.Return) for _, f in frames)
    assert _get(wire, "copy") is not None


def test_a_publish_without_cc_keeps_its_property_block() -> None:
    wire = Wire()
    _open(wire, ("main",))
    properties = commands.Basic.Properties(headers={"CCX": "not a routing header"}, message_id="m1")
    wire.send(wire.client.publish(1, "amq.direct", "main", b"m", properties))
    queue = wire.core.vhosts["/"].queues["main"]
    entry = queue.pop_ready()
    assert entry is not None
    assert entry.message.properties == props.encode_properties(properties)


def test_a_longstr_cc_closes_the_channel_with_406_and_a_missing_exchange_is_404_first() -> None:
    wire = Wire()
    _open(wire, ("main",))
    bad = commands.Basic.Properties(headers={"CC": "main"})
    frames = wire.send(wire.client.publish(1, "amq.direct", "main", b"m", bad))
    closes = [f for _, f in frames if isinstance(f, commands.Channel.Close)]
    assert [(c.reply_code, c.reply_text) for c in closes] == [
        (406, 'PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,"CC",longstr}')
    ]
    wire.send(method(1, commands.Channel.CloseOk()) + wire.client.open_channel(2))
    frames = wire.send(wire.client.publish(2, "missing", "main", b"m", bad))
    closes = [f for _, f in frames if isinstance(f, commands.Channel.Close)]
    assert [c.reply_code for c in closes] == [404]
