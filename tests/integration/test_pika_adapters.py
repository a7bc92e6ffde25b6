"""pika's callback adapters (SelectConnection, AsyncioConnection): one confirmed round trip each."""

from __future__ import annotations

import asyncio
from typing import Any

import pika
import pytest
from pika.adapters.asyncio_connection import AsyncioConnection

pytestmark = pytest.mark.timeout(20)


class RoundTrip:
    """Callback chain: open channel -> confirm.select -> declare server-named exclusive queue -> consume ->
    publish 3 persistent messages -> collect 3 confirms and 3 deliveries -> ack each -> close."""

    N = 3

    def __init__(self) -> None:
        self.conn: Any = None
        self.ch: Any = None
        self.queue = ""
        self.confirms: list[tuple[str, int, bool]] = []
        self.deliveries: list[tuple[bytes, bool, int]] = []
        self.error: BaseException | str | None = None
        self.closed = False

    def on_open(self, conn: Any) -> None:
        self.conn = conn
        conn.channel(on_open_callback=self.on_channel)

    def on_open_error(self, _conn: Any, err: BaseException) -> None:
        self.error = err

    def on_closed(self, _conn: Any, _reason: BaseException) -> None:
        self.closed = True

    def on_channel(self, ch: Any) -> None:
        self.ch = ch
        ch.add_on_close_callback(self.on_channel_closed)
        ch.confirm_delivery(self.on_confirm, callback=lambda _f: ch.queue_declare(
            "", exclusive=True, callback=self.on_declared))

    def on_channel_closed(self, _ch: Any, reason: BaseException) -> None:
        if len(self.deliveries) < self.N:
            self.error = reason

    def on_declared(self, frame: Any) -> None:
        self.queue = frame.method.queue
        self.ch.basic_qos(prefetch_count=10, callback=lambda _f: self.ch.basic_consume(
            self.queue, self.on_message, callback=lambda _f: self.publish()))

    def publish(self) -> None:
        for i in range(self.N):
            self.ch.basic_publish("", self.queue, b"m%d" % i,
                                  pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))

    def on_confirm(self, frame: Any) -> None:
        m = frame.method
        self.confirms.append((m.NAME, m.delivery_tag, m.multiple))
        self.maybe_done()

    def on_message(self, ch: Any, method: Any, _props: Any, body: bytes) -> None:
        self.deliveries.append((body, method.redelivered, method.delivery_tag))
        ch.basic_ack(method.delivery_tag)
        self.maybe_done()

    def confirmed_up_to(self) -> int:
        # Confirms may be coalesced with multiple=True: compute the highest tag covered.
        return max((tag for name, tag, _ in self.confirms if name == "Basic.Ack"), default=0)

    def maybe_done(self) -> None:
        if len(self.deliveries) == self.N and self.confirmed_up_to() == self.N:
            self.conn.close()

    def check(self) -> None:
        assert self.error is None, self.error
        assert self.closed
        assert [d[0] for d in self.deliveries] == [b"m0", b"m1", b"m2"]
        assert all(not d[1] for d in self.deliveries)
        assert [d[2] for d in self.deliveries] == [1, 2, 3]
        assert all(name == "Basic.Ack" for name, _, _ in self.confirms)
        assert self.confirmed_up_to() == 3


def test_select_connection_round_trip(broker_url: str) -> None:
    rt = RoundTrip()

    def on_closed(c: Any, r: BaseException) -> None:
        rt.on_closed(c, r)
        c.ioloop.stop()

    def on_open_error(c: Any, e: BaseException) -> None:
        rt.on_open_error(c, e)
        c.ioloop.stop()

    conn = pika.SelectConnection(pika.URLParameters(broker_url), on_open_callback=rt.on_open,
                                 on_open_error_callback=on_open_error, on_close_callback=on_closed)

    def give_up() -> None:
        rt.error = rt.error or "timed out"
        conn.ioloop.stop()

    timer = conn.ioloop.call_later(10, give_up)
    conn.ioloop.start()
    conn.ioloop.remove_timeout(timer)
    rt.check()


async def test_asyncio_connection_round_trip(broker_url: str) -> None:
    rt = RoundTrip()
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def on_closed(c: Any, r: BaseException) -> None:
        rt.on_closed(c, r)
        if not done.done():
            done.set_result(None)

    def on_open_error(c: Any, e: BaseException) -> None:
        rt.on_open_error(c, e)
        if not done.done():
            done.set_result(None)

    AsyncioConnection(pika.URLParameters(broker_url), on_open_callback=rt.on_open,
                      on_open_error_callback=on_open_error, on_close_callback=on_closed,
                      custom_ioloop=loop)
    await asyncio.wait_for(done, 10)
    rt.check()
