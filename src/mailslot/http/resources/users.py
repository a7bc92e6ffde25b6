"""``/api/users``, ``/api/permissions``, ``/api/topic-permissions``, vhost creation and deletion, and
``/api/vhost-limits`` / ``/api/user-limits``: the access model's runtime management
(:class:`~mailslot.core.access.admin.AccessAdmin`), answered as RabbitMQ answers it.

Every change is durable when answered (the access model writes through to the metadata store) and has
RabbitMQ's consequences: deleting a user or changing its password closes its connections, deleting a
vhost closes its connections and deletes what it holds, a permission change reaches open connections at
once. Only administrators use these endpoints (rabbit_mgmt_wm_user*, *_permission*: is_authorized_admin);
limit listings are readable by every user for the vhosts it sees.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...core import errors as core_errors
from ...core.access.admin import AccessAdmin
from ...core.access.records import PermissionRecord, TopicPermissionRecord, UserRecord
from ..auth import Rule, visible_vhosts
from ..bodies import field, parse_str, read_body
from ..context import ManagementContext, context, current_user
from ..errors import ApiError, bad_request, empty_response, json_response, not_found
from ..listing import Listing, reply_list, reply_object
from ..routing import Routes
from ..tracing_api import forget_tracing, set_tracing, tracing_flag

routes = Routes()


def admin_of(ctx: ManagementContext) -> AccessAdmin:
    if ctx.admin is None:  # an API served without an access model (never from bootstrap)
        raise ApiError(405, "bad_request", "this broker has no runtime access management")
    return ctx.admin


def _refused(error: core_errors.BrokerError) -> ApiError:
    """The access model's refusals: an unknown user or vhost is 404, a bad value 400 with its text."""
    if isinstance(error, core_errors.NotFound):
        return not_found()
    return bad_request(error.text)


# ---- users ---------------------------------------------------------------------------------------------


def user_document(ctx: ManagementContext, record: UserRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "password_hash": record.password_hash,
        "hashing_algorithm": record.hashing_algorithm,
        "tags": list(record.tags),
        "limits": admin_of(ctx).access.limits.of_user(record.name),
    }


def _user_listing(ctx: ManagementContext) -> Listing:
    return Listing(
        document=lambda record: user_document(ctx, record),
        basic={"name": lambda r: r.name, "vhost": lambda r: ""},
        default_sort=("name",),
    )


@routes.get("/users", Rule.ADMIN)
async def list_users(request: web.Request) -> web.Response:
    ctx = context(request)
    return reply_list(request, list(admin_of(ctx).access.users), _user_listing(ctx))


@routes.get("/users/without-permissions", Rule.ADMIN)
async def list_users_without_permissions(request: web.Request) -> web.Response:
    ctx = context(request)
    access = admin_of(ctx).access
    with_some = {record.user for record in access.permissions.records()}
    users = [record for record in access.users if record.name not in with_some]
    return reply_list(request, users, _user_listing(ctx))


@routes.post("/users/bulk-delete", Rule.ADMIN)
async def bulk_delete_users(request: web.Request) -> web.Response:
    admin = admin_of(context(request))
    names = field(await read_body(request), "users", "any", required=True)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad_request("users: expected a list of user names")
    for name in names:
        if name not in admin.access.users:
            raise bad_request(["no_such_user", name])
    for name in names:
        admin.delete_user(name)
    return empty_response()


def _user(ctx: ManagementContext, request: web.Request) -> UserRecord:
    record = admin_of(ctx).access.users.get(request.match_info["user"])
    if record is None:
        raise not_found()
    return record


@routes.get("/users/{user}", Rule.ADMIN)
async def show_user(request: web.Request) -> web.Response:
    ctx = context(request)
    return reply_object(request, user_document(ctx, _user(ctx, request)))


