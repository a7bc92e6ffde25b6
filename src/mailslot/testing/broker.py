"""Real brokers for tests, on 127.0.0.1 and a free port (never a fixed one), no Docker needed.

- :func:`running_broker` runs one in the *current* event loop, for asyncio clients (aio-pika).
- :func:`broker_in_thread` runs one on its own loop in a background thread, for blocking clients
  (pika's BlockingConnection, kombu, Celery), which would otherwise block the loop they need.

Both take the same arguments: ``store`` ("memory" by default: fast, nothing on disk; "segments" or "sqlite" for
durability tests; "postgres" with ``postgres_dsn=...`` and a ``postgres_schema`` of the test's own), ``data_dir`` (a temporary directory, removed afterwards, when None) and any other
:class:`~mailslot.bootstrap.BrokerConfig` field as a keyword (``heartbeat=5``, ``users={...}``,
``consumer_timeout=1.0`` for a short consumer acknowledgement timeout, in seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from mailslot.bootstrap import BrokerConfig, BrokerServer

# Generous: start-up is quick, but CI machines are slow and shared. A hang is reported, not waited on.
DEFAULT_TIMEOUT = 30.0


def make_config(store: str = "memory", data_dir: str | Path | None = None, **overrides: Any) -> BrokerConfig:
    """The config the helpers use: loopback only, ephemeral ports (AMQP, HTTP API, Prometheus), the given store."""
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "amqp_port": 0,
        "http_port": 0,
        "prometheus_port": 0,
        "store": store,
    }
    if data_dir is not None:
        settings["data_dir"] = Path(data_dir)
    settings.update(overrides)
    return BrokerConfig(**settings)


@asynccontextmanager
async def running_broker(
    store: str = "memory", data_dir: str | Path | None = None, **config_overrides: Any
) -> AsyncIterator[BrokerServer]:
    """``async with running_broker() as broker:`` a started broker; ``broker.amqp_url`` to connect.

    Stopped gracefully (``await broker.stop()``) on exit, even if the body raised.
    """
    with ExitStack() as cleanup:
        if data_dir is None:
            # Every store gets a private directory, so no test writes into the working directory.
            data_dir = cleanup.enter_context(
                tempfile.TemporaryDirectory(prefix="mailslot-test-", ignore_cleanup_errors=True)
            )
        broker = BrokerServer(make_config(store, data_dir, **config_overrides))
        await broker.start()
        try:
            yield broker
        finally:
            await broker.stop()


@contextmanager
def broker_in_thread(
    store: str = "memory",
    data_dir: str | Path | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    **config_overrides: Any,
) -> Iterator[BrokerServer]:
    """``with broker_in_thread() as broker:`` a broker serving from a background thread.

    Entering returns once the broker is bound (so ``broker.amqp_url`` is connectable) and re-raises
    any start-up error here; leaving stops it gracefully and joins the thread. ``timeout`` bounds
    both waits: a broker that hangs fails the test instead of hanging it.
    """
    runner = _ThreadRunner(store, data_dir, config_overrides)
    broker = runner.start(timeout)
    try:
        yield broker
    finally:
        runner.stop(timeout)


class _ThreadRunner:
    def __init__(self, store: str, data_dir: str | Path | None, overrides: dict[str, Any]) -> None:
        self._args = (store, data_dir, overrides)
        self._thread = threading.Thread(target=self._run, name="mailslot-broker", daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._broker: BrokerServer | None = None
        self._error: BaseException | None = None

    def start(self, timeout: float) -> BrokerServer:
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"mailslot broker did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            raise self._error
        assert self._broker is not None
        return self._broker

    def stop(self, timeout: float) -> None:
        if self._loop is not None and self._stop is not None:
            # RuntimeError: the loop already closed, the broker thread ended on its own.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"mailslot broker did not stop within {timeout} s")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the test's thread by start()/stop()
            self._error = exc
        finally:
            self._started.set()

    async def _serve(self) -> None:
        store, data_dir, overrides = self._args
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        async with running_broker(store, data_dir, **overrides) as broker:
            self._broker = broker
            self._started.set()
            await self._stop.wait()
