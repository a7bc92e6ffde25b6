"""Sans-IO harness for the fuzz suites: many ``AMQPConnection``s over ONE core ``Broker`` on memory stores.

``Net`` is the broker (core + outbox); ``Client`` is one connection with its own frame parser for what the
server sends. The parser is independent of the server's codec and tolerant of property blocks it cannot
decode (the broker forwards property blocks untouched, so a fuzzed publisher may store garbage there), but
it insists that the server's *framing* is sound: every frame ends with 0xCE and every method frame the
server writes decodes with pamqp.

``InternalErrors`` captures ERROR records of the ``mailslot`` loggers: the front end logs
"internal error handling ..." and closes with 541 when an unexpected exception hits it; the fuzz oracle
counts either as a failure.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from pamqp import base, commands, encode

from mailslot.core.broker import Broker
from mailslot.frontends.amqp091 import AMQP_CODEC, AMQPConnection
from mailslot.protocols.amqp091 import properties
from mailslot.protocols.amqp091.peer import ClientPeer, method
from mailslot.storage.memory import MemoryMessageLog, MemoryMetadataStore
from mailslot.testing import default_access


def _access() -> Any:
    """guest/guest (loopback only) and alice/secret, both with every permission on "/"."""
    access = default_access()
    access.users.add("alice", "secret")
    access.permissions.set("alice", "/", ".*", ".*", ".*")
    return access
FRAME_END = 0xCE
_HEAD = struct.Struct(">BHI")

#: Codes a connection.close may carry for bad input (AMQP 0-9-1 hard errors RabbitMQ uses). 541 is NOT here:
#: INTERNAL_ERROR means an unexpected exception inside the broker.
CONNECTION_CLOSE_CODES = frozenset({320, 402, 403, 501, 502, 503, 504, 505, 506, 530, 540})
#: Codes a channel.close may carry (soft errors).
CHANNEL_CLOSE_CODES = frozenset({311, 312, 313, 403, 404, 405, 406})
#: RabbitMQ answers some hard errors raised by the connection's own protocol layer with 541 too: a
#: connection-level method whose arguments do not decode (rabbit_reader:handle_method0 catches the
#: frame_error exit as a non-AMQP reason). The front end marks them with the bare text "INTERNAL_ERROR";
#: its own 541 (an exception in the broker) says "INTERNAL_ERROR - internal error".
RABBIT_541_TEXT = "INTERNAL_ERROR"

_probe_ids = itertools.count(1)

#: Signatures (substrings of the logged exception and its traceback's file names) of internal errors already
#: reported and kept as FAILING tests in test_regressions.py. The fuzz oracle tolerates them so the fuzz
#: suites stay a signal for NEW bugs (remove an entry once its bug is fixed); FUZZ_STRICT=1
#: (scripts/fuzz --strict) makes them fail like any other internal error.
# Internal errors the fuzz properties tolerate while a bug is open (signature -> what it is). Empty: the
# malformed-properties and pamqp-name-validation 541s are fixed (tests/fuzz/test_regressions.py).
KNOWN_BUGS: dict[str, str] = {}
IGNORE_KNOWN = os.environ.get("FUZZ_STRICT") != "1"


# ------------------------------------------------------------------------------------------ frames


@dataclass
class Frame:
    ftype: int
    channel: int
    payload: bytes
    method: Any = None  # pamqp method for method frames

    @property
    def name(self) -> str:
        if self.method is not None:
            return str(self.method.name)
        return {2: "header", 3: "body", 8: "heartbeat"}.get(self.ftype, f"type{self.ftype}")


def split_server_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """Split server output into frames. Asserts the framing is sound (a server must never emit garbage)."""
    frames: list[Frame] = []
    off = 0
    while True:
        if data[off:off + 4] == b"AMQP":
            assert len(data) - off >= 8, data[off:]
            frames.append(Frame(-1, 0, data[off:off + 8]))
            off += 8
            continue
        if len(data) - off < 8:
            break
        ftype, ch, size = _HEAD.unpack_from(data, off)
        end = off + 7 + size
        if end >= len(data):
            break
        assert data[end] == FRAME_END, f"server frame without frame-end at {off}: {data[off:off + 32]!r}"
        payload = data[off + 7:end]
        f = Frame(ftype, ch, payload)
        if ftype == 1:
            index = struct.unpack_from(">I", payload)[0]
            cls = commands.INDEX_MAPPING[index]
            m = object.__new__(cls)
            m.unmarshal(payload[4:])
            f.method = m
        frames.append(f)
        off = end + 1
    return frames, data[off:]


def raw_marshal(m: base.Frame) -> bytes:
    """pamqp's method encoding WITHOUT its validator: lets tests send names pamqp would refuse."""
    out: list[bytes] = []
    byte, offset, bits = 0, 0, False
    for attr in m.__slots__:
        kind = m.amqp_type(attr)
        value = getattr(m, attr, 0)
        if kind == "bit":
            if not bits:
                byte, offset, bits = 0, 0, True
            byte = encode.bit(value, byte, offset)
            offset += 1
            if offset == 8:
                out.append(encode.octet(byte))
                bits = False
            continue
        if bits:
            out.append(encode.octet(byte))
            bits = False
        if kind == "longlong":  # unsigned on the wire; pamqp encodes it signed
            out.append(struct.pack(">Q", value))
        else:
            out.append(encode.by_type(value, kind))
    if bits:
        out.append(encode.octet(byte))
    return b"".join(out)


