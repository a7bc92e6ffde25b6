"""``mailslot serve``: run one broker in the foreground until Ctrl-C or SIGTERM.

Rules of this module: a problem the user can fix (the port is taken, the data directory cannot be
written) ends the process with one ``error: ...`` line on stderr and exit code 1, never a traceback;
a signal stops the broker gracefully (``Broker.stop``) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator

from mailslot.bootstrap import Broker, BrokerConfig, ConfigError, PortInUseError
from mailslot.cli.event_loop import loop_factory

log = logging.getLogger("mailslot.serve")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_serve(config: BrokerConfig, log_level: str = "info") -> int:
    """Serve until a stop signal; returns the process exit code."""
    with _logging_to_stderr(log_level):
        try:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                return runner.run(_serve(config))
        except (PortInUseError, ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:  # e.g. permission denied on a low port or on --data-dir, PostgreSQL down
            print(f"error: cannot start the broker: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # Ctrl-C before our own handlers were installed
            return 0


async def _serve(config: BrokerConfig) -> int:
    stop = asyncio.Event()
    # Installed before start() so that a signal during start-up still ends in a graceful stop.
    with _stop_signals(stop.set):
        broker = Broker(config)
        await broker.start()
        # Broker.start logs where it listens ("AMQP listening on HOST:PORT") and where it stores
        # (broker.storage_description), once for every way of running it (CLI or mailslot.testing).
        try:
            await stop.wait()
            log.info("stopping (signal received)")
        finally:
            await broker.stop()
    return 0


@contextlib.contextmanager
def _stop_signals(callback: Callable[[], None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in _STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, callback)
        except (NotImplementedError, RuntimeError, ValueError):
            # Windows, or not the main thread (e.g. called from a test runner's worker thread):
            # Ctrl-C then arrives as KeyboardInterrupt, which run_serve turns into exit code 0.
            continue
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _logging_to_stderr(level: str) -> Iterator[None]:
    """A server owns its process's logging: one plain line per record on stderr, greppable."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level.upper())
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
