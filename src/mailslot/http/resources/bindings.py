"""``/api/bindings`` in all four forms, and an exchange's or queue's bindings.

A binding is named in a path by its "properties key": the routing key, URL-quoted (``~`` for the empty
key), followed by ``~`` and a hash of the arguments when it has any (rabbit_mgmt_format:
pack_binding_props). The hash is mailslot's own (RabbitMQ hashes an Erlang term); both are opaque and
are only ever read back from a listing. Every queue is listed bound to the default exchange under its
own name, as RabbitMQ lists it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from aiohttp import web

from ...core import errors as core_errors
from ...core.vhost import VirtualHost
from ..auth import Rule
from ..bodies import field, read_body
from ..context import context, current_user
from ..direct import committed, require, vhost_or_404
from ..errors import empty_response, from_core, not_found
from ..listing import Listing, reply_list, reply_object
from ..messages import jsonable
from ..routing import Routes
from .common import exchange_name, listed_vhosts

routes = Routes()

KINDS = {"q": "queue", "e": "exchange"}


def args_hash(arguments: dict[str, Any]) -> str:
    """A short, stable token for a binding's arguments (canonical JSON, SHA-1, 4 bytes, base64url)."""
    canonical = json.dumps(jsonable(arguments), sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(hashlib.sha1(canonical).digest()[:4]).decode().rstrip("=")


def _quote(text: str) -> str:
    return quote_plus(text, safe="").replace("~", "%7E")


def properties_key(routing_key: str, arguments: dict[str, Any]) -> str:
    if not arguments:
        return "~" if routing_key == "" else _quote(routing_key)
    return f"{_quote(routing_key)}~{_quote(args_hash(arguments))}"


def binding_document(vhost: str, source: str, kind: str, destination: str, key: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": source,
        "vhost": vhost,
        "destination": destination,
        "destination_type": kind,
        "routing_key": key,
        "arguments": jsonable(arguments),
        "properties_key": properties_key(key, arguments),
    }


Binding = tuple[str, str, str, str, str, dict[str, Any]]  # vhost, source, kind, destination, key, arguments


def vhost_bindings(vhost: VirtualHost) -> Iterator[Binding]:
    """Every binding of a vhost: the default exchange's implicit ones first, then each exchange's."""
    for queue in vhost.queues.values():
        if not queue.deleted:
            yield (vhost.name, "", "queue", queue.name, queue.name, {})
    for exchange in vhost.exchanges.values():
        for ((kind, destination), key, _args_key), arguments in exchange.bindings.items():
            yield (vhost.name, exchange.name, kind, destination, key, arguments)


LISTING = Listing(
    document=lambda b: binding_document(*b),
    basic={
        "vhost": lambda b: b[0],
        "source": lambda b: b[1],
        "destination_type": lambda b: b[2],
        "destination": lambda b: b[3],
        "routing_key": lambda b: b[4],
        "properties_key": lambda b: properties_key(b[4], b[5]),
        "type": lambda b: 0,  # RabbitMQ sorts on "type", which bindings do not have: it is 0 for all
        "name": lambda b: b[1],
    },
    default_sort=("vhost", "source", "type", "destination", "routing_key", "properties_key"),
    name=lambda b: b[3],
)


@routes.get("/bindings", Rule.VHOST)
@routes.get("/bindings/{vhost}", Rule.VHOST)
async def list_bindings(request: web.Request) -> web.Response:
    bindings = [b for vhost in listed_vhosts(request) for b in vhost_bindings(vhost)]
    return reply_list(request, bindings, LISTING)


@routes.get("/exchanges/{vhost}/{exchange}/bindings/source", Rule.VHOST)
async def exchange_source_bindings(request: web.Request) -> web.Response:
    vhost, name = _exchange_in_path(request)
    return reply_list(request, [b for b in vhost_bindings(vhost) if b[1] == name], LISTING)


@routes.get("/exchanges/{vhost}/{exchange}/bindings/destination", Rule.VHOST)
async def exchange_destination_bindings(request: web.Request) -> web.Response:
    vhost, name = _exchange_in_path(request)
    found = [b for b in vhost_bindings(vhost) if b[2] == "exchange" and b[3] == name]
    return reply_list(request, found, LISTING)


@routes.get("/queues/{vhost}/{name}/bindings", Rule.VHOST)
async def queue_bindings(request: web.Request) -> web.Response:
    vhost = vhost_or_404(context(request), request.match_info["vhost"])
    name = request.match_info["name"]
    if name not in vhost.queues:
        raise not_found()
    found = [b for b in vhost_bindings(vhost) if b[2] == "queue" and b[3] == name]
    return reply_list(request, found, LISTING)


def _exchange_in_path(request: web.Request) -> tuple[VirtualHost, str]:
    vhost = vhost_or_404(context(request), request.match_info["vhost"])
    name = exchange_name(request)
    if name not in vhost.exchanges:
        raise not_found()
    return vhost, name


def _endpoints(request: web.Request) -> tuple[VirtualHost, str, str, str]:
    """vhost, source, destination kind, destination of a /bindings/{vhost}/e/{source}/{dtype}/{destination}."""
    vhost = vhost_or_404(context(request), request.match_info["vhost"])
    kind = KINDS.get(request.match_info["dtype"])
    if kind is None:
        raise not_found()
    destination = request.match_info["destination"]
    if kind == "exchange" and destination == "amq.default":
        destination = ""
    return vhost, exchange_name(request, "source"), kind, destination


def _between(vhost: VirtualHost, source: str, kind: str, destination: str) -> list[Binding]:
    return [b for b in vhost_bindings(vhost) if b[1] == source and b[2] == kind and b[3] == destination]


@routes.get("/bindings/{vhost}/e/{source}/{dtype}/{destination}", Rule.VHOST)
async def list_between(request: web.Request) -> web.Response:
    vhost, source, kind, destination = _endpoints(request)
    return reply_list(request, _between(vhost, source, kind, destination), LISTING)


@routes.post("/bindings/{vhost}/e/{source}/{dtype}/{destination}", Rule.VHOST)
async def create_binding(request: web.Request) -> web.Response:
    """queue.bind / exchange.bind as the caller: write on the destination, read on the source. 201 with
    the new binding's path in Location (relative, as RabbitMQ's)."""
    ctx = context(request)
    vhost, source, kind, destination = _endpoints(request)
    body = await read_body(request)
    routing_key = field(body, "routing_key", "str", "")
    arguments = field(body, "arguments", "object", {})
    user = current_user(request)
    require(ctx, user, vhost.name, "write", kind, destination)  # type: ignore[arg-type]
    require(ctx, user, vhost.name, "read", "exchange", source)
    try:
        vhost.bind(source, (kind, destination), routing_key, arguments, None)
    except core_errors.BrokerError as error:
        raise from_core(error) from None
    await committed(ctx)
    # RabbitMQ quotes each part of the new binding's path, the properties key too, so its Location carries
    # the key quoted twice (a.%2523 for a.#); a client that follows it gets the binding back either way.
    location = f"{_quote(destination)}/{_quote(properties_key(routing_key, arguments))}"
    return web.Response(status=201, headers={"Location": location})


def _binding(request: web.Request) -> Binding:
    vhost, source, kind, destination = _endpoints(request)
    wanted = request.match_info["props"]
    for binding in _between(vhost, source, kind, destination):
        if properties_key(binding[4], binding[5]) == wanted or _unquoted_match(wanted, binding):
            return binding
    raise not_found()


def _unquoted_match(wanted: str, binding: Binding) -> bool:
    """The path's key may arrive decoded once more than the listing showed it (``%23`` as ``#``)."""
    key, _, hashed = wanted.partition("~")
    return not binding[5] and not hashed and unquote_plus(key) == binding[4]


@routes.get("/bindings/{vhost}/e/{source}/{dtype}/{destination}/{props}", Rule.VHOST)
async def show_binding(request: web.Request) -> web.Response:
    return reply_object(request, binding_document(*_binding(request)))


@routes.delete("/bindings/{vhost}/e/{source}/{dtype}/{destination}/{props}", Rule.VHOST)
async def delete_binding(request: web.Request) -> web.Response:
    ctx = context(request)
    vhost_name, source, kind, destination, key, arguments = _binding(request)
    user = current_user(request)
    require(ctx, user, vhost_name, "write", kind, destination)  # type: ignore[arg-type]
    require(ctx, user, vhost_name, "read", "exchange", source)
    try:
        ctx.core.vhosts[vhost_name].unbind(source, (kind, destination), key, arguments)
    except core_errors.BrokerError as error:
        raise from_core(error) from None
    await committed(ctx)
    return empty_response()