def frame_bytes(ftype: int, channel: int, payload: bytes) -> bytes:
    return _HEAD.pack(ftype, channel, len(payload)) + payload + bytes((FRAME_END,))


def method_frame(channel: int, m: base.Frame) -> bytes:
    return frame_bytes(1, channel, struct.pack(">I", m.index) + raw_marshal(m))


def make_method(cls: type, **fields: Any) -> base.Frame:
    """A pamqp method object with the given fields, no validation; unset fields get type defaults."""
    m = object.__new__(cls)
    defaults = {"bit": False, "octet": 0, "short": 0, "long": 0, "longlong": 0, "shortstr": "",
                "longstr": "", "table": {}, "timestamp": 0}
    for attr in cls.__slots__:
        setattr(m, attr, fields.get(attr, defaults[cls.amqp_type(attr)]))
    return m


def content_header(channel: int, body_size: int, props: bytes = b"\x00\x00", class_id: int = 60,
                   weight: int = 0) -> bytes:
    return frame_bytes(2, channel, struct.pack(">HHQ", class_id, weight, body_size) + props)


def publish_frames(channel: int, exchange: str, routing_key: str, body: bytes, props: bytes = b"\x00\x00",
                   *, frame_max: int = 131072, mandatory: bool = False) -> bytes:
    out = [method_frame(channel, make_method(commands.Basic.Publish, exchange=exchange, routing_key=routing_key,
                                             mandatory=mandatory)),
           content_header(channel, len(body), props)]
    chunk = frame_max - 8
    for i in range(0, len(body), chunk):
        out.append(frame_bytes(3, channel, body[i:i + chunk]))
    return b"".join(out)


# ------------------------------------------------------------------------------------------ log capture


