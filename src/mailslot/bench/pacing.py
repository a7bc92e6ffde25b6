"""Pure parts of ``mailslot spike``: a token-bucket pacer and rate arithmetic (no I/O, no clock of their own:
every call takes ``now`` so tests drive them with fake time)."""

from __future__ import annotations

from collections.abc import Sequence


class TokenBucket:
    """Hands out whole messages at ``rate`` per second.

    Credit accrues with time and is capped at ``burst`` seconds' worth (at least one message), so a sender
    that falls behind (the machine or the broker cannot keep up, a full confirm window) does not catch up
    with an unbounded burst later: what it did not send is simply not sent, and the *reached* rate shows it.
    Fractions carry over, so 125 msg/s in 10 ms ticks is exactly 125 msg/s over time.
    """

    __slots__ = ("_last", "burst", "rate", "tokens")

    def __init__(self, rate: float, now: float, burst: float = 0.1) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self.rate = float(rate)
        self.burst = burst
        self.tokens = 0.0
        self._last = now

    @property
    def cap(self) -> float:
        return max(1.0, self.rate * self.burst)

    def set_rate(self, rate: float, now: float) -> None:
        self._refill(now)
        self.rate = float(rate)

    def _refill(self, now: float) -> None:
        dt = now - self._last
        if dt > 0:
            self.tokens = min(self.cap, self.tokens + dt * self.rate)
            self._last = now

    def available(self, now: float) -> int:
        self._refill(now)
        return int(self.tokens)

    def take(self, now: float, want: int | None = None) -> int:
        """Take up to ``want`` whole messages (all available when None); returns how many were taken."""
        self._refill(now)
        n = int(self.tokens)
        if want is not None:
            n = max(0, min(n, want))
        self.tokens -= n
        return n


def split_rate(total: float, parts: int) -> list[float]:
    """``total`` msg/s over ``parts`` senders (equal shares; they sum exactly to ``total``)."""
    if parts <= 0:
        return []
    return [total / parts] * parts


def rate_series(times: Sequence[float], counts: Sequence[int], window: float = 1.0) -> list[float]:
    """Per-sample rate of a cumulative counter over at least ``window`` seconds: (count now - count at the
    latest sample at least ``window`` before) / elapsed; the first sample when none is that old.

    The first sample's rate is 0. Spanning at least ``window`` smooths the tick-to-tick jitter of a paced
    sender, and two samples close together (after a slow depth poll) cannot make a spike out of a few
    milliseconds.
    """
    out: list[float] = []
    k = 0
    for i, t in enumerate(times):
        while k + 1 < i and times[k + 1] <= t - window + 1e-9:
            k += 1
        dt = t - times[k]
        out.append((counts[i] - counts[k]) / dt if dt > 0 else 0.0)
    return out
