"""The cluster link (mailslot.cluster.link) and the PUBLISH frame (mailslot.cluster.forward): both
transports, mutual authentication, and peers' sizes checked before anything is allocated."""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path

import pytest

from helpers import async_wait_for
from mailslot.cluster import link
from mailslot.cluster.forward import Forwarder, decode_publish, encode_publish
from mailslot.core.message import Message
from mailslot.frontends.amqp091 import AMQP_CODEC

SECRET = b"s" * 32


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:5680", link.Address("tcp", "127.0.0.1", 5680)),
    ("tcp:node-2.example:5680", link.Address("tcp", "node-2.example", 5680)),
    ("[::1]:5680", link.Address("tcp", "::1", 5680)),
    (":5680", link.Address("tcp", "0.0.0.0", 5680)),
    ("unix:/run/mailslot/link.sock", link.Address("unix", path="/run/mailslot/link.sock")),
])
def test_addresses(text: str, want: link.Address) -> None:
    assert link.parse_address(text) == want


@pytest.mark.parametrize("text", ["node-2", "host:port", "host:70000", "unix:"])
def test_bad_addresses_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT or unix:/path|needs a path"):
        link.parse_address(text)


def test_a_publish_frame_round_trips() -> None:
    messages = [Message("ex", "rk.1", b"\x00\x01props", b"body-1", True, AMQP_CODEC, None),
                Message("", "q2", b"", b"\xff" * 300, False, AMQP_CODEC, 5000)]
    payload = encode_publish(7, [("/\x00q1", 3, messages[0], None), ("/\x00q2", 9, messages[1], None),
                                 ("/\x00q1", 3, messages[0], None)])
    seq, queues, decoded = decode_publish(payload)
    assert seq == 7
    assert queues == [("/\x00q1", 3), ("/\x00q2", 9)]
    assert decoded == [
        (0, True, -1, [b"ex", b"rk.1", b"\x00\x01props", b"body-1", b"amqp091"]),
        (1, False, 5000, [b"", b"q2", b"", b"\xff" * 300, b"amqp091"]),
        (0, True, -1, [b"ex", b"rk.1", b"\x00\x01props", b"body-1", b"amqp091"]),
    ]


def test_a_truncated_or_lying_publish_frame_is_refused() -> None:
    payload = encode_publish(1, [("/\x00q1", 1, Message("", "q1", b"", b"x" * 100, True, AMQP_CODEC), None)])
    with pytest.raises(link.LinkError, match="ends early"):
        decode_publish(payload[:-10])
    tail = 100 + 4 + len(b"amqp091")  # the body, the codec's length and the codec
    assert struct.unpack("!I", payload[-tail - 4:-tail]) == (100,)  # the body's length field
    lying = payload[:-tail - 4] + struct.pack("!I", 2**31) + payload[-tail:]  # a length past the end
    with pytest.raises(link.LinkError, match="ends early"):
        decode_publish(lying)


async def _serve(address: link.Address, secret: bytes) -> tuple[asyncio.Server, link.Address, list[object]]:
    seen: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen.append(await link.accept(reader, writer, secret))
            kind, payload = await link.read_frame(reader)
            writer.write(link.encode_frame(kind, payload[::-1]))
            await writer.drain()
        except Exception as exc:
            seen.append(exc)
        finally:
            writer.close()

    server, bound = await link.start_server(address, handle)
    return server, bound, seen


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_both_transports_authenticate_and_carry_frames(transport: str, tmp_path: Path) -> None:
    address = link.parse_address(f"unix:{tmp_path}/link.sock" if transport == "unix" else "127.0.0.1:0")
    server, bound, seen = await _serve(address, SECRET)
    async with server:
        reader, writer = await link.connect(bound, SECRET, "node-b")
        writer.write(link.encode_frame(42, b"abc"))
        assert await link.read_frame(reader) == (42, b"cba")
        writer.close()
    assert seen == ["node-b"]


