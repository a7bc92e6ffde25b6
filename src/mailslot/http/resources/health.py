"""``/api/health/checks/*`` and ``/api/aliveness-test/{vhost}``, as RabbitMQ answers them.

A passing check is 200 ``{"status": "ok"}``; a failing one 503 with ``"status": "failed"``, a reason and
what failed (rabbit_mgmt_wm_health_check_*). Any management user may call them; with
``ManagementSettings.open_health_checks`` anonymous callers may too (load balancers, container probes),
while every other endpoint still needs credentials.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509

from ...core import errors as core_errors
from ...core.message import Message
from ...frontends.amqp091 import AMQP_CODEC
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
# RabbitMQ's units (rabbit_mgmt_wm_health_check_certificate_expiration): a month is a twelfth of a year.
SECONDS = {"days": 86_400, "weeks": 7 * 86_400, "months": 365 * 86_400 // 12, "years": 365 * 86_400}
RESOURCE_NAMES = {"memory": "memory", "disk": "disk space"}  # rabbit_alarm:format_as_map


def ok(**extra: Any) -> web.Response:
    return json_response({"status": "ok", **extra})


def failed(reason: str, **extra: Any) -> web.Response:
    return json_response({"status": "failed", "reason": reason, **extra}, FAILED)


def _alarms(ctx: ManagementContext) -> list[dict[str, str]]:
    return [{"resource": RESOURCE_NAMES.get(a, a), "node": ctx.node.name} for a in sorted(ctx.node.alarms())]


ALARM_REASONS = {
    "/api/health/checks/alarms": "There are alarms in effect in the cluster",
    "/api/health/checks/local-alarms": "There are alarms in effect on the node",
}
LEGACY_ALARM_REASON = "resource alarm(s) in effect"  # RabbitMQ's deprecated /api/healthchecks/node


@routes.get("/health/checks/alarms", Rule.HEALTH)
@routes.get("/health/checks/local-alarms", Rule.HEALTH)
@routes.get("/healthchecks/node", Rule.HEALTH)
@routes.get("/healthchecks/node/{node}", Rule.HEALTH)
async def alarms(request: web.Request) -> web.Response:
    """One node: the cluster's alarms are this node's."""
    found = _alarms(context(request))
    reason = ALARM_REASONS.get(request.path, LEGACY_ALARM_REASON)
    return failed(reason, alarms=found) if found else ok()


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
    """Fails when a TLS listener's certificate (or its CA file) expires within the given time, as
    RabbitMQ's check reads them: every certificate of each PEM file."""
    try:
        within = int(request.match_info["within"])
    except ValueError:
        raise bad_request("Invalid expiration value.") from None
    unit = request.match_info["unit"].lower()
    if unit not in SECONDS:
        raise bad_request("Time unit not recognised. Supported units: days, weeks, months, years.")
    ctx = context(request)
    deadline = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=within * SECONDS[unit])
    expiring = []
    for listener in ctx.node.listeners:
        if listener.certfile is None:
            continue
        cert = _expiring(listener.certfile, deadline)
        ca = _expiring(listener.cacertfile, deadline)
        if cert or ca:
            expiring.append({
                "node": ctx.node.name, "protocol": listener.protocol, "interface": listener.ip_address,
                "port": listener.port, "certfile": str(listener.certfile),
                "cacertfile": str(listener.cacertfile or ""), "certfile_expires_on": cert,
                "cacertfile_expires_on": ca,
            })
    return failed("Certificates expiring", expired=expiring) if expiring else ok()


def _expiring(path: Path | None, deadline: datetime.datetime) -> list[str] | dict[str, str]:
    """When each certificate of a PEM file expires, for those expiring by ``deadline`` (RabbitMQ's
    "YYYY-MM-DD H:MM:SS"); an unreadable file is reported, not raised."""
    if path is None:
        return []
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as error:
        return {"error": str(error)}
    ends = [c.not_valid_after_utc for c in certificates]
    return [f"{end:%Y-%m-%d} {end.hour}:{end:%M:%S}" for end in ends if end <= deadline]


@routes.get("/health/checks/node-is-quorum-critical", Rule.HEALTH)
@routes.get("/health/checks/node-is-mirror-sync-critical", Rule.HEALTH)
async def single_node(request: web.Request) -> web.Response:
    return ok(reason="single node cluster")


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
            session.publish("", ALIVENESS_QUEUE, Message("", ALIVENESS_QUEUE, b"\x00\x00", b"test_message", False, AMQP_CODEC), False)
            got = session.get(ALIVENESS_QUEUE, no_ack=True)
    except core_errors.BrokerError as error:
        raise from_core(error) from None
    if not await committed(ctx):
        return failed("the store failed to commit")
    if got is None:
        return failed("aliveness-test queue is empty")
    return ok()
