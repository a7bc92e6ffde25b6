"""The pace of a rate-limited sender or worker: one step now, then one every ``interval`` on the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Ticker:
    __slots__ = ("_handle", "interval", "loop", "step", "stopped")

    def __init__(self, interval: float, step: Callable[[], None]) -> None:
        self.interval = interval
        self.step = step
        self.loop = asyncio.get_running_loop()
        self.stopped = True
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.stopped = False
        self._run()

    def stop(self) -> None:
        self.stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        self._handle = None
        if self.stopped:
            return
        self.step()
        if not self.stopped:
            self._handle = self.loop.call_later(self.interval, self._run)
