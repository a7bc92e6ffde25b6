"""Errors of the management API, answered as RabbitMQ answers them.

RabbitMQ's management plugin replies to every failure with ``{"error": TYPE, "reason": TEXT}`` and a status
code (rabbit_mgmt_util:halt_response): 400 ``bad_request`` for a body or parameter it cannot use, 401
``not_authorized`` (sic) for a failed login and ``not_authorised`` for a refused one, 404 ``Object Not
Found`` / ``Not Found`` for a missing object or path. Handlers raise :class:`ApiError`; the middleware here
turns it, and aiohttp's own routing failures, into those bodies.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..core import errors as core_errors

log = logging.getLogger("mailslot.http")

# RabbitMQ's realm (rabbit_mgmt.hrl ?AUTH_REALM): clients show it in their password prompt.
AUTH_REALM = 'Basic realm="RabbitMQ Management"'


class ApiError(Exception):
    """A failure answered with ``{"error": error, "reason": reason}`` and ``status``."""

    def __init__(self, status: int, error: str, reason: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {error}: {reason}")
        self.status, self.error, self.reason, self.headers = status, error, reason, headers or {}

    def response(self) -> web.Response:
        return json_response({"error": self.error, "reason": self.reason}, self.status, self.headers)


def bad_request(reason: Any, error: str = "bad_request") -> ApiError:
    return ApiError(400, error, reason)


def not_found(reason: str = "Not Found") -> ApiError:
    return ApiError(404, "Object Not Found", reason)


def not_authorised(reason: str) -> ApiError:
    """Authenticated, but this user may not do this (RabbitMQ answers 401 for that too)."""
    return ApiError(401, "not_authorised", reason)


def not_authenticated(reason: str = "Login failed") -> ApiError:
    return ApiError(401, "not_authorized", reason, {"WWW-Authenticate": AUTH_REALM})


def from_core(error: core_errors.BrokerError) -> ApiError:
    """A core refusal of an operation the API performed on a user's behalf, mapped as RabbitMQ's
    rabbit_mgmt_util:direct_request maps the AMQP error of its direct channel: 404 with the text for
    not_found, 401 "Access refused." for access_refused and not_allowed, 400 with the text otherwise."""
    if isinstance(error, core_errors.NotFound):
        return ApiError(404, "not_found", error.text)
    if isinstance(error, (core_errors.AccessRefused, core_errors.NotAllowed)):
        return not_authorised("Access refused.")
    return bad_request(error.text)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # RabbitMQ marks every API answer uncacheable (rabbit_mgmt_util:reply sets cache-control: no-cache).
    all_headers = {"Cache-Control": "no-cache", **(headers or {})}
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=all_headers,
    )


def empty_response(status: int = 204) -> web.Response:
    return web.Response(status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ApiError and aiohttp's routing errors as RabbitMQ's bodies; our own bugs as a 500 that is logged,
    never a dropped connection."""
    try:
        return await handler(request)
    except ApiError as error:
        return error.response()
    except web.HTTPNotFound:
        return not_found().response()
    except web.HTTPMethodNotAllowed as error:
        # As RabbitMQ (cowboy_rest): 405 with the allowed methods and no body.
        allowed = ", ".join(sorted(error.allowed_methods))
        return web.Response(status=405, headers={"Allow": allowed})
    except web.HTTPRequestEntityTooLarge:
        return bad_request("Exceeded HTTP request body size limit").response()
    except web.HTTPException:
        raise
    except core_errors.BrokerError as error:
        return from_core(error).response()
    except Exception as error:
        log.exception("management API: %s %s failed", request.method, request.path)
        return ApiError(500, "internal_server_error", f"{type(error).__name__}: {error}").response()
