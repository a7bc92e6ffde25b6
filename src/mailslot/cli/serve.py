"""``mailslot serve``: run one broker in the foreground until Ctrl-C or SIGTERM.

Rules of this module: a problem the user can fix (the port is taken, the data directory cannot be
written) ends the process with one ``error: ...`` line on stderr and exit code 1, never a traceback;
a signal stops the broker gracefully (``BrokerServer.stop``) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

from mailslot.bootstrap import BrokerConfig, BrokerServer, PortInUseError
from mailslot.cli.event_loop import loop_factory
from mailslot.config import ConfigError, Schema

log = logging.getLogger("mailslot.serve")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# ``mailslot serve``'s parameters whose setting has another name. Every other parameter sets the
# BrokerConfig field of its own name, so a new flag needs no entry here (docs/configuration.md).
PARAMETER_SETTINGS = {"port": "amqp_port"}
NOT_SETTINGS = frozenset({"config"})  # parameters that are not settings themselves


def config_from_command_line(ctx: typer.Context, file: Path | None) -> BrokerConfig:
    """The broker's config: flags given on the command line > MAILSLOT_* environment > ``file`` >
    BrokerConfig's defaults. Raises ConfigError naming the key, the problem and its source."""
    flags: dict[str, tuple[Any, str]] = {}
    for param in ctx.command.params:
        name = param.name
        if name is None or name in NOT_SETTINGS:
            continue
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            flag = param.opts[0] if source.name == "COMMANDLINE" else str(getattr(param, "envvar", ""))
            flags[PARAMETER_SETTINGS.get(name, name)] = (ctx.params[name], flag)
    schema = Schema(BrokerConfig)
    for warning in schema.unknown_env():
        print(f"warning: {warning}", file=sys.stderr)
    config: BrokerConfig = schema.load(file, flags=flags)
    return config


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
        broker = BrokerServer(config)
        await broker.start()
        # BrokerServer.start logs where it listens ("AMQP listening on HOST:PORT") and where it stores
        # (broker.storage_description), once for every way of running it (CLI or mailslot.testing).
        try:
            if config.tls_files is not None or config.cluster_link_tls:
                _on_signal(signal.SIGHUP, lambda: _reload_tls(broker))
            await stop.wait()
            log.info("stopping (signal received)")
        finally:
            await broker.stop()
    return 0


def _reload_tls(broker: BrokerServer) -> None:
    """SIGHUP: new TLS connections get the certificate files as they are now; bad files keep the old."""
    try:
        broker.reload_tls()
    except ConfigError as error:
        log.error("TLS certificates not reloaded, still serving the previous ones: %s", error)


def _on_signal(sig: signal.Signals, callback: Callable[[], None]) -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
        asyncio.get_running_loop().add_signal_handler(sig, callback)


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
