"""A consumer: an async iterator (and context manager) over the messages of one basic.consume."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Self

from pamqp import commands

if TYPE_CHECKING:
    from mailslot.protocols.amqp091.client import ClientConnection

    from .channel import Channel
    from .link import Send
    from .message import Message


class Consumer:
    """``async with channel.consume("q") as messages: async for m in messages: await m.ack()``.

    Deliveries of one socket read are appended to a buffer in one go; iterating takes them without
    suspending while the buffer is not empty. :meth:`next_batch` takes everything buffered at once.
    With ``reconnect=True`` a dropped connection clears the buffer (those messages are requeued by the
    broker and will come again) and the consumer is re-registered under the same tag.
    """

    def __init__(self, channel: Channel, queue: str, tag: str, prefetch: int | None, no_ack: bool,
                 exclusive: bool, arguments: dict[str, Any] | None) -> None:
        self.channel = channel
        self.queue = queue
        self.tag = tag
        self.prefetch = prefetch
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.arguments = arguments
        self._buffer: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: BaseException | None = None

    def _consume_send(self) -> Send:
        method = commands.Basic.Consume(queue=self.queue, consumer_tag=self.tag, no_ack=self.no_ack,
                                        exclusive=self.exclusive, arguments=self.arguments)

        def send(cc: ClientConnection, n: int) -> None:
            cc.send_method(n, method)
        return send

    async def __aenter__(self) -> Self:
        await self.channel._start_consumer(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel._cancel_consumer(self)

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Message:
        buf = self._buffer
        while not buf:
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            fut = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await fut
            finally:
                self._waiter = None
        return buf.popleft()

    async def next_batch(self, max_count: int = 1000) -> list[Message]:
        """Wait for at least one message; return up to ``max_count`` buffered ones ([] when ended)."""
        try:
            first = await self.__anext__()
        except StopAsyncIteration:
            return []
        out = [first]
        buf = self._buffer
        while buf and len(out) < max_count:
            out.append(buf.popleft())
        return out

    # ------------------------------------------------------------------ called by the channel
    def _push(self, message: Message) -> None:
        self._buffer.append(message)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _take_buffer(self) -> list[Message]:
        out = list(self._buffer)
        self._buffer.clear()
        return out

    def _lost(self) -> None:
        self._buffer.clear()  # their delivery tags died with the connection; the broker redelivers them

    def _end(self, error: BaseException | None) -> None:
        self._done = True
        if error is not None:
            self._error = error
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