class InternalErrors(logging.Handler):
    """Collects ERROR+ records of the mailslot loggers while installed (a context manager)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> InternalErrors:
        logging.getLogger("mailslot").addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger("mailslot").removeHandler(self)

    def unexpected(self) -> list[logging.LogRecord]:
        """The records that fail the oracle (all but the KNOWN_BUGS ones, unless FUZZ_STRICT=1)."""
        if not IGNORE_KNOWN:
            return self.records
        return [r for r in self.records if not any(sig in _record_text(r) for sig in KNOWN_BUGS)]

    def describe(self) -> str:
        lines = []
        for r in self.records:
            lines.append(r.getMessage())
            if r.exc_info and r.exc_info[1] is not None:
                e = r.exc_info[1]
                lines.append(f"  {type(e).__name__}: {e}")
        return "\n".join(lines)


def _record_text(r: logging.LogRecord) -> str:
    text = r.getMessage()
    exc = r.exc_info[1] if r.exc_info else None
    while exc is not None:
        text += f" | {type(exc).__name__}: {exc}"
        tb = exc.__traceback__
        while tb is not None:
            text += f" @ {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return text


# ------------------------------------------------------------------------------------------ broker + clients


class Net:
    """One core broker on memory stores; connections are made with ``connect()``."""

    def __init__(self, *, max_message_size: int = 1024 * 1024, frame_max: int = 131072) -> None:
        self.core = Broker(MemoryMessageLog(), MemoryMetadataStore(), [AMQP_CODEC])
        self.access = _access()
        self.outbox: set[AMQPConnection] = set()
        self.max_message_size = max_message_size
        self.frame_max = frame_max
        self.now = 0.0

    def connect(self, *, peer_host: str = "127.0.0.1", client: ClientPeer | None = None) -> Client:
        conn = AMQPConnection(self.core, peer_host=peer_host, access=self.access,
                              heartbeat=60, frame_max=self.frame_max, channel_max=2047,
                              max_message_size=self.max_message_size, now=self.now, outbox=self.outbox)
        return Client(self, conn, client or ClientPeer())


@dataclass
class Client:
    net: Net
    conn: AMQPConnection
    peer: ClientPeer
    frames: list[Frame] = field(default_factory=list)
    tail: bytes = b""
    events: list[Any] = field(default_factory=list)
    outcome: str = ""

    def __post_init__(self) -> None:
        proto = self.conn.proto
        original = proto.receive_data

        def recording(data: bytes, now: float) -> list[Any]:  # keep the protocol events for diagnostics
            evs = original(data, now)
            self.events.extend(evs)
            return evs

        proto.receive_data = recording  # type: ignore[method-assign]

    # ---- raw I/O ------------------------------------------------------------------------------
    def feed(self, data: bytes, *, flush: bool = True) -> list[Frame]:
        self.conn.receive(data, self.net.now)
        if flush:
            self.net.core.flush()
        return self.collect()

    def tick(self, dt: float) -> list[Frame]:
        self.net.now += dt
        self.conn.timer(self.net.now)
        self.net.core.flush()
        return self.collect()

    def collect(self) -> list[Frame]:
        out = self.conn.data_to_send()
        got, self.tail = split_server_frames(self.tail + out)
        self.frames.extend(got)
        return got

    # ---- handshake ----------------------------------------------------------------------------
    def handshake(self) -> None:
        """Protocol header .. open-ok, answering start / tune with the peer's replies."""
        data = self.peer.start()
        for _ in range(4):
            self.conn.receive(data, self.net.now)
            self.net.core.flush()
            out = self.conn.data_to_send()
            _, data = self.peer.receive_data(out)
            got, rest = split_server_frames(out)
            self.frames.extend(got)
            if not data:
                break
        assert self.conn.proto.is_open, [f.name for f in self.frames]

    # ---- outcome ------------------------------------------------------------------------------
    def connection_closes(self) -> list[Any]:
        return [f.method for f in self.frames if isinstance(f.method, commands.Connection.Close)]

    def channel_closes(self) -> list[tuple[int, Any]]:
        return [(f.channel, f.method) for f in self.frames if isinstance(f.method, commands.Channel.Close)]

    def check_error_codes(self) -> None:
        """Every close the server sent carries a code RabbitMQ would send for bad input."""
        for close in self.connection_closes():
            if close.reply_code == 541 and close.reply_text == RABBIT_541_TEXT:
                continue
            if close.reply_code == 541 and IGNORE_KNOWN:
                continue  # the front end logged it: InternalErrors.unexpected() decides  # RabbitMQ's own 541 for an undecodable connection-class method
            assert close.reply_code in CONNECTION_CLOSE_CODES, (
                f"connection.close {close.reply_code} {close.reply_text!r}", self.trace())
        for ch, close in self.channel_closes():
            assert close.reply_code in CHANNEL_CLOSE_CODES, (
                f"channel.close on {ch}: {close.reply_code} {close.reply_text!r}", self.trace())

    def trace(self) -> list[str]:
        out = []
        for f in self.frames:
            if isinstance(f.method, (commands.Connection.Close, commands.Channel.Close)):
                out.append(f"{f.channel}:{f.name}({f.method.reply_code} {f.method.reply_text!r})")
            else:
                out.append(f"{f.channel}:{f.name}")
        out.append(f"events={[type(e).__name__ + getattr(e, 'reason', '') for e in self.events][-6:]}")
        return out

    def free_channel(self) -> int:
        used = set(self.conn.proto._channels)  # noqa: SLF001 - includes channels still closing
        for n in range(2000, 1, -1):
            if n not in used:
                return n
        raise AssertionError("no free channel")

    def round_trip(self) -> None:
        """On a fresh channel: open, declare a queue, publish, get it back, delete, close."""
        ch = self.free_channel()
        name = f"probe-{next(_probe_ids)}"
        start = len(self.frames)
        self.feed(method_frame(ch, commands.Channel.Open())
                  + method_frame(ch, make_method(commands.Queue.Declare, queue=name))
                  + publish_frames(ch, "", name, b"probe body", properties.EMPTY)
                  + method_frame(ch, make_method(commands.Basic.Get, queue=name, no_ack=True)))
        mine = [f for f in self.frames[start:] if f.channel == ch]
        names = [f.name for f in mine]
        assert names[:3] == ["Channel.OpenOk", "Queue.DeclareOk", "Basic.GetOk"], (names, self.trace())
        assert [f.payload for f in mine if f.ftype == 3] == [b"probe body"], names
        # Separate receive() calls: pipelined with channel.close, the close-ok overtakes the delete-ok
        # (see test_regressions.py::test_close_ok_does_not_overtake_earlier_replies).
        self.feed(method_frame(ch, make_method(commands.Queue.Delete, queue=name)))
        self.feed(method_frame(ch, make_method(commands.Channel.Close, reply_code=200, reply_text="bye")))
        names = [f.name for f in self.frames[start:] if f.channel == ch]
        assert names[-2:] == ["Queue.DeleteOk", "Channel.CloseOk"], (names, self.trace())

    def settle(self) -> str:
        """After the fuzz input: check the outcome and bring the connection to its end. Returns the outcome.

        * closing (we sent connection.close): the client answers close-ok, the connection terminates;
        * terminated: nothing more to check (silent close);
        * open: unless a partial frame is pending, a fresh channel must still round-trip a message.
        The transport's connection_lost() always runs at the end, as when the socket goes away.
        """
        self.check_error_codes()
        proto = self.conn.proto
        if proto.closing:
            pending = bool(proto._tail)  # noqa: SLF001 - close-ok would only extend a partial frame
            self.feed(method(0, commands.Connection.CloseOk()))
            if pending and not self.conn.terminated:
                self.tick(31.0)  # CLOSING_TIMEOUT
            assert self.conn.terminated, self.trace()
            outcome = "closed"
        elif self.conn.terminated:
            outcome = "terminated"
        elif not proto.is_open:  # still negotiating: the handshake timeout must end it
            self.tick(11.0)
            assert self.conn.terminated, self.trace()
            outcome = "handshake-timeout"
        elif proto._tail:  # noqa: SLF001 - a partial frame is legitimately waiting for more bytes
            outcome = "pending"
        else:
            self.round_trip()
            outcome = "open"
        self.conn.connection_lost()
        self.net.core.flush()
        self.collect()
        self.outcome = outcome
        return outcome


