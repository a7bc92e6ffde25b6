"""Minimal inputs found by the fuzz suites (test_frontend_fuzz.py), kept as explicit tests.

Each FAILS until the broker is fixed (src/ is owned by the broker's maintainers); each docstring says
what happens now, where, and what RabbitMQ does instead. The fuzz suites tolerate the internal errors
listed in harness.KNOWN_BUGS (so they keep finding NEW bugs); remove an entry there once its bug is fixed.
FUZZ_STRICT=1 makes the fuzz suites fail on them too.
"""

from __future__ import annotations

from pamqp import commands

from mailslot.protocols.amqp091 import properties

from .harness import (
    Client,
    InternalErrors,
    Net,
    check_broker_undisturbed,
    make_method,
    method_frame,
    publish_frames,
)


def _open() -> tuple[Net, Client]:
    net = Net()
    c = net.connect()
    c.handshake()
    c.feed(method_frame(1, commands.Channel.Open()))
    return net, c


def _no_internal_error(c: Client, errors: InternalErrors) -> None:
    """No 541 and nothing logged as an internal error, and the connection ends in a sound state: still
    open and round-tripping a message on a fresh channel, or closed with a protocol code and close-ok."""
    codes = [m.reply_code for m in c.connection_closes()]
    assert 541 not in codes and not errors.records, (errors.describe(), c.trace())
    assert c.settle() in {"open", "closed"}, c.trace()


# ------------------------------------------------------------------------------------------ bug 1
# A malformed content-header property block makes Channel.publish (frontends/amqp091.py) call
# properties.delivery_mode() / headers() / decode_properties(), which raise ValueError (or pamqp's
# ValueError / UnicodeDecodeError); the generic `except Exception` in AMQPConnection._handle logs
# "internal error handling Basic.Publish" and closes the connection with 541.


def test_publish_with_empty_property_block_is_not_an_internal_error() -> None:
    """Content header with no property-flags word at all (12-octet payload). Now: 541 (ValueError from
    properties.delivery_mode -> _skip_flag_words). RabbitMQ stores the empty property binary lazily and
    routes the message; at worst a malformed block must get a protocol error code, never 541."""
    with InternalErrors() as errors:
        net, c = _open()
        c.feed(method_frame(1, make_method(commands.Queue.Declare, queue="q"))
               + publish_frames(1, "", "q", b"x", b""))
        _no_internal_error(c, errors)
        check_broker_undisturbed(net)


def test_publish_with_truncated_user_id_property_is_not_an_internal_error() -> None:
    """Property flags 0x0010 (user-id present) with no value. Now: 541 (pamqp "Could not unpack short
    string value" from properties.decode_properties via Channel._check_properties)."""
    with InternalErrors() as errors:
        net, c = _open()
        c.feed(publish_frames(1, "", "nowhere", b"x", b"\x00\x10"))
        _no_internal_error(c, errors)
        check_broker_undisturbed(net)


def test_publish_with_truncated_headers_to_headers_exchange_is_not_an_internal_error() -> None:
    """Flags 0x2000 (headers present) and a table length pointing past the block, routed through a
    headers exchange. Now: 541 (ValueError "headers table exceeds the property block" from
    properties.headers, read by the headers exchange while routing)."""
    with InternalErrors() as errors:
        net, c = _open()
        c.feed(method_frame(1, make_method(commands.Queue.Declare, queue="q"))
               + method_frame(1, make_method(commands.Queue.Bind, queue="q", exchange="amq.headers",
                                             arguments={"k": 1}))
               + publish_frames(1, "amq.headers", "", b"x", b"\x20\x00\x00\x00\x00\x01"))
        _no_internal_error(c, errors)
        check_broker_undisturbed(net)


# ------------------------------------------------------------------------------------------ bug 3
# Replies built with pamqp's validating constructors refuse names RabbitMQ accepts: pamqp checks
# queue/exchange names against ^[a-zA-Z0-9-_.:@#,/+ ]*$. The core has already created the entity /
# routed the message when the reply raises ValueError("Invalid value for ...") -> 541.


def test_declare_queue_with_non_ascii_name() -> None:
    """queue.declare "café". Now: the queue is created, then spec.Queue.DeclareOk(queue=name) in
    Channel.queue_declare raises -> 541. RabbitMQ: declare-ok (queue names are any UTF-8 shortstr)."""
    with InternalErrors() as errors:
        net, c = _open()
        c.feed(method_frame(1, make_method(commands.Queue.Declare, queue="café")))
        assert [f.method.queue for f in c.frames if isinstance(f.method, commands.Queue.DeclareOk)] == ["café"]
        _no_internal_error(c, errors)


