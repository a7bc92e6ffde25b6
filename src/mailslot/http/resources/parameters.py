"""``/api/parameters`` and ``/api/global-parameters``: runtime parameters, kept in the metadata store.

RabbitMQ validates a vhost parameter against the plugin that owns its component (``federation-upstream``,
``shovel``...) and refuses components of plugins that are off. mailslot keeps every parameter it is given,
used or not, so that a definitions file from a RabbitMQ with plugins imports and exports again unchanged;
the ones no part of mailslot uses are logged when set and shown with ``"mailslot_in_use": false``.
They are kept by :mod:`mailslot.http.runtime_parameters`, durable when the request is answered.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..auth import Rule, login_vhosts
from ..bodies import read_body
from ..context import ManagementContext, context, current_user
from ..direct import vhost_or_404
from ..errors import bad_request, empty_response, not_found
from ..listing import Listing, reply_list, reply_object
from ..routing import Routes
from ..runtime_parameters import USED_COMPONENTS, USED_GLOBALS, RuntimeParameters

routes = Routes()

def parameters_of(ctx: ManagementContext) -> RuntimeParameters:
    return ctx.parameters


def _document(key: tuple[str, str, str], value: Any) -> dict[str, Any]:
    vhost, component, name = key
    doc = {"value": value, "vhost": vhost, "component": component, "name": name}
    doc["mailslot_in_use"] = component in USED_COMPONENTS
    return doc


LISTING = Listing(
    document=lambda item: _document(*item),
    basic={"vhost": lambda item: item[0][0], "component": lambda item: item[0][1], "name": lambda item: item[0][2]},
)


def _visible(request: web.Request) -> list[tuple[tuple[str, str, str], Any]]:
    ctx = context(request)
    allowed = set(login_vhosts(ctx.access, current_user(request), ctx.core.vhosts))
    items = parameters_of(ctx).all()
    component = request.match_info.get("component")
    vhost = request.match_info.get("vhost")
    if vhost is not None:
        vhost_or_404(ctx, vhost)
    return [
        (key, value)
        for key, value in items
        if key[0] in allowed
        and (component is None or key[1] == component)
        and (vhost is None or key[0] == vhost)
    ]


@routes.get("/parameters", Rule.POLICIES)
@routes.get("/parameters/{component}", Rule.POLICIES)
@routes.get("/parameters/{component}/{vhost}", Rule.POLICIES)
async def list_parameters(request: web.Request) -> web.Response:
    return reply_list(request, _visible(request), LISTING)


def _path_key(request: web.Request) -> tuple[str, str, str]:
    vhost = vhost_or_404(context(request), request.match_info["vhost"]).name
    return (vhost, request.match_info["component"], request.match_info["name"])


@routes.get("/parameters/{component}/{vhost}/{name}", Rule.POLICIES)
async def show_parameter(request: web.Request) -> web.Response:
    key = _path_key(request)
    value = parameters_of(context(request)).get(*key)
    if value is None:
        raise not_found()
    return reply_object(request, _document(key, value))


@routes.put("/parameters/{component}/{vhost}/{name}", Rule.POLICIES)
async def set_parameter(request: web.Request) -> web.Response:
    key = _path_key(request)
    body = await read_body(request)
    if body.get("value") is None:
        raise bad_request("value: missing (required)")
    existed = parameters_of(context(request)).set(*key, body["value"])
    return empty_response(204 if existed else 201)


@routes.delete("/parameters/{component}/{vhost}/{name}", Rule.POLICIES)
async def delete_parameter(request: web.Request) -> web.Response:
    if not parameters_of(context(request)).delete(*_path_key(request)):
        raise not_found()
    return empty_response()


# ---- global parameters ------------------------------------------------------------------------------


def _global_document(name: str, value: Any) -> dict[str, Any]:
    return {"name": name, "value": value, "mailslot_in_use": name in USED_GLOBALS}


GLOBAL_LISTING = Listing(document=lambda item: _global_document(*item), basic={"name": lambda item: item[0]})


@routes.get("/global-parameters", Rule.GLOBAL_PARAMETERS)
async def list_global_parameters(request: web.Request) -> web.Response:
    return reply_list(request, parameters_of(context(request)).globals(), GLOBAL_LISTING)


@routes.get("/global-parameters/{name}", Rule.GLOBAL_PARAMETERS)
async def show_global_parameter(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    value = parameters_of(context(request)).global_value(name)
    if value is None:
        raise not_found()
    return reply_object(request, _global_document(name, value))


@routes.put("/global-parameters/{name}", Rule.GLOBAL_PARAMETERS)
async def set_global_parameter(request: web.Request) -> web.Response:
    body = await read_body(request)
    if body.get("value") is None:
        raise bad_request("value: missing (required)")
    existed = parameters_of(context(request)).set_global(request.match_info["name"], body["value"])
    return empty_response(204 if existed else 201)


@routes.delete("/global-parameters/{name}", Rule.GLOBAL_PARAMETERS)
async def delete_global_parameter(request: web.Request) -> web.Response:
    if not parameters_of(context(request)).delete_global(request.match_info["name"]):
        raise not_found()
    return empty_response()