def check_broker_undisturbed(net: Net) -> None:
    """A SECOND connection on the same core: declare, publish (confirmed), consume, ack, queue empty after."""
    c = net.connect()
    c.handshake()
    q = f"witness-{next(_probe_ids)}"
    c.feed(method(1, commands.Channel.Open())
           + method_frame(1, make_method(commands.Confirm.Select))
           + method_frame(1, make_method(commands.Queue.Declare, queue=q))
           + publish_frames(1, "", q, b"witness", properties.EMPTY)
           + method_frame(1, make_method(commands.Basic.Consume, queue=q, consumer_tag="w")))
    names = [f.name for f in c.frames if f.channel == 1]
    assert names[:4] == ["Channel.OpenOk", "Confirm.SelectOk", "Queue.DeclareOk", "Basic.ConsumeOk"], names
    assert "Basic.Deliver" in names and "Basic.Ack" in names, names  # delivery, and the publish confirmed
    deliver = next(f.method for f in c.frames if isinstance(f.method, commands.Basic.Deliver))
    assert [f.payload for f in c.frames if f.ftype == 3 and f.channel == 1] == [b"witness"]
    start = len(c.frames)
    c.feed(method_frame(1, make_method(commands.Basic.Ack, delivery_tag=deliver.delivery_tag))
           + method_frame(1, make_method(commands.Basic.Cancel, consumer_tag="w"))
           + method_frame(1, make_method(commands.Queue.Declare, queue=q, passive=True)))
    ok = [f.method for f in c.frames[start:] if isinstance(f.method, commands.Queue.DeclareOk)]
    assert ok and ok[0].message_count == 0 and ok[0].consumer_count == 0, [f.name for f in c.frames[start:]]
    c.feed(method_frame(1, make_method(commands.Queue.Delete, queue=q)))
    c.feed(method(0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)))
    assert not c.connection_closes() and not c.channel_closes(), c.trace()
    assert c.conn.terminated
    c.conn.connection_lost()
    net.core.flush()
