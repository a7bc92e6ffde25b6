"""What the memory benchmarks share: a background sampler of the broker's RSS, and a publisher on the sans-IO
client that keeps a window of unconfirmed messages in flight. Imported like ``_broker`` (the scripts put this
directory on ``sys.path``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from pamqp import commands

from mailslot.bench.driver import AMQPUrl, ClientProtocol, connect
from mailslot.bench.spike import RssSampler as RssProbe
from mailslot.protocols.amqp091.events import Confirm, Event

MB = 1024 * 1024


class RssSampler(threading.Thread):
    """Samples a process's RSS every ``interval`` seconds in a daemon thread (``start()`` / ``stop()``), each
    sample tagged with the current ``phase``. ``sample()`` also takes one on demand; it returns 0 and records
    nothing when there is no pid or the process is gone (the probe is ``mailslot.bench.spike``'s)."""

    def __init__(self, pid: int | None, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.probe = RssProbe(pid)
        self.interval = interval
        self.phase = "idle"
        self.samples: list[tuple[float, str, int]] = []
        self._halt = threading.Event()

    def sample(self) -> int:
        rss = self.probe.sample()
        if rss is None:
            return 0
        self.samples.append((time.monotonic(), self.phase, rss))
        return rss

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()

    def peak(self, phase: str | None = None) -> int:
        """The highest sample of ``phase``, or of all samples when it is None; 0 without samples."""
        return max((r for _, p, r in self.samples if phase is None or p == phase), default=0)

    @property
    def last(self) -> int:
        return self.samples[-1][2] if self.samples else 0


async def open_confirm_channel(url: AMQPUrl, name: str, queue: str,
                               arguments: dict[str, object] | None = None) -> ClientProtocol:
    """Connects, opens channel 1, declares the durable ``queue`` and puts the channel in confirm mode."""
    proto = await connect(url, name)
    conn = proto.conn
    await proto.call(1, lambda: conn.open_channel(1), commands.Channel.OpenOk)
    await proto.call(1, lambda: conn.queue_declare(1, queue, durable=True, arguments=arguments),
                     commands.Queue.DeclareOk)
    await proto.call(1, lambda: conn.confirm_select(1), commands.Confirm.SelectOk)
    return proto


async def publish_confirmed(proto: ClientProtocol, count: int, send: Callable[[int, int], object], *,
                            window: int, progress: Callable[[int, float], None],
                            lost: str = "connection") -> tuple[float, int]:
    """Publishes ``count`` messages on channel 1 of ``proto`` (in confirm mode, one producer, one queue) with
    at most ``window`` unconfirmed: ``send(first, n)`` publishes messages ``first`` .. ``first + n - 1``
    (numbered from 0); this loop flushes. Calls ``progress(confirmed, seconds)`` about once a
    second; raises ``RuntimeError("<lost> lost: ...")`` if the connection goes. Returns the seconds from the
    first publish to the last confirm, and the number of nack frames."""
    done = asyncio.get_running_loop().create_future()
    state = {"seq": 0, "acked": 0, "nacks": 0}

    def pump() -> None:
        n = min(window - (state["seq"] - state["acked"]), count - state["seq"])
        if n > 0 and not proto.paused:
            send(state["seq"], n)
            state["seq"] += n
            proto.flush()

    def on_events(events: list[Event]) -> None:
        other = []
        for ev in events:
            if type(ev) is Confirm:
                state["nacks"] += not ev.ack  # type: ignore[attr-defined]
                # one producer, one queue: confirms come in order, so the highest tag is the low-water mark
                state["acked"] = max(state["acked"], ev.delivery_tag)  # type: ignore[attr-defined]
            else:
                other.append(ev)
        if other:
            proto.control(other)
        if state["acked"] >= count and not done.done():
            done.set_result(None)
        pump()

    proto.handler = on_events
    proto.on_resume = pump
    t0 = time.monotonic()
    pump()
    while not done.done():
        await asyncio.wait([done, proto.lost], timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        if proto.lost.done() and not done.done():
            raise RuntimeError(f"{lost} lost: {proto.error}")
        progress(state["acked"], time.monotonic() - t0)
    return time.monotonic() - t0, state["nacks"]