async def test_a_peer_without_the_secret_is_refused_and_learns_nothing() -> None:
    server, bound, seen = await _serve(link.parse_address("127.0.0.1:0"), SECRET)
    async with server:
        with pytest.raises((link.LinkError, asyncio.IncompleteReadError)):
            await link.connect(bound, b"not the secret at all", "intruder")
        await asyncio.sleep(0)
    assert len(seen) == 1 and "does not know the cluster secret" in str(seen[0])


async def test_a_server_that_does_not_know_the_secret_is_refused_by_the_client() -> None:
    """Mutual: a node does not forward to an impostor that accepts anyone."""

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(link.encode_frame(link.CHALLENGE, b"n" * link.NONCE_BYTES))
        await link.read_frame(reader)
        writer.write(link.encode_frame(link.WELCOME, b"\x00" * 32))
        await writer.drain()

    server, bound = await link.start_server(link.parse_address("127.0.0.1:0"), impostor)
    async with server:
        with pytest.raises(link.LinkError, match="does not know the cluster secret"):
            await link.connect(bound, SECRET, "node-b")


async def test_an_unauthenticated_peer_cannot_announce_a_large_frame() -> None:
    server, bound, seen = await _serve(link.parse_address("127.0.0.1:0"), SECRET)
    async with server:
        reader, writer = await asyncio.open_connection(bound.host, bound.port)
        await link.read_frame(reader)  # the challenge
        writer.write(struct.pack("!IB", 500 * 1024 * 1024, link.HELLO))
        await writer.drain()
        assert await reader.read() == b""  # closed without reading (or allocating) 500 MB
        writer.close()
    assert "exceeds the limit" in str(seen[0])


async def test_a_node_that_is_down_is_logged_once_per_outage_not_once_per_batch(
    caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    address = f"unix:{tmp_path}/down.sock"  # nobody listens there: every dial fails at once
    forwarder = Forwarder("a", SECRET, owners=dict, links=lambda: {"b": address}, loop=asyncio.get_running_loop(),
                          timeout=5.0)
    message = Message("", "q", b"", b"x", True, AMQP_CODEC, None)
    peer = forwarder._peer("b")
    with caplog.at_level(logging.DEBUG, logger="mailslot.cluster"):
        for _ in range(5):  # each forwarded batch dials again and is nacked
            assert await peer.send([("q", 1, message, None)]) is False
    failures = [r for r in caplog.records if "cluster link to node 'b' failed" in r.getMessage()]
    assert len(failures) == 5
    assert [r.levelno for r in failures] == [logging.WARNING] + [logging.DEBUG] * 4

    server, _, seen = await _serve(link.parse_address(address), SECRET)  # b is back
    async with server:
        with caplog.at_level(logging.INFO, logger="mailslot.cluster"):
            peer.control(0, bytes(8))
            await async_wait_for(lambda: any("is up again" in r.getMessage() for r in caplog.records),
                                 timeout=5, what="the link's recovery logged")
    assert seen == ["a"]
    forwarder.close()


class _ClosedWriter:
    """A link's writer after the peer went away, before its reader has noticed (uvloop then raises)."""

    def is_closing(self) -> bool:
        return True

    def write(self, data: bytes) -> None:
        raise RuntimeError("unable to perform operation on <UnixTransport closed=True>; the handler is closed")


async def test_a_frame_for_a_link_that_just_broke_is_queued_not_an_error_in_the_batch_cut() -> None:
    """The batch cut sends settles (and forwarded publishes) to owners: a link closing under it must not
    fail the flush (the chaos run saw 'broker flush failed' there); the frame goes with the broken link."""
    forwarder = Forwarder("a", SECRET, owners=dict, links=dict, loop=asyncio.get_running_loop(), timeout=5.0)
    peer = forwarder._peer("b")
    peer._writer = _ClosedWriter()  # type: ignore[assignment]
    peer._task = asyncio.get_running_loop().create_future()  # type: ignore[assignment]  # its reader, still running
    peer.control(0, bytes(8))
    assert peer._outbox == [link.encode_frame(0, bytes(8))]
    forwarder.close()
