"""A clock you move by hand, for the sans-IO layers where time is an input (heartbeats, TTL,
timers): pass ``clock.now()`` (or the clock itself, a ``Callable[[], float]``) where they take the
current time, then ``advance`` it instead of sleeping."""

from __future__ import annotations


class FakeClock:
    """Monotonic seconds as a float, starting at ``start``; only ``advance`` moves it."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    __call__ = now  # usable wherever a ``time.monotonic``-like callable is expected

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0; a monotonic clock never goes back); returns the new time."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self._now += seconds
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"
