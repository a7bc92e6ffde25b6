"""Helpers shared by the suites that talk to a real broker (integration, interop, durability, workers).

Rules of this module:

* Tests wait for a condition, never for a time: ``wait_for`` (blocking) and ``async_wait_for`` (asyncio)
  poll a predicate and fail the test, naming what they waited for and the last value seen, when the
  condition does not come true in time. A test that must show that something does *not* happen waits
  for a barrier that proves the broker has processed the step first (see ``pump_until``), then asserts.
* Blocking (pika) helpers take a channel or connection; nothing here opens a broker (conftest does).
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

T = TypeVar("T")
What = str | Callable[[], str]  # what a wait is for; a callable is asked only when the wait fails (last state)

# Generous defaults: the test machines are shared and slow; a condition that holds returns at once anyway.
TIMEOUT = 10.0
INTERVAL = 0.01


class _Deadline:
    """One polling loop's clock and its failure message, shared by the blocking and the asyncio waits."""

    def __init__(self, timeout: float, what: What, predicate: Any) -> None:
        self.timeout = timeout
        self.what = what or getattr(predicate, "__qualname__", repr(predicate))
        self.end = time.monotonic() + timeout

    def check(self, last: Any) -> None:
        if time.monotonic() >= self.end:
            what = self.what() if callable(self.what) else self.what
            raise AssertionError(f"timed out after {self.timeout} s waiting for {what} (last value: {last!r})")


def wait_for(predicate: Callable[[], T], timeout: float = TIMEOUT, interval: float = INTERVAL, what: What = "") -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value; fail after ``timeout``."""
    deadline = _Deadline(timeout, what, predicate)
    while True:
        value = predicate()
        if value:
            return value
        deadline.check(value)
        time.sleep(interval)


async def async_wait_for(
    predicate: Callable[[], T | Awaitable[T]], timeout: float = TIMEOUT, interval: float = INTERVAL, what: What = ""
) -> T:
    """``wait_for`` in an event loop: ``predicate`` may also return an awaitable (it is awaited)."""
    deadline = _Deadline(timeout, what, predicate)
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        deadline.check(value)
        await asyncio.sleep(interval)


def rabbitmq_management_reachable() -> bool:
    """Whether the reference RabbitMQ's management API listens on 127.0.0.1:15672 (its tests skip if not)."""
    try:
        with socket.create_connection(("127.0.0.1", 15672), timeout=1.0):
            return True
    except OSError:
        return False


# ---- pika (blocking) ---------------------------------------------------------------------------------------


def connect(url: str) -> BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


def x_arguments(**arguments: Any) -> dict[str, Any]:
    """``max_length=3`` -> ``{"x-max-length": 3}``."""
    return {"x-" + k.replace("_", "-"): v for k, v in arguments.items()}


def tmp_queue(ch: BlockingChannel, **arguments: Any) -> str:
    """A server-named exclusive queue (deleted with its connection) with these x-arguments, given with
    underscores (``max_length=3``)."""
    return str(ch.queue_declare("", exclusive=True, arguments=x_arguments(**arguments)).method.queue)


def message_count(ch: BlockingChannel, queue: str) -> int:
    """Ready messages, as queue.declare-ok (passive) reports them."""
    return int(ch.queue_declare(queue, passive=True).method.message_count)


def get_all(ch: BlockingChannel, queue: str) -> list[tuple[Any, Any, bytes]]:
    """basic.get with auto-ack until the queue says it is empty: (method, properties, body) each."""
    out = []
    while True:
        method, properties, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((method, properties, body))


def drain(ch: BlockingChannel, queue: str) -> list[bytes]:
    """The bodies ``get_all`` takes."""
    return [body for _m, _p, body in get_all(ch, queue)]


def get_when_there(
    ch: BlockingChannel, queue: str, timeout: float = TIMEOUT, auto_ack: bool = True
) -> tuple[Any, Any, bytes]:
    """The next message of ``queue`` (basic.get), polled for: RabbitMQ dead-letters, expires and requeues
    asynchronously, so a message can arrive a little after the step that sends it there."""

    def get() -> tuple[Any, Any, bytes] | None:
        method, properties, body = ch.basic_get(queue, auto_ack=auto_ack)
        return (method, properties, body) if method is not None else None

    return wait_for(get, timeout=timeout, what=f"a message in {queue}")


def pump_until(conn: BlockingConnection, predicate: Callable[[], T], timeout: float = TIMEOUT, what: What = "") -> T:
    """``wait_for`` that lets pika's blocking connection process incoming frames (deliveries, cancels) while
    it polls: what a consumer callback records is seen as soon as it arrives."""

    def tick() -> T:
        conn.process_data_events(time_limit=0.01)
        return predicate()

    return wait_for(tick, timeout=timeout, interval=0, what=what)


def closed_by_broker(fn: Callable[[], Any]) -> tuple[int, str]:
    """Run ``fn``, which must make the broker close the channel: (reply code, reply text)."""
    try:
        fn()
    except pika.exceptions.ChannelClosedByBroker as error:
        return error.reply_code, error.reply_text
    raise AssertionError("the broker did not close the channel")


def outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    """("ok",) or ("channel"|"connection", code, text) for what the broker did."""
    try:
        fn()
    except pika.exceptions.ChannelClosedByBroker as e:
        return ("channel", e.reply_code, e.reply_text)
    except pika.exceptions.ConnectionClosedByBroker as e:
        return ("connection", e.reply_code, e.reply_text)
    return ("ok",)
