"""``/api/health/checks/*`` and ``/api/aliveness-test/{vhost}``, as RabbitMQ answers them.

A passing check is 200 ``{"status": "ok"}``; a failing one 503 with ``"status": "failed"``, a reason and
what failed (rabbit_mgmt_wm_health_check_*). Any management user may call them; with
``ManagementSettings.open_health_checks`` anonymous callers may too (load balancers, container probes),
while every other endpoint still needs credentials.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...core import errors as core_errors
from ...core.message import Message
from ..auth import Rule
from ..context import ManagementContext, context
from ..direct import committed, direct_session, vhost_or_404
from ..errors import bad_request, from_core, json_response
from ..routing import Routes

routes = Routes()

FAILED = 503  # rabbit_mgmt.hrl ?HEALTH_CHECK_FAILURE_STATUS
ALIVENESS_QUEUE = "aliveness-test"
# The protocols the protocol-listener check knows, and the listener protocol each stands for (RabbitMQ
# accepts "amqp091" and "amqp0.9.1" for "amqp" too).
PROTOCOL_ALIASES = {
    "amqp": "amqp",
    "amqp091": "amqp",
    "amqp0.9.1": "amqp",
    "amqp0-9-1": "amqp",
    "http": "http",
    "management": "http",
    "prometheus": "http/prometheus",
    "http/prometheus": "http/prometheus",
}
SECONDS = {"days": 86_400, "weeks": 7 * 86_400, "months": 30 * 86_400, "years": 365 * 86_400}
RESOURCE_NAMES = {"memory": "memory", "disk": "disk space"}  # rabbit_alarm:format_as_map


def ok(**extra: Any) -> web.Response:
    return json_response({"status": "ok", **extra})


def failed(reason: str, **extra: Any) -> web.Response:
    return json_response({"status": "failed", "reason": reason, **extra}, FAILED)


def _alarms(ctx: ManagementContext) -> list[dict[str, str]]:
    return [{"resource": RESOURCE_NAMES.get(a, a), "node": ctx.node.name} for a in sorted(ctx.node.alarms())]


@routes.get("/health/checks/alarms", Rule.HEALTH)
async def alarms(request: web.Request) -> web.Response:
    found = _alarms(context(request))
    return failed("There are alarms in effect in the cluster", alarms=found) if found else ok()


@routes.get("/health/checks/local-alarms", Rule.HEALTH)
async def local_alarms(request: web.Request) -> web.Response:
    found = _alarms(context(request))
    return failed("There are alarms in effect on the node", alarms=found) if found else ok()


@routes.get("/health/checks/port-listener/{port}", Rule.HEALTH)
async def port_listener(request: web.Request) -> web.Response:
    try:
        port = int(request.match_info["port"])
    except ValueError:
        raise bad_request("Invalid port") from None
    ports = [lst.port for lst in context(request).node.listeners]
    if port in ports:
        return ok(port=port)
    return failed("No active listener", missing=port, ports=ports)


@routes.get("/health/checks/protocol-listener/{protocol}", Rule.HEALTH)
async def protocol_listener(request: web.Request) -> web.Response:
    asked = request.match_info["protocol"]
    protocols = [lst.protocol for lst in context(request).node.listeners]
    protocol = PROTOCOL_ALIASES.get(asked.lower(), asked)
    if protocol in protocols:
        return ok(protocol=protocol)
    return failed("No active listener", missing=asked, protocols=protocols)


@routes.get("/health/checks/virtual-hosts", Rule.HEALTH)
async def virtual_hosts(request: web.Request) -> web.Response:
    return ok()  # a mailslot vhost is a data structure in the broker's process: it is up while the broker is


@routes.get("/health/checks/certificate-expiration/{within}/{unit}", Rule.HEALTH)
async def certificate_expiration(request: web.Request) -> web.Response:
    try:
        within = int(request.match_info["within"])
    except ValueError:
        raise bad_request("Invalid expiration value.") from None
    if request.match_info["unit"] not in SECONDS:
        raise bad_request("Time unit not recognised. Supported units: days, weeks, months, years.")
    del within  # no TLS listener has a certificate yet (TLS comes with the access-control issue)
    return ok()


@routes.get("/health/checks/node-is-quorum-critical", Rule.HEALTH)
@routes.get("/health/checks/node-is-mirror-sync-critical", Rule.HEALTH)
async def single_node(request: web.Request) -> web.Response:
    return ok(reason="single node cluster")


@routes.get("/healthchecks/node", Rule.HEALTH)
@routes.get("/healthchecks/node/{node}", Rule.HEALTH)
async def legacy_node_check(request: web.Request) -> web.Response:
    """RabbitMQ's deprecated node health check: alarms fail it."""
    found = _alarms(context(request))
    return failed("resource alarm(s) in effect", alarms=found) if found else ok()


@routes.get("/aliveness-test/{vhost}", Rule.VHOST)
async def aliveness_test(request: web.Request) -> web.Response:
    """Declare the (non-durable) ``aliveness-test`` queue, publish one message to it and get it back, as
    RabbitMQ does; the queue is left in place, so a probe every few seconds changes no metadata."""
    ctx = context(request)
    vhost = vhost_or_404(ctx, request.match_info["vhost"])
    try:
        vhost.declare_queue(
            ALIVENESS_QUEUE, passive=False, durable=False, exclusive=False, auto_delete=False, arguments={}, owner=None
        )
        with direct_session(ctx, vhost) as session:
            session.publish("", ALIVENESS_QUEUE, Message("", ALIVENESS_QUEUE, b"\x00\x00", b"test_message", False), False)
            got = session.get(ALIVENESS_QUEUE, no_ack=True)
    except core_errors.BrokerError as error:
        raise from_core(error) from None
    if not await committed(ctx):
        return failed("the store failed to commit")
    if got is None:
        return failed("aliveness-test queue is empty")
    return ok()