@routes.put("/users/{user}", Rule.ADMIN)
async def put_user(request: web.Request) -> web.Response:
    """Create or replace: ``password`` (hashed here) or ``password_hash`` with ``hashing_algorithm``, and
    ``tags`` (a list or "a,b"), which RabbitMQ requires; neither password field clears the password."""
    ctx = context(request)
    admin = admin_of(ctx)
    name = request.match_info["user"]
    body = await read_body(request)
    if "tags" not in body:
        raise bad_request("tags_not_present")
    tags = body["tags"]
    if not isinstance(tags, (str, list)) or (isinstance(tags, list) and not all(isinstance(t, str) for t in tags)):
        raise bad_request("tags: expected a list of tags or a comma-separated string")
    password = field(body, "password", "str")
    password_hash = field(body, "password_hash", "str")
    if password is not None and password_hash is not None:
        raise bad_request("both_password_and_password_hash_are_provided")
    existed = name in admin.access.users
    try:
        admin.put_user(
            name,
            password=password,
            password_hash=password_hash,
            hashing_algorithm=field(body, "hashing_algorithm", "str"),
            tags=tags,
        )
    except core_errors.BrokerError as error:
        raise _refused(error) from None
    return empty_response(204 if existed else 201)


@routes.delete("/users/{user}", Rule.ADMIN)
async def delete_user(request: web.Request) -> web.Response:
    ctx = context(request)
    admin_of(ctx).delete_user(_user(ctx, request).name)
    return empty_response()


# ---- permissions ---------------------------------------------------------------------------------------


def permission_document(record: PermissionRecord) -> dict[str, Any]:
    return {"user": record.user, "vhost": record.vhost, "configure": record.configure, "write": record.write,
            "read": record.read}


def topic_permission_document(record: TopicPermissionRecord) -> dict[str, Any]:
    return {"user": record.user, "vhost": record.vhost, "exchange": record.exchange, "write": record.write,
            "read": record.read}


PERMISSIONS = Listing(
    document=permission_document,
    basic={"vhost": lambda r: r.vhost, "user": lambda r: r.user, "name": lambda r: r.user},
    default_sort=("vhost", "user"),
)
TOPIC_PERMISSIONS = Listing(
    document=topic_permission_document,
    basic={"vhost": lambda r: r.vhost, "user": lambda r: r.user, "exchange": lambda r: r.exchange,
           "name": lambda r: r.user},
    default_sort=("vhost", "user", "exchange"),
)


def _filters(ctx: ManagementContext, request: web.Request) -> tuple[str | None, str | None]:
    """(user, vhost) a listing is narrowed to by its path; 404 for one that does not exist."""
    user = _user(ctx, request).name if "user" in request.match_info else None
    vhost = _vhost_record(ctx, request.match_info["vhost"]) if "vhost" in request.match_info else None
    return user, vhost


@routes.get("/permissions", Rule.ADMIN)
@routes.get("/users/{user}/permissions", Rule.ADMIN)
@routes.get("/vhosts/{vhost}/permissions", Rule.ADMIN)
async def list_permissions(request: web.Request) -> web.Response:
    ctx = context(request)
    user, vhost = _filters(ctx, request)
    return reply_list(request, admin_of(ctx).list_permissions(user=user, vhost=vhost), PERMISSIONS)


def _vhost_record(ctx: ManagementContext, name: str) -> str:
    if name not in admin_of(ctx).access.vhosts:
        raise not_found()
    return name


def _permission(ctx: ManagementContext, request: web.Request) -> PermissionRecord:
    vhost, user = request.match_info["vhost"], request.match_info["user"]
    for record in admin_of(ctx).list_permissions(user=user, vhost=vhost):
        return record
    raise not_found()


@routes.get("/permissions/{vhost}/{user}", Rule.ADMIN)
async def show_permission(request: web.Request) -> web.Response:
    return reply_object(request, permission_document(_permission(context(request), request)))


@routes.put("/permissions/{vhost}/{user}", Rule.ADMIN)
async def set_permission(request: web.Request) -> web.Response:
    ctx = context(request)
    admin = admin_of(ctx)
    vhost, user = request.match_info["vhost"], request.match_info["user"]
    body = await read_body(request)
    patterns = [parse_str(key, field(body, key, "str", required=True)) for key in ("configure", "write", "read")]
    if user not in admin.access.users or vhost not in admin.access.vhosts:
        raise bad_request("vhost_or_user_not_found")
    existed = bool(admin.list_permissions(user=user, vhost=vhost))
    try:
        admin.set_permissions(user, vhost, *patterns)
    except core_errors.BrokerError as error:
        raise _refused(error) from None
    return empty_response(204 if existed else 201)


