"""``/api/definitions`` (and per vhost): export with GET, import with POST, in RabbitMQ's file format.

The format is rabbit_definitions': ``rabbit_version``, ``users``, ``vhosts``, ``permissions``,
``topic_permissions``, ``parameters``, ``global_parameters``, ``policies``, ``queues``, ``exchanges``,
``bindings``, each item with the fields RabbitMQ writes (rabbit_mgmt_wm_definitions:rw_state). As in
RabbitMQ, the default exchange, ``amq.*`` exchanges, exclusive queues and the default exchange's implicit
bindings are not exported, and an import applies sections in that order (vhosts before what lives in
them, queues and exchanges before bindings), each item as the matching API call would.

Users, vhosts, permissions, topic permissions and limits go through the access model (AccessAdmin): a
user keeps the password hash and algorithm it was exported with, so its password works on both brokers.
Vhost limits travel as RabbitMQ writes them, as a ``vhost-limits`` parameter; user limits inside each user.
Policies travel as RabbitMQ writes them and go through the policy engine (core/policies.py), validated as
``PUT /api/policies`` validates them; operator policies are not part of a definitions file, as in RabbitMQ.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ...core import errors as core_errors
from ...core.policies import POLICY, InvalidPolicy
from ...core.policies import validate as validate_policy
from ...core.vhost import CommandInvalid, VirtualHost
from ..auth import Rule
from ..bodies import decode_body, parse_bool, parse_object, parse_str
from ..context import ManagementContext, context
from ..direct import committed
from ..errors import ApiError, bad_request, empty_response, json_response
from ..messages import jsonable
from ..routing import Routes
from .bindings import vhost_bindings
from .overview import PRODUCT_NAME, RABBITMQ_API_VERSION

log = logging.getLogger("mailslot.http")
routes = Routes()

# RabbitMQ keeps vhost limits as this vhost parameter (rabbit_vhost_limit), and exports them so.
VHOST_LIMITS_COMPONENT, VHOST_LIMITS_NAME = "vhost-limits", "limits"


def _exportable_exchange(name: str) -> bool:
    return bool(name) and not name.startswith("amq.")


def _topology(ctx: ManagementContext, vhosts: list[VirtualHost]) -> dict[str, list[dict[str, Any]]]:
    queues, exchanges, bindings = [], [], []
    for vhost in vhosts:
        exported = set()
        for queue in vhost.queues.values():
            if queue.deleted or queue.exclusive_owner is not None:
                continue
            exported.add(queue.name)
            queues.append(
                {"name": queue.name, "vhost": vhost.name, "durable": queue.durable, "auto_delete": queue.auto_delete,
                 "arguments": jsonable(queue.arguments)}
            )
        for exchange in vhost.exchanges.values():
            if _exportable_exchange(exchange.name):
                exchanges.append(
                    {"name": exchange.name, "vhost": vhost.name, "type": exchange.type, "durable": exchange.durable,
                     "auto_delete": exchange.auto_delete, "internal": exchange.internal,
                     "arguments": jsonable(exchange.arguments)}
                )
        for vhost_name, source, kind, destination, key, arguments in vhost_bindings(vhost):
            if not source or (kind == "queue" and destination not in exported) or (kind == "exchange" and not destination):
                continue
            bindings.append(
                {"source": source, "vhost": vhost_name, "destination": destination, "destination_type": kind,
                 "routing_key": key, "arguments": jsonable(arguments)}
            )
    return {"queues": queues, "exchanges": exchanges, "bindings": bindings}


def _parameters(ctx: ManagementContext, vhost: str | None) -> list[dict[str, Any]]:
    items = [
        {"value": value, "vhost": v, "component": component, "name": name}
        for (v, component, name), value in ctx.parameters.all()
        if vhost is None or v == vhost
    ]
    if ctx.admin is not None:
        for name in sorted(ctx.core.vhosts):
            limits = ctx.admin.access.limits.of_vhost(name)
            if limits and (vhost is None or name == vhost):
                items.append({"value": dict(limits), "vhost": name, "component": VHOST_LIMITS_COMPONENT,
                              "name": VHOST_LIMITS_NAME})
    return items


def _access_sections(ctx: ManagementContext) -> dict[str, list[dict[str, Any]]]:
    admin = ctx.admin
    if admin is None:
        return {"users": [], "permissions": [], "topic_permissions": []}
    access = admin.access
    return {
        "users": [
            {"name": u.name, "password_hash": u.password_hash, "hashing_algorithm": u.hashing_algorithm,
             "tags": list(u.tags), "limits": access.limits.of_user(u.name)}
            for u in access.users
        ],
        "permissions": [
            {"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read}
            for p in admin.list_permissions()
        ],
        "topic_permissions": [
            {"user": p.user, "vhost": p.vhost, "exchange": p.exchange, "write": p.write, "read": p.read}
            for p in admin.list_topic_permissions()
        ],
    }


def export_all(ctx: ManagementContext) -> dict[str, Any]:
    vhosts = [ctx.core.vhosts[name] for name in sorted(ctx.core.vhosts)]
    access = _access_sections(ctx)
    return {
        "rabbit_version": RABBITMQ_API_VERSION,
        "rabbitmq_version": RABBITMQ_API_VERSION,
        "product_name": PRODUCT_NAME,
        "product_version": ctx.node.product_version,
        "users": access["users"],
        "vhosts": [{"name": vhost.name} for vhost in vhosts],
        "permissions": access["permissions"],
        "topic_permissions": access["topic_permissions"],
        "parameters": _parameters(ctx, None),
        "global_parameters": [{"name": name, "value": value} for name, value in ctx.parameters.globals()],
        "policies": [p.document() for p in ctx.policies.listed(POLICY)],
        **_topology(ctx, vhosts),
    }


def export_vhost(ctx: ManagementContext, vhost: VirtualHost) -> dict[str, Any]:
    def strip(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in item.items() if k != "vhost"} for item in items]

    topology = _topology(ctx, [vhost])
    return {
        "rabbit_version": RABBITMQ_API_VERSION,
        # As RabbitMQ 3.10: parameters and policies keep their vhost in a vhost's file, topology does not.
        "parameters": _parameters(ctx, vhost.name),
        "policies": [p.document() for p in ctx.policies.listed(POLICY, vhost.name)],
        "queues": strip(topology["queues"]),
        "exchanges": strip(topology["exchanges"]),
        "bindings": strip(topology["bindings"]),
    }


@routes.get("/definitions", Rule.ADMIN)
@routes.get("/all-configuration", Rule.ADMIN)  # RabbitMQ's old name, kept by RabbitMQ too
async def get_definitions(request: web.Request) -> web.Response:
    response = json_response(export_all(context(request)))
    _maybe_download(request, response)
    return response


@routes.get("/definitions/{vhost}", Rule.ADMIN)
async def get_vhost_definitions(request: web.Request) -> web.Response:
    ctx = context(request)
    vhost = ctx.core.vhosts.get(request.match_info["vhost"])
    if vhost is None:
        raise bad_request("vhost_not_found")
    response = json_response(export_vhost(ctx, vhost))
    _maybe_download(request, response)
    return response


def _maybe_download(request: web.Request, response: web.Response) -> None:
    filename = request.query.get("download")
    if filename:
        response.headers["Content-Disposition"] = f"attachment; filename={filename}"


# ---- import ------------------------------------------------------------------------------------------


def _items(document: dict[str, Any], section: str) -> list[dict[str, Any]]:
    items = document.get(section) or []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise bad_request(f"{section}: expected a list of objects")
    return items


def _vhost_of(ctx: ManagementContext, item: dict[str, Any], section: str, only: str | None) -> VirtualHost:
    name = only if only is not None else parse_str(f"{section}.vhost", item.get("vhost", "/"))
    vhost = ctx.core.vhosts.get(name)
    if vhost is None:
        raise bad_request(f"{section}: vhost '{name}' does not exist")
    return vhost


def apply_definitions(ctx: ManagementContext, document: dict[str, Any], only: str | None = None) -> None:
    """Apply an imported file (into vhost ``only`` when given, as the per-vhost endpoint does)."""
    for item in _items(document, "policies"):  # checked before anything changes: a refused policy stops it all
        name = parse_str("policies.name", item.get("name"))
        try:
            validate_policy(POLICY, only or "/", name, item.get("pattern"), item.get("definition"),
                            item.get("priority"), item.get("apply-to"))
        except InvalidPolicy as error:
            raise bad_request(f"policies: policy '{name}': {error.text}") from None
    admin = ctx.admin
    try:
        if only is None:
            _apply_access(ctx, document)
        for item in _items(document, "parameters"):
            vhost = _vhost_of(ctx, item, "parameters", only)
            component = parse_str("parameters.component", item.get("component"))
            name = parse_str("parameters.name", item.get("name"))
            if item.get("value") is None:
                raise bad_request("parameters.value: missing (required)")
            if component == VHOST_LIMITS_COMPONENT and admin is not None:
                admin.set_vhost_limits(vhost.name, parse_object("parameters.value", item["value"]))
            else:
                ctx.parameters.set(vhost.name, component, name, item["value"])
    except core_errors.BrokerError as error:
        raise bad_request(error.text) from None
    if only is None:
        for item in _items(document, "global_parameters"):
            name = parse_str("global_parameters.name", item.get("name"))
            if item.get("value") is not None:
                ctx.parameters.set_global(name, item["value"])
    for item in _items(document, "policies"):  # before queues and exchanges, as rabbit_definitions
        vhost = _vhost_of(ctx, item, "policies", only)
        name = parse_str("policies.name", item.get("name"))
        try:
            ctx.policies.set(POLICY, vhost.name, name, item.get("pattern"), item.get("definition"),
                             item.get("priority"), item.get("apply-to"))
        except InvalidPolicy as error:
            raise bad_request(f"policies: policy '{name}' in vhost '{vhost.name}': {error.text}") from None
    try:
        for item in _items(document, "queues"):
            vhost = _vhost_of(ctx, item, "queues", only)
            vhost.declare_queue(
                parse_str("queues.name", item.get("name")),
                passive=False,
                durable=parse_bool("queues.durable", item.get("durable", True)),
                exclusive=False,
                auto_delete=parse_bool("queues.auto_delete", item.get("auto_delete", False)),
                arguments=parse_object("queues.arguments", item.get("arguments") or {}),
                owner=None,
            )
        for item in _items(document, "exchanges"):
            vhost = _vhost_of(ctx, item, "exchanges", only)
            name = parse_str("exchanges.name", item.get("name"))
            if not _exportable_exchange(name):
                continue  # RabbitMQ skips the default and amq.* exchanges on import too
            vhost.declare_exchange(
                name,
                parse_str("exchanges.type", item.get("type", "direct")),
                passive=False,
                durable=parse_bool("exchanges.durable", item.get("durable", True)),
                auto_delete=parse_bool("exchanges.auto_delete", item.get("auto_delete", False)),
                internal=parse_bool("exchanges.internal", item.get("internal", False)),
                arguments=parse_object("exchanges.arguments", item.get("arguments") or {}),
            )
        for item in _items(document, "bindings"):
            vhost = _vhost_of(ctx, item, "bindings", only)
            kind = item.get("destination_type", "queue")
            if kind not in ("queue", "exchange"):
                raise bad_request(f"bindings.destination_type: expected queue or exchange, got {kind!r}")
            vhost.bind(
                parse_str("bindings.source", item.get("source")),
                (kind, parse_str("bindings.destination", item.get("destination"))),
                parse_str("bindings.routing_key", item.get("routing_key", "")),
                parse_object("bindings.arguments", item.get("arguments") or {}),
                None,
            )
    except CommandInvalid as error:
        raise bad_request(error.text) from None
    except core_errors.BrokerError as error:
        raise bad_request(error.text) from None


def _apply_access(ctx: ManagementContext, document: dict[str, Any]) -> None:
    """users, vhosts, permissions, topic permissions (rabbit_definitions' order), as the API calls would."""
    admin = ctx.admin
    if admin is None:
        for section in ("users", "permissions", "topic_permissions"):
            if document.get(section):
                raise bad_request(f"{section}: this broker has no runtime access management")
        for item in _items(document, "vhosts"):
            name = parse_str("vhosts.name", item.get("name"))
            if name not in ctx.core.vhosts:
                raise bad_request(f"vhosts: vhost '{name}' does not exist")
        return
    for item in _items(document, "users"):
        name = parse_str("users.name", item.get("name"))
        password_hash = item.get("password_hash")
        admin.put_user(
            name,
            password=None if password_hash is not None or item.get("password") is None
            else parse_str("users.password", item["password"]),
            password_hash=None if password_hash is None else parse_str("users.password_hash", password_hash),
            hashing_algorithm=item.get("hashing_algorithm"),
            tags=item.get("tags") or [],
            rabbitmq_version=document.get("rabbitmq_version") or document.get("rabbit_version"),
        )
        limits = item.get("limits")
        if limits:
            admin.set_user_limits(name, parse_object("users.limits", limits))
    for item in _items(document, "vhosts"):
        name = parse_str("vhosts.name", item.get("name"))
        found = item.get("metadata")
        metadata: dict[str, Any] = found if isinstance(found, dict) else {}
        admin.add_vhost(name, str(item.get("description", metadata.get("description", "")) or ""),
                        item.get("tags", metadata.get("tags")) or [], item.get("default_queue_type"), exist_ok=True)
    for item in _items(document, "permissions"):
        admin.set_permissions(*(parse_str(f"permissions.{key}", item.get(key))
                                for key in ("user", "vhost", "configure", "write", "read")))
    for item in _items(document, "topic_permissions"):
        admin.set_topic_permissions(*(parse_str(f"topic_permissions.{key}", item.get(key))
                                      for key in ("user", "vhost", "exchange", "write", "read")))


async def _import(request: web.Request, only: str | None) -> web.Response:
    ctx = context(request)
    raw = await request.read()
    try:
        document = decode_body(raw)
    except ApiError:
        raise bad_request("failed_to_parse_json") from None
    apply_definitions(ctx, document, only)
    await committed(ctx)
    return empty_response()


@routes.post("/definitions", Rule.ADMIN)
@routes.post("/all-configuration", Rule.ADMIN)
async def post_definitions(request: web.Request) -> web.Response:
    return await _import(request, None)


@routes.post("/definitions/{vhost}", Rule.ADMIN)
async def post_vhost_definitions(request: web.Request) -> web.Response:
    name = request.match_info["vhost"]
    if name not in context(request).core.vhosts:
        raise ApiError(404, "not_found", "vhost_not_found")
    return await _import(request, name)
