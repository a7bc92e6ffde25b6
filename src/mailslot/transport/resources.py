"""Readings of the broker's resources (RSS, free disk) and the timer that turns them into alarms.

The decisions live in :mod:`mailslot.core.alarms` (pure, tested with injected readings); this
module only reads the operating system, runs ``ResourceMonitor.check`` every ``interval`` seconds
on the loop (``loop.call_later``), and applies each change to the AMQP listener: block every
connection that has published, or unblock them all (see docs/backpressure.md).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from ..core.alarms import AlarmChange, Limits, ResourceMonitor

if TYPE_CHECKING:
    from .amqp_listener import AMQPListener

log = logging.getLogger("mailslot.alarms")

# RabbitMQ samples memory every 2.5 s (memory_monitor_interval) and disk at most every 10 s; one
# second here is cheap (reading /proc/self/statm and one statvfs take microseconds) and reacts sooner.
DEFAULT_INTERVAL = 1.0

Reader = Callable[[], tuple[int, int]]

_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def total_memory() -> int:
    """Memory the broker may use: physical RAM, or the container's cgroup limit when lower
    (RabbitMQ's vm_memory_monitor does the same)."""
    total = int(psutil.virtual_memory().total)
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def free_disk(path: Path) -> int:
    """Free bytes (for an unprivileged process) on the file system holding ``path``. A data
    directory not created yet (the memory store) is measured at its nearest existing parent."""
    path = Path(path).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return shutil.disk_usage(path).free


def system_reader(data_dir: Path) -> Reader:
    """Real readings: this process's resident set size and the data directory's free space."""
    process = psutil.Process()

    def read() -> tuple[int, int]:
        return int(process.memory_info().rss), free_disk(data_dir)

    return read


class ResourceAlarms:
    """Checks the resources on a timer and blocks or unblocks the listener's publishers."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: AMQPListener,
        monitor: ResourceMonitor,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.loop = loop
        self.listener = listener
        self.monitor = monitor
        self.interval = interval
        self._timer: asyncio.TimerHandle | None = None
        self._failed = False

    @property
    def active(self) -> frozenset[str]:
        return self.monitor.active

    def start(self) -> None:
        limits = self.monitor.limits
        log.info(
            "resource alarms: memory above %d bytes, free disk below %d bytes (checked every %g s)",
            limits.memory_bytes,
            limits.disk_free_bytes,
            self.interval,
        )
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def set_limits(self, limits: Limits) -> None:
        """New limits, checked at once (on the loop thread)."""
        self.monitor.limits = limits
        log.info(
            "resource limits: memory high watermark %d bytes, disk free limit %d bytes",
            limits.memory_bytes,
            limits.disk_free_bytes,
        )
        self.check()

    def check(self) -> None:
        try:
            change = self.monitor.check()
        except Exception:  # a failed reading must not stop the timer; keep the last state
            if not self._failed:
                log.exception("could not read resource usage; alarms keep their last state")
            self._failed = True
            return
        self._failed = False
        if change is not None:
            self._apply(change)

    def _tick(self) -> None:
        self._timer = None
        self.check()
        self._timer = self.loop.call_later(self.interval, self._tick)

    def _apply(self, change: AlarmChange) -> None:
        limits, reading = self.monitor.limits, change.reading
        for name in sorted(change.set):
            if name == "memory":
                used, limit = reading.memory_bytes, limits.memory_bytes
                log.warning("memory resource limit alarm set: %d bytes used, limit %d", used, limit)
            else:
                free, limit = reading.disk_free_bytes, limits.disk_free_bytes
                log.warning("disk resource limit alarm set: free disk space %d bytes, limit %d", free, limit)
            log.warning("*** Publishers will be blocked until this alarm clears ***")
        for name in sorted(change.cleared):
            log.info("%s resource limit alarm cleared", name)
        block_publishers(self.listener, change.reason)


def block_publishers(listener: AMQPListener, reason: str) -> None:
    """Alarms in effect changed: with a ``reason``, block every connection that has published (a
    connection that publishes later is blocked after that read, see AMQPStream.data_received);
    with none, unblock all. Consumers are never blocked: their backlogs must drain."""
    listener.alarm = reason
    for stream in list(listener.streams):
        conn = stream.conn
        if reason:
            if conn is not None and conn.publisher:
                stream.block(reason)
        else:
            stream.unblock()
    listener.scheduler.request()  # write the blocked / unblocked frames