@routes.delete("/permissions/{vhost}/{user}", Rule.ADMIN)
async def clear_permission(request: web.Request) -> web.Response:
    ctx = context(request)
    record = _permission(ctx, request)
    admin_of(ctx).clear_permissions(record.user, record.vhost)
    return empty_response()


# ---- topic permissions -----------------------------------------------------------------------------------


@routes.get("/topic-permissions", Rule.ADMIN)
@routes.get("/users/{user}/topic-permissions", Rule.ADMIN)
@routes.get("/vhosts/{vhost}/topic-permissions", Rule.ADMIN)
async def list_topic_permissions(request: web.Request) -> web.Response:
    ctx = context(request)
    user, vhost = _filters(ctx, request)
    return reply_list(request, admin_of(ctx).list_topic_permissions(user=user, vhost=vhost), TOPIC_PERMISSIONS)


def _topic_permissions(ctx: ManagementContext, request: web.Request) -> list[TopicPermissionRecord]:
    vhost, user = request.match_info["vhost"], request.match_info["user"]
    exchange = request.match_info.get("exchange")
    found = [r for r in admin_of(ctx).list_topic_permissions(user=user, vhost=vhost)
             if exchange is None or r.exchange == exchange]
    if not found:
        raise not_found()
    return found


@routes.get("/topic-permissions/{vhost}/{user}", Rule.ADMIN)
async def show_topic_permissions(request: web.Request) -> web.Response:
    records = _topic_permissions(context(request), request)
    return json_response([topic_permission_document(r) for r in records])


@routes.put("/topic-permissions/{vhost}/{user}", Rule.ADMIN)
async def set_topic_permission(request: web.Request) -> web.Response:
    ctx = context(request)
    admin = admin_of(ctx)
    vhost, user = request.match_info["vhost"], request.match_info["user"]
    body = await read_body(request)
    exchange, write, read = (parse_str(key, field(body, key, "str", required=True)) for key in ("exchange", "write", "read"))
    if user not in admin.access.users or vhost not in admin.access.vhosts:
        raise bad_request("vhost_or_user_not_found")
    existed = any(r.exchange == exchange for r in admin.list_topic_permissions(user=user, vhost=vhost))
    try:
        admin.set_topic_permissions(user, vhost, exchange, write, read)
    except core_errors.BrokerError as error:
        raise _refused(error) from None
    return empty_response(204 if existed else 201)


@routes.delete("/topic-permissions/{vhost}/{user}", Rule.ADMIN)
@routes.delete("/topic-permissions/{vhost}/{user}/{exchange}", Rule.ADMIN)
async def clear_topic_permissions(request: web.Request) -> web.Response:
    ctx = context(request)
    records = _topic_permissions(ctx, request)
    admin_of(ctx).clear_topic_permissions(records[0].user, records[0].vhost, request.match_info.get("exchange"))
    return empty_response()


# ---- vhosts: create and delete ----------------------------------------------------------------------------


@routes.put("/vhosts/{vhost}", Rule.ADMIN)
async def put_vhost(request: web.Request) -> web.Response:
    """Create a vhost, or change an existing one's description and tags (201 / 204). RabbitMQ grants
    nobody rights on a new vhost through this call; neither does mailslot."""
    ctx = context(request)
    admin = admin_of(ctx)
    name = request.match_info["vhost"]
    body = await read_body(request)
    description = field(body, "description", "str", "")
    tags = body.get("tags") or []
    if not isinstance(tags, (str, list)):
        raise bad_request("tags: expected a list of tags or a comma-separated string")
    default_queue_type = field(body, "default_queue_type", "str")
    tracing = tracing_flag(body.get("tracing"))  # checked before anything changes, as RabbitMQ
    existed = name in admin.access.vhosts
    try:
        admin.add_vhost(name, description, tags, default_queue_type, exist_ok=True)
    except core_errors.BrokerError as error:
        raise _refused(error) from None
    if tracing is not None:
        set_tracing(request, name, tracing)  # RabbitMQ's per-vhost firehose flag (http/tracing_api.py)
    return empty_response(204 if existed else 201)


