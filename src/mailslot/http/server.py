"""asyncio glue for the management API: an aiohttp server on the broker's own event loop, and the
timer that feeds the stats sampler.

Handlers only read: they build JSON from the core and the sampler between two loop turns, so they
need no locks and never see a batch half-applied. The sampler timer runs every
:data:`~mailslot.core.stats.SAMPLE_INTERVAL` seconds (O(queues), nothing per message).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web

from ..core.broker import Broker
from ..core.stats import SAMPLE_INTERVAL, StatsSampler
from .api import all_queues, consumer_details, overview_document, queue_document, queues_document

log = logging.getLogger("mailslot.http")

# Seconds a stopping server waits for requests in flight; they are all tiny reads.
SHUTDOWN_TIMEOUT = 1.0


def process_rss() -> int | None:
    """Resident memory of this process in bytes (psutil), or None where it cannot be read."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 -- a missing reading must not stop the stats timer
        return None


def _product_version() -> str:
    try:
        return version("mailslot")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _not_found() -> web.Response:
    # RabbitMQ's management API answers unknown objects with this body.
    return web.json_response({"error": "Object Not Found", "reason": "Not Found"}, status=404)


class HTTPServer:
    """``port = await start(host, port)`` (port 0 = ephemeral); ``await stop()``."""

    def __init__(
        self,
        core: Broker,
        *,
        rss: Callable[[], int | None] = process_rss,
        interval: float = SAMPLE_INTERVAL,
    ) -> None:
        self.core = core
        self.sampler = StatsSampler()
        self._rss = rss
        self._interval = interval
        self._version = _product_version()
        self._runner: web.AppRunner | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.port = 0  # HTTP
        self.tls_port = 0  # HTTPS

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/overview", self._overview)
        app.router.add_get("/api/queues", self._queues)
        app.router.add_get("/api/queues/{vhost}", self._queues)
        app.router.add_get("/api/queues/{vhost}/{name}", self._queue)
        return app

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Bind and serve (HTTPS with ``ssl_context``); returns the bound port. Call again to serve the
        same API on one more port (HTTP and HTTPS side by side). Raises OSError (EADDRINUSE when taken);
        a first call that fails leaves nothing running."""
        first = self._runner is None
        runner = self._runner or web.AppRunner(
            self._app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        if first:
            await runner.setup()
        before = set(runner.addresses)
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except BaseException:
            if first:
                await runner.cleanup()
            raise
        self._runner = runner
        addresses: list[Any] = [a for a in runner.addresses if a not in before]
        bound = int(addresses[0][1]) if addresses else port
        if ssl_context is None:
            self.port = bound
        else:
            self.tls_port = bound
        if first:
            self._tick()  # a first sample now: rates need two
        return bound

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.sampler.sample(loop.time(), all_queues(self.core), self._rss())
        except Exception:
            log.exception("stats sampling failed")
        self._timer = loop.call_later(self._interval, self._tick)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # ---- handlers -------------------------------------------------------------------------------

    async def _overview(self, request: web.Request) -> web.Response:
        return web.json_response(overview_document(self.core, self.sampler, self._version))

    async def _queues(self, request: web.Request) -> web.Response:
        documents = queues_document(self.core, self.sampler)
        vhost = request.match_info.get("vhost")
        if vhost is not None:
            if vhost not in self.core.vhosts:
                return _not_found()
            documents = [doc for doc in documents if doc["vhost"] == vhost]
        return web.json_response(documents)

    async def _queue(self, request: web.Request) -> web.Response:
        vhost = self.core.vhosts.get(request.match_info["vhost"])
        queue = None if vhost is None else vhost.queues.get(request.match_info["name"])
        if queue is None:
            return _not_found()
        document = queue_document(self.sampler.queue_stats(queue))
        document["consumer_details"] = consumer_details(queue)  # as RabbitMQ's /api/queues/{vhost}/{name}
        return web.json_response(document)