def test_mandatory_return_from_non_ascii_exchange() -> None:
    """Unroutable mandatory publish to exchange "café". Now: spec.Basic.Return(exchange=...) in
    Channel.publish raises -> 541. RabbitMQ: basic.return 312 NO_ROUTE."""
    with InternalErrors() as errors:
        net, c = _open()
        c.feed(method_frame(1, make_method(commands.Exchange.Declare, exchange="café", exchange_type="direct"))
               + publish_frames(1, "café", "k", b"x", properties.EMPTY, mandatory=True))
        _no_internal_error(c, errors)
        assert any(isinstance(f.method, commands.Basic.Return) for f in c.frames), c.trace()


def test_basic_get_of_message_from_non_ascii_exchange() -> None:
    """basic.get of a message published through exchange "café". Now: spec.Basic.GetOk(exchange=...) in
    Channel.basic_get raises -> 541 (codec.encode_get_ok_method / ServerConnection.send_get_ok exist for
    exactly this but basic_get does not use them). RabbitMQ: get-ok."""
    with InternalErrors() as errors:
        net, c = _open()
        c.feed(method_frame(1, make_method(commands.Exchange.Declare, exchange="café", exchange_type="fanout"))
               + method_frame(1, make_method(commands.Queue.Declare, queue="q"))
               + method_frame(1, make_method(commands.Queue.Bind, queue="q", exchange="café"))
               + publish_frames(1, "café", "k", b"x", properties.EMPTY)
               + method_frame(1, make_method(commands.Basic.Get, queue="q", no_ack=True)))
        _no_internal_error(c, errors)
        assert any(isinstance(f.method, commands.Basic.GetOk) for f in c.frames), c.trace()


# ------------------------------------------------------------------------------------------ bug 2
# Reply order depends on how the bytes were split into receive() calls. ServerConnection writes its own
# replies (channel.close-ok, channel.flow-ok, connection.close-ok, a connection.close for a bad frame)
# while parsing, but AMQPConnection handles the parsed events only after the whole buffer is parsed, so
# its replies to methods EARLIER in the same buffer come out after them. RabbitMQ answers in order.


def test_close_ok_does_not_overtake_earlier_replies() -> None:
    """queue.delete + channel.close in one buffer. Now: channel.close-ok, then queue.delete-ok on the
    closed channel (clients drop or choke on it). Expected: delete-ok, then close-ok."""
    net, c = _open()
    c.feed(method_frame(1, make_method(commands.Queue.Declare, queue="q")))
    start = len(c.frames)
    c.feed(method_frame(1, make_method(commands.Queue.Delete, queue="q"))
           + method_frame(1, make_method(commands.Channel.Close, reply_code=200, reply_text="bye")))
    assert [f.name for f in c.frames[start:]] == ["Queue.DeleteOk", "Channel.CloseOk"]


def test_close_does_not_overtake_earlier_replies() -> None:
    """tx.select, then a frame of unknown type 0, in one buffer. Now: connection.close 501, then
    tx.select-ok after it (nothing but close-ok may follow a connection.close). Split into two receive()
    calls the same bytes give select-ok, then close. Expected: select-ok, then connection.close 501."""
    net, c = _open()
    start = len(c.frames)
    c.feed(method_frame(1, make_method(commands.Tx.Select)) + b"\x00\x00\x01\x00\x00\x00\x00\xce")
    assert [f.name for f in c.frames[start:]] == ["Tx.SelectOk", "Connection.Close"]


def test_channel_error_before_connection_error_in_same_buffer_is_reported() -> None:
    """basic.ack of an unknown tag, then an undecodable queue.declare, in one buffer. Now: only
    connection.close 501 (the channel.close 406 the front end decides afterwards is dropped since the
    connection is already closing); split across two receive() calls, channel.close 406 comes first.
    Expected (RabbitMQ, in order): channel.close 406 ... then the 501 for the frame that follows."""
    net, c = _open()
    start = len(c.frames)
    bad_declare = b"\x01\x00\x01\x00\x00\x00\x0e\x002\x00\n\x00\x00\x02q1\x00\x01\x00\x00\x00\xce"
    c.feed(method_frame(1, make_method(commands.Basic.Ack, delivery_tag=2)) + bad_declare)
    got = [(f.name, f.method.reply_code) for f in c.frames[start:] if f.method is not None]
    assert got == [("Channel.Close", 406), ("Connection.Close", 501)]


def test_connection_error_of_earlier_method_is_the_one_reported() -> None:
    """basic.consume reusing consumer tag "c" (530 NOT_ALLOWED, decided by the front end), then a method
    frame too short to hold a method id (501, decided by the parser), in one buffer. Now: connection.close
    501 and the 530 is lost; split across two receive() calls: 530. Expected (RabbitMQ, in order): 530."""
    net, c = _open()
    c.feed(method_frame(1, make_method(commands.Queue.Declare, queue="q"))
           + method_frame(1, make_method(commands.Basic.Consume, queue="q", consumer_tag="c")))
    c.feed(method_frame(1, make_method(commands.Basic.Consume, queue="q", consumer_tag="c"))
           + b"\x01\x00\x01\x00\x00\x00\x00\xce")
    assert [m.reply_code for m in c.connection_closes()] == [530], c.trace()
