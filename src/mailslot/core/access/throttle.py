"""Slowing down repeated failed logins from one address (password guessing).

RabbitMQ answers a refused login after a fixed pause (rabbit_reader ?SILENT_CLOSE_DELAY, 3 s, for
clients without ``authentication_failure_close``) and nothing more. mailslot instead counts failures per
source and delays every later login *attempt* from that source, successful or not (a delay only on
failures would tell a guesser "no answer yet: wrong password"):

* the first :data:`FREE_FAILURES` failures in :data:`WINDOW` seconds cost nothing (a mistyped password);
* after that each attempt waits ``BASE_DELAY * 2 ** (failures - FREE_FAILURES)`` seconds, at most
  :data:`MAX_DELAY` (below the 10 s handshake timeout, so a delayed login can still succeed);
* failures older than :data:`WINDOW` seconds are forgotten, so the delay wears off by itself;
* IPv6 sources are counted per /64 (one host usually owns a whole /64), IPv4 per address;
* at most :data:`MAX_SOURCES` sources are tracked, the least recently failing forgotten first, so a flood
  from many addresses costs bounded memory.

Pure: time is passed in. The AMQP front end asks :meth:`LoginThrottle.delay` before deciding a login.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque

FREE_FAILURES = 5
BASE_DELAY = 0.25  # seconds: 0.25, 0.5, 1, 2, 4, then MAX_DELAY
MAX_DELAY = 5.0
WINDOW = 60.0  # seconds a failure is remembered
MAX_SOURCES = 10_000  # tracked sources (~200 bytes each): about 2 MB at most
_MAX_REMEMBERED = 32  # failures kept per source: enough to reach MAX_DELAY, bounded per source


def source_of(host: str) -> str:
    """The key failures are counted under: the address, or its /64 for IPv6."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address.ipv4_mapped or address) if isinstance(address, ipaddress.IPv6Address) else str(address)


class LoginThrottle:
    def __init__(self) -> None:
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def failed(self, host: str, now: float) -> None:
        key = source_of(host)
        times = self._failures.pop(key, None)
        if times is None:
            times = deque(maxlen=_MAX_REMEMBERED)
        times.append(now)
        self._failures[key] = times  # most recent last
        while len(self._failures) > MAX_SOURCES:
            self._failures.popitem(last=False)

    def failures(self, host: str, now: float) -> int:
        times = self._failures.get(source_of(host))
        if not times:
            return 0
        while times and times[0] <= now - WINDOW:
            times.popleft()
        return len(times)

    def delay(self, host: str, now: float) -> float:
        """Seconds to wait before deciding a login attempt from ``host`` (0: none)."""
        excess = self.failures(host, now) - FREE_FAILURES
        if excess < 0:
            return 0.0
        return min(MAX_DELAY, BASE_DELAY * 2.0**excess)
