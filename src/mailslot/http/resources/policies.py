"""``/api/policies`` and ``/api/operator-policies``: list, show, set and clear, as RabbitMQ 3.10's
rabbit_mgmt_wm_policies / _policy / _operator_policies / _operator_policy.

Who may do what, measured on RabbitMQ 3.10.8: the lists are open to every management user, filtered to the
vhosts the user has permissions in; a vhost's list needs permissions in that vhost; one policy (GET, PUT,
DELETE) needs ``policymaker`` (or ``administrator``) and permissions in its vhost; one operator policy needs
``administrator``. A refused body is a 400 whose reason is RabbitMQ's validation text naming the key
(``Validation failed\\n\\n-1 is not a valid maximum length\\n``); a missing field is RabbitMQ's
``[{key_missing,pattern}]``. The engine (core/policies.py) validates, stores durably and applies.
"""

from __future__ import annotations

import dataclasses

from aiohttp import web

from ...core.policies import OPERATOR_POLICY, POLICY, InvalidPolicy, Policy
from ..auth import Rule, login_vhosts
from ..bodies import read_body
from ..context import context, current_user
from ..direct import committed, vhost_or_404
from ..errors import ApiError, bad_request, empty_response, json_response, not_found
from ..listing import Listing, list_documents, parse_list_query, reply_object
from ..routing import Routes

routes = Routes()

# RabbitMQ lists policies by priority, lowest first (rabbit_policy:sort_by_priority), not by vhost and name.
LISTING = Listing(document=Policy.document, basic={"vhost": "vhost", "name": "name", "priority": "priority"},
                  default_sort=("priority",))


def _kind(request: web.Request) -> str:
    return OPERATOR_POLICY if request.path.startswith("/api/operator-policies") else POLICY


async def _list(request: web.Request) -> web.Response:
    ctx = context(request)
    vhost = request.match_info.get("vhost")
    if vhost is not None:
        vhost_or_404(ctx, vhost)
        allowed = [vhost]
    else:
        allowed = login_vhosts(ctx.access, current_user(request), sorted(ctx.core.vhosts))
    allowed_set = set(allowed)
    policies = [p for p in ctx.policies.listed(_kind(request)) if p.vhost in allowed_set]
    # RabbitMQ sorts and selects columns here but neither pages nor filters by name (measured on 3.10.8).
    query = dataclasses.replace(parse_list_query(request), page=None, name=None)
    return json_response(list_documents(query, policies, LISTING))


def _path(request: web.Request) -> tuple[str, str]:
    ctx = context(request)
    name = request.match_info["vhost"]
    if name not in ctx.core.vhosts:  # RabbitMQ: PUT names the vhost, GET and DELETE do not
        raise ApiError(404, "not_found", "vhost_not_found") if request.method == "PUT" else not_found()
    return name, request.match_info["name"]


async def _show(request: web.Request) -> web.Response:
    policy = context(request).policies.get(_kind(request), *_path(request))
    if policy is None:
        raise not_found()
    return reply_object(request, policy.document())


async def _put(request: web.Request) -> web.Response:
    vhost, name = _path(request)
    body = await read_body(request)
    missing = [key for key in ("pattern", "definition") if key not in body]
    if missing:
        raise bad_request("[" + ",".join(f"{{key_missing,{key}}}" for key in missing) + "]")
    try:
        existed = context(request).policies.set(
            _kind(request), vhost, name, body["pattern"], body["definition"], body.get("priority"),
            body.get("apply-to"),
        )
    except InvalidPolicy as error:
        raise bad_request(f"Validation failed\n\n{error.text}\n") from None
    await committed(context(request))  # what the change did to live queues (dropped heads) is durable too
    return empty_response(204 if existed else 201)


async def _delete(request: web.Request) -> web.Response:
    ctx = context(request)
    if not ctx.policies.delete(_kind(request), *_path(request)):
        raise not_found()
    await committed(ctx)
    return empty_response()


for prefix, one in (("/policies", Rule.POLICIES), ("/operator-policies", Rule.ADMIN)):
    routes.get(prefix)(_list)
    routes.get(prefix + "/{vhost}", Rule.VHOST)(_list)
    routes.get(prefix + "/{vhost}/{name}", one)(_show)
    routes.put(prefix + "/{vhost}/{name}", one)(_put)
    routes.delete(prefix + "/{vhost}/{name}", one)(_delete)
