"""A Channel driven through its two seams only (ConnectionLink, LinkedChannel), with no socket: what it
queues on the wire, what it waits for, and what each event does to it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pamqp import commands

from mailslot.client import Channel, ChannelClosed, PublishNacked
from mailslot.client.link import Send
from mailslot.protocols.amqp091.client import ClientConnection
from mailslot.protocols.amqp091.events import ChannelCloseReceived, Confirm, Delivery, MethodReceived
from mailslot.protocols.amqp091.peer import parse_frames


class FakeLink:
    """A ConnectionLink that keeps what the channel asks for."""

    def __init__(self) -> None:
        self.wire = ClientConnection()
        self.is_open = True
        self.write_paused = False
        self.blocked = False
        self.written = b""
        self.topology: dict[tuple[str, ...], tuple[Send, type]] = {}
        self.attached: dict[int, Any] = {}

    async def wait_ready(self) -> None:
        return None

    def flush(self) -> None:
        self.written += self.wire.data_to_send()

    def flush_soon(self) -> None:
        self.flush()

    async def drain(self) -> None:
        return None

    async def wait_unblocked(self) -> None:
        return None

    def remember(self, key: tuple[str, ...], send: Send, reply: type) -> None:
        self.topology[key] = (send, reply)

    def forget(self, key: tuple[str, ...]) -> None:
        self.topology.pop(key, None)

    def attach(self, number: int, channel: Any) -> None:
        self.attached[number] = channel

    def detach(self, number: int) -> None:
        self.attached.pop(number, None)

    def sent(self) -> list[Any]:
        """The frames written since the last call (what the channel flushed, or left queued)."""
        self.flush()
        frames, tail = parse_frames(self.written)
        self.written = b""
        assert tail == b""
        return [f for _, f in frames]


async def _answered(link: FakeLink, ch: Channel, call: Any, reply: Any) -> Any:
    """Run ``call`` until it waits for its reply, feed ``reply``, return the call's result."""
    task = asyncio.ensure_future(call)
    for _ in range(10):  # a few loop steps until it has written its request (no timing involved)
        if task.done() or link.written:
            break
        await asyncio.sleep(0)
    assert link.written, "the call wrote nothing"
    sent = link.sent()
    if reply is not None:
        ch.event_received(reply)
    return sent, await asyncio.wait_for(task, 5)


async def test_a_channel_needs_only_its_link() -> None:
    link = FakeLink()
    ch = Channel(link, 1)
    sent, _ = await _answered(link, ch, ch.restore(), MethodReceived(1, commands.Channel.OpenOk()))
    assert [type(f) for f in sent] == [commands.Channel.Open]
    sent, _ = await _answered(link, ch, ch.confirm_select(), MethodReceived(1, commands.Confirm.SelectOk()))
    assert [type(f) for f in sent] == [commands.Confirm.Select]

    sent, result = await _answered(
        link, ch, ch.declare_queue("q"),
        MethodReceived(1, commands.Queue.DeclareOk(queue="q", message_count=3, consumer_count=0)))
    assert result == ("q", 3, 0) and list(link.topology) == [("queue", "q")]  # repeated after a reconnect

    sent, _ = await _answered(link, ch, ch.publish("", "q", b"one"), Confirm(1, 1, False, True))
    assert [type(f).__name__ for f in sent] == ["Publish", "ContentHeader", "ContentBody"]
    with pytest.raises(PublishNacked):
        await _answered(link, ch, ch.publish("", "q", b"two"), Confirm(1, 2, False, False))

    # A delivery for no consumer (it arrived after basic.cancel) is given back at once.
    ch.event_received(Delivery(1, "gone", 7, False, "", "q", b"\x00\x00", b"x"))
    (nack,) = link.sent()
    assert isinstance(nack, commands.Basic.Nack) and (nack.delivery_tag, nack.requeue) == (7, True)

    ch.event_received(ChannelCloseReceived(1, 404, "NOT_FOUND - no queue 'x'", 50, 10))
    assert not ch.is_open
    with pytest.raises(ChannelClosed) as closed:
        await ch.publish("", "q", b"three")
    assert (closed.value.code, closed.value.text) == (404, "NOT_FOUND - no queue 'x'")
