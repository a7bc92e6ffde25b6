"""Resource alarms: the memory and disk limits and the pure logic that decides when they are set.

Rules of this module: it reads no clock, no /proc and no disk. Readings come from a function the
host injects (``ResourceMonitor(read, limits)``); ``check()`` turns one reading into the alarms in
effect and reports what changed. The transport (``transport/resources.py``) calls it on a timer
and blocks or unblocks publishing connections on each change.

Semantics follow RabbitMQ (https://www.rabbitmq.com/docs/alarms, memory.html, disk-alarms.html):

- the memory alarm is set while the broker's memory use is *above* the high watermark;
- the disk alarm is set while free space on the data directory's disk is *below* the free limit;
- the two are independent; publishers are blocked while either is set, unblocked when both clear;
- the reason text of ``connection.blocked`` is ``"low on memory"``, ``"low on disk"``, or both
  joined with ``" & "`` (rabbit_reader's format_blocked_by).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

MEMORY = "memory"
DISK = "disk"
REASONS = {MEMORY: "low on memory", DISK: "low on disk"}  # rabbit_reader:format_blocked_by/1

# RabbitMQ's defaults: vm_memory_high_watermark.relative = 0.4, disk_free_limit.absolute = 50MB.
DEFAULT_MEMORY_HIGH_WATERMARK = "0.4"
DEFAULT_DISK_FREE_LIMIT = "50MB"

# RabbitMQ's information units (memory.html, "Memory threshold: absolute"): k/KiB, M/MiB, G/GiB,
# T/TiB are powers of 1024; kB/KB, MB, GB, TB are powers of 1000. No unit: bytes.
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class LimitError(ValueError):
    """A watermark or limit that cannot be understood (the operator's mistake, reported at start)."""


def parse_size(text: str) -> int:
    """``"512MB"`` -> 512000000, ``"1GiB"`` -> 1073741824, ``"1000"`` -> 1000 (RabbitMQ's units)."""
    match = _SIZE.match(text)
    if match is None:
        raise LimitError(f"not a size: {text!r} (examples: 50MB, 1GiB, 2000000)")
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise LimitError(f"unknown unit {unit!r} in {text!r}; use k, M, G, T (1024-based) or kB, MB, GB, TB")
    return int(float(number) * factor)


def memory_limit(spec: str | float, total_memory: int) -> int:
    """The memory watermark in bytes.

    - a bare number (``0.4``, ``"0.6"``): a fraction of total memory (vm_memory_high_watermark.relative);
      0 sets the alarm at once and so blocks every publisher, as in RabbitMQ;
    - a size (``"512MB"``, ``"2GiB"``, optionally ``"absolute:512MB"``): that many bytes
      (vm_memory_high_watermark.absolute).
    """
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return _fraction(float(spec), total_memory, "memory high watermark")
    text = str(spec).strip()
    if text.startswith("absolute:"):
        return parse_size(text.removeprefix("absolute:"))
    if text.startswith("relative:"):
        text = text.removeprefix("relative:")
    try:
        fraction = float(text)
    except ValueError:
        return parse_size(text)
    return _fraction(fraction, total_memory, "memory high watermark")


def disk_free_limit(spec: str | int, total_memory: int) -> int:
    """The free-disk limit in bytes.

    - a size (``"50MB"``, ``"1GB"``, or an int of bytes): absolute (disk_free_limit.absolute);
    - relative to total memory: ``"mem_relative:1.5"`` (RabbitMQ's spelling) or the shorter ``"1.5x"``
      (disk_free_limit.relative). RabbitMQ suggests 1.0 to 2.0 so a memory-sized flush always fits.
    """
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 0:
            raise LimitError(f"disk free limit must not be negative: {spec}")
        return spec
    text = str(spec).strip()
    relative: str | None = None
    if text.startswith("mem_relative:"):
        relative = text.removeprefix("mem_relative:")
    elif text.lower().endswith("x"):
        relative = text[:-1]
    if relative is None:
        return parse_size(text.removeprefix("absolute:"))
    try:
        factor = float(relative)
    except ValueError:
        raise LimitError(f"not a memory multiple: {spec!r} (examples: mem_relative:1.0, 2.0x)") from None
    if factor < 0:
        raise LimitError(f"disk free limit must not be negative: {spec!r}")
    return int(factor * total_memory)


def _fraction(value: float, total_memory: int, what: str) -> int:
    if value < 0:
        raise LimitError(f"{what} must not be negative: {value}")
    return int(value * total_memory)


@dataclass(frozen=True)
class Limits:
    memory_bytes: int  # the memory alarm is set while memory use is above this
    disk_free_bytes: int  # the disk alarm is set while free disk space is below this

    @classmethod
    def parse(cls, memory_high_watermark: str | float, disk_free: str | int, total_memory: int) -> Limits:
        return cls(
            memory_limit(memory_high_watermark, total_memory), disk_free_limit(disk_free, total_memory)
        )


@dataclass(frozen=True)
class Reading:
    memory_bytes: int  # the broker's memory use (RSS)
    disk_free_bytes: int  # free space on the data directory's file system


@dataclass(frozen=True)
class AlarmChange:
    """What one check changed: alarms newly ``set`` and ``cleared``, and all now in ``active``."""

    set: frozenset[str]
    cleared: frozenset[str]
    active: frozenset[str]
    reading: Reading

    @property
    def reason(self) -> str:
        return blocked_reason(self.active)


def blocked_reason(active: frozenset[str]) -> str:
    """The ``connection.blocked`` reason for these alarms, "" when none is set."""
    return " & ".join(REASONS[name] for name in (MEMORY, DISK) if name in active)


ReadFn = Callable[[], "tuple[int, int] | Reading"]


class ResourceMonitor:
    """Turns readings into alarm state. ``read()`` returns ``(memory_bytes, disk_free_bytes)``."""

    def __init__(self, read: ReadFn, limits: Limits) -> None:
        self._read = read
        self.limits = limits
        self.active: frozenset[str] = frozenset()
        self.last: Reading | None = None

    @property
    def reason(self) -> str:
        return blocked_reason(self.active)

    def set_limits(self, limits: Limits) -> AlarmChange | None:
        """New limits apply at once (``rabbitmqctl set_vm_memory_high_watermark`` does the same)."""
        self.limits = limits
        return self.check()

    def check(self) -> AlarmChange | None:
        """Take one reading; return the change, or None when the alarms in effect are the same.
        A reading that raises propagates and leaves the state as it was."""
        raw = self._read()
        reading = raw if isinstance(raw, Reading) else Reading(int(raw[0]), int(raw[1]))
        self.last = reading
        return self.evaluate(reading)

    def evaluate(self, reading: Reading) -> AlarmChange | None:
        limits = self.limits
        active: set[str] = set()
        if reading.memory_bytes > limits.memory_bytes:
            active.add(MEMORY)
        if reading.disk_free_bytes < limits.disk_free_bytes:
            active.add(DISK)
        now = frozenset(active)
        before = self.active
        if now == before:
            return None
        self.active = now
        return AlarmChange(now - before, before - now, now, reading)
