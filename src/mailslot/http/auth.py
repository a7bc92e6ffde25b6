"""Who may call what: HTTP basic auth against the broker's users, and RabbitMQ's management tag rules.

Rules of this module (rabbit_mgmt_util:is_authorized*, https://www.rabbitmq.com/docs/management#permissions):

* Every endpoint needs credentials, checked by :meth:`AccessControl.authenticate` with the caller's
  address, so the loopback rule (``guest`` only from localhost) holds here as for AMQP. The health checks
  may be opened to anonymous callers by configuration (``ManagementSettings.open_health_checks``), for
  load balancers and orchestrators that cannot send credentials.
* Only users tagged ``management``, ``policymaker``, ``monitoring`` or ``administrator`` use the API.
  ``management``: the vhosts it has permissions in. ``policymaker``: that, plus policies and parameters
  there. ``monitoring``: that, plus reading everything (every vhost, every connection). ``administrator``:
  everything.
* Refusals are RabbitMQ's: 401 ``not_authorized`` "Login failed" with a ``WWW-Authenticate`` challenge for
  bad credentials (and an empty 401 challenge for none), 401 ``not_authorised`` with RabbitMQ's text for a
  user who may not do this.
"""

from __future__ import annotations

import base64
import binascii
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from ..core.access import AccessControl, User
from ..core.errors import AccessRefused
from .errors import AUTH_REALM, ApiError, not_authenticated, not_authorised

log = logging.getLogger("mailslot.http")

MANAGEMENT_TAGS = frozenset({"management", "policymaker", "monitoring", "administrator"})


class Rule(enum.Enum):
    """What a route asks of its caller (one per rabbit_mgmt_util:is_authorized_* function)."""

    ANY = "any"  # any management user
    VHOST = "vhost"  # administrator, or a user with permissions in the path's vhost
    VHOST_VISIBLE = "vhost_visible"  # the same, monitoring users seeing every vhost too
    MONITOR = "monitor"  # monitoring or administrator
    ADMIN = "admin"
    POLICIES = "policies"  # administrator, or a policymaker with permissions in the path's vhost
    GLOBAL_PARAMETERS = "global_parameters"  # policymaker or administrator
    OWNER = "owner"  # connections and channels: checked by the handler against the object's user
    HEALTH = "health"  # any management user; anonymous too when health checks are open


REFUSALS = {
    Rule.VHOST: "User not authorised to access virtual host",
    Rule.VHOST_VISIBLE: "User not authorised to access virtual host",
    Rule.MONITOR: "Not monitor user",
    Rule.ADMIN: "Not administrator user",
    Rule.POLICIES: "User not authorised to access object",
    Rule.GLOBAL_PARAMETERS: "User not authorised to access object",
}


def is_admin(user: User) -> bool:
    return "administrator" in user.tags


def is_monitor(user: User) -> bool:
    return bool(user.tags & {"administrator", "monitoring"})


def is_policymaker(user: User) -> bool:
    return bool(user.tags & {"administrator", "policymaker"})


def is_management_user(user: User) -> bool:
    return bool(user.tags & MANAGEMENT_TAGS)


def login_vhosts(access: AccessControl, user: User, vhosts: Iterable[str]) -> list[str]:
    """The vhosts ``user`` has permissions in (a ``management`` user sees only these)."""
    return [name for name in vhosts if access.vhost_allowed(user, name)]


def visible_vhosts(access: AccessControl, user: User, vhosts: Iterable[str]) -> list[str]:
    """Every vhost for monitoring and administrator users, their own vhosts for the others."""
    names = list(vhosts)
    return names if is_monitor(user) else login_vhosts(access, user, names)


def may_see(user: User, owner: str) -> bool:
    """Connections and channels: monitoring users see everyone's, others their own."""
    return is_monitor(user) or user.name == owner


def may_close(user: User, owner: str) -> bool:
    """Closing a connection: administrators any, others their own (rabbit_mgmt_util:is_authorized_user)."""
    return is_admin(user) or user.name == owner


def _credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, separator, password = decoded.partition(":")
    return (username, password) if separator else None


def authenticate(access: AccessControl, request: web.Request) -> User:
    """The caller, or the 401 RabbitMQ answers."""
    credentials = _credentials(request)
    if credentials is None:
        # RabbitMQ answers a missing Authorization header with a bare challenge, no body.
        raise _Challenge()
    username, password = credentials
    try:
        user = access.authenticate(username, password, request.remote or "")
    except AccessRefused as refused:
        if "can only connect via localhost" in refused.text:
            log.warning("HTTP access denied: user '%s' - User can only log in via localhost", username)
            raise not_authorised("User can only log in via localhost") from None
        log.warning("HTTP access denied: user '%s' - Login failed (from %s)", username, request.remote)
        raise not_authenticated() from None
    if not is_management_user(user):
        log.warning("HTTP access denied: user '%s' - Not management user", username)
        raise not_authorised("Not management user")
    return user


class _Challenge(ApiError):
    def __init__(self) -> None:
        super().__init__(401, "", "", {"WWW-Authenticate": AUTH_REALM})

    def response(self) -> web.Response:
        return web.Response(status=401, headers=self.headers)


def check_rule(rule: Rule, user: User, access: AccessControl, vhost: str | None, vhost_exists: bool) -> None:
    """Raise the 401 RabbitMQ answers when ``user`` may not use a route guarded by ``rule`` for
    ``vhost`` (the path's, if any). A vhost that does not exist passes here and is a 404 later."""
    if rule in (Rule.ANY, Rule.OWNER, Rule.HEALTH) or is_admin(user):
        return
    allowed = True
    in_vhost = vhost is None or not vhost_exists or access.vhost_allowed(user, vhost)
    if rule is Rule.VHOST:
        allowed = in_vhost
    elif rule is Rule.VHOST_VISIBLE:
        allowed = is_monitor(user) or in_vhost
    elif rule is Rule.MONITOR:
        allowed = is_monitor(user)
    elif rule is Rule.ADMIN:
        allowed = False
    elif rule is Rule.POLICIES:
        allowed = is_policymaker(user) and in_vhost
    elif rule is Rule.GLOBAL_PARAMETERS:
        allowed = is_policymaker(user)
    if not allowed:
        log.warning("HTTP access denied: user '%s' - %s", user.name, REFUSALS[rule])
        raise not_authorised(REFUSALS[rule])


RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