@routes.delete("/vhosts/{vhost}", Rule.ADMIN)
async def delete_vhost(request: web.Request) -> web.Response:
    ctx = context(request)
    admin = admin_of(ctx)
    name = _vhost_record(ctx, request.match_info["vhost"])
    admin.delete_vhost(name)
    forget_tracing(request, name)
    return empty_response()


# ---- limits -------------------------------------------------------------------------------------------------


def _limit_value(body: dict[str, Any]) -> Any:
    if "value" not in body:
        raise bad_request("value: missing (required)")
    return body["value"]


@routes.get("/vhost-limits", Rule.VHOST_VISIBLE)
@routes.get("/vhost-limits/{vhost}", Rule.VHOST_VISIBLE)
async def list_vhost_limits(request: web.Request) -> web.Response:
    ctx = context(request)
    limits = admin_of(ctx).access.limits
    names = visible_vhosts(ctx.access, current_user(request), sorted(r.name for r in admin_of(ctx).access.vhosts))
    asked = request.match_info.get("vhost")
    if asked is not None:
        _vhost_record(ctx, asked)
        names = [n for n in names if n == asked]
    items = [{"vhost": name, "value": limits.of_vhost(name)} for name in names if limits.of_vhost(name)]
    return json_response(items)


@routes.put("/vhost-limits/{vhost}/{name}", Rule.ADMIN)
async def set_vhost_limit(request: web.Request) -> web.Response:
    ctx = context(request)
    admin = admin_of(ctx)
    vhost = _vhost_record(ctx, request.match_info["vhost"])
    value = _limit_value(await read_body(request))
    current = dict(admin.access.limits.of_vhost(vhost))
    try:
        admin.set_vhost_limits(vhost, {**current, request.match_info["name"]: value})
    except core_errors.BrokerError as error:
        raise _refused(error) from None
    return empty_response()


@routes.delete("/vhost-limits/{vhost}/{name}", Rule.ADMIN)
async def clear_vhost_limit(request: web.Request) -> web.Response:
    ctx = context(request)
    vhost = _vhost_record(ctx, request.match_info["vhost"])
    admin_of(ctx).clear_vhost_limits(vhost, request.match_info["name"])
    return empty_response()


@routes.get("/user-limits", Rule.VHOST_VISIBLE)
@routes.get("/user-limits/{user}", Rule.VHOST_VISIBLE)
async def list_user_limits(request: web.Request) -> web.Response:
    ctx = context(request)
    access = admin_of(ctx).access
    user = current_user(request)
    asked = request.match_info.get("user")
    names = [r.name for r in access.users if asked is None or r.name == asked]
    if asked is not None and not names:
        raise not_found()
    if "administrator" not in user.tags and "monitoring" not in user.tags:
        names = [n for n in names if n == user.name]  # others' limits are not a management user's business
    return json_response([{"user": n, "value": access.limits.of_user(n)} for n in names if access.limits.of_user(n)])


@routes.put("/user-limits/{user}/{name}", Rule.ADMIN)
async def set_user_limit(request: web.Request) -> web.Response:
    ctx = context(request)
    admin = admin_of(ctx)
    user = _user(ctx, request).name
    value = _limit_value(await read_body(request))
    current = dict(admin.access.limits.of_user(user))
    try:
        admin.set_user_limits(user, {**current, request.match_info["name"]: value})
    except core_errors.BrokerError as error:
        raise _refused(error) from None
    return empty_response()


@routes.delete("/user-limits/{user}/{name}", Rule.ADMIN)
async def clear_user_limit(request: web.Request) -> web.Response:
    ctx = context(request)
    admin_of(ctx).clear_user_limits(_user(ctx, request).name, request.match_info["name"])
    return empty_response()
