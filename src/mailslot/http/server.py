"""asyncio glue for the HTTP side: the management API and the Prometheus endpoint, each an aiohttp site on
the broker's own event loop, and the timer that feeds the stats sampler.

Handlers run between two loop turns of the broker, so they see no batch half-applied and need no locks;
the sampler timer runs every :data:`~mailslot.core.stats.SAMPLE_INTERVAL` seconds and costs O(queues +
channels), nothing per message.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiohttp import web

from ..core.stats import CommitStats
from .app import management_app
from .context import ManagementContext
from .metrics.app import metrics_app

log = logging.getLogger("mailslot.http")

# Seconds a stopping server waits for requests in flight; they are all short.
SHUTDOWN_TIMEOUT = 1.0


def process_rss() -> int | None:
    """Resident memory of this process in bytes (psutil), or None where it cannot be read."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 -- a missing reading must not stop the stats timer
        return None


async def serve(
    runner: web.AppRunner, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> tuple[str, int]:
    """Add a site for ``runner``'s app on ``host``:``port`` (0: a free one; HTTPS with ``ssl_context``).
    Returns the address it really listens on. Raises OSError (EADDRINUSE when taken)."""
    before = set(runner.addresses)
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    addresses: list[Any] = [a for a in runner.addresses if a not in before]
    return (str(addresses[0][0]), int(addresses[0][1])) if addresses else (host, port)


async def _runner(app: web.Application) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    return runner


class HTTPServer:
    """The management API and (optionally) the Prometheus endpoint of one broker."""

    def __init__(
        self, ctx: ManagementContext, *, interval: float = 1.0, commit_stats: CommitStats | None = None
    ) -> None:
        self.ctx = ctx
        self.interval = interval
        self.commit_stats = commit_stats
        self.api_address: tuple[str, int] | None = None  # plain HTTP
        self.tls_address: tuple[str, int] | None = None  # HTTPS
        self.metrics_address: tuple[str, int] | None = None
        self._api: web.AppRunner | None = None
        self._metrics: web.AppRunner | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        return self.api_address[1] if self.api_address is not None else 0

    @property
    def tls_port(self) -> int:
        return self.tls_address[1] if self.tls_address is not None else 0

    async def start_api(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> tuple[str, int]:
        """Serve the management API on one more port (HTTP, or HTTPS with ``ssl_context``): the same app
        on each. Raises OSError (EADDRINUSE when taken)."""
        if self._api is None:
            self._api = await _runner(management_app(self.ctx))
        address = await serve(self._api, host, port, ssl_context)
        if ssl_context is None:
            self.api_address = address
        else:
            self.tls_address = address
        if self._timer is None:
            self._tick()  # a first sample now: rates need two
        return address

    async def start_metrics(self, host: str, port: int) -> tuple[str, int]:
        if self._metrics is None:
            self._metrics = await _runner(metrics_app(self.ctx, self.commit_stats))
        self.metrics_address = await serve(self._metrics, host, port)
        return self.metrics_address

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        ctx = self.ctx
        try:
            connections = ctx.connections.connections()
            ctx.sampler.sample(
                loop.time(),
                ctx.core.vhosts.values(),
                [ch.session for conn in connections for ch in conn.channels],
                [(conn.key, conn.vhost, (conn.recv_oct, conn.send_oct)) for conn in connections],
                ctx.rss(),
                ctx.churn(),
            )
        except Exception:
            log.exception("stats sampling failed")
        self._timer = loop.call_later(self.interval, self._tick)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for runner in (self._api, self._metrics):
            if runner is not None:
                await runner.cleanup()
        self._api = self._metrics = None
