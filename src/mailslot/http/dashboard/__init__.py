"""The web dashboard: plain HTML, CSS and ES modules served by the management app at ``/``.

Nothing is built and nothing comes from a CDN: the files under ``static/`` are what the browser runs, and
they talk to the management API (``/api/...``) with the logged-in user's basic-auth credentials, as any
other API client. The page carries a Content-Security-Policy that allows only this origin's scripts and
styles and no inline script, so a user-supplied name that slipped past the escaping (the scripts build
every element with DOM APIs and ``textContent``) still could not run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"
PREFIX = "/dashboard/"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# Scripts change with the broker's version; "no-cache" makes the browser revalidate (a 304 when unchanged).
CACHE = {"Cache-Control": "no-cache"}


async def index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={**SECURITY_HEADERS, **CACHE})


@web.middleware
async def dashboard_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    if request.path.startswith(PREFIX):
        response.headers.update(SECURITY_HEADERS)
        response.headers.update(CACHE)
    return response


def mount_dashboard(app: web.Application) -> None:
    """Serve the dashboard at ``/`` and its files under ``/dashboard/`` (no credentials needed to load
    them: they hold no data; every API call the page makes is authenticated)."""
    app.middlewares.append(dashboard_headers)
    app.router.add_get("/", index)
    app.router.add_static(PREFIX, STATIC, append_version=False)
