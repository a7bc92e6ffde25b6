"""``/api/exchanges``: list, show, declare, delete, and publish.

Declare and delete act as exchange.declare / exchange.delete on a channel of the caller's (configure
permission, RabbitMQ's equivalence checks and texts, the reserved ``amq.`` prefix refused with 401 "Access
refused."). Publish routes one message with ``mandatory`` and answers once it is durable, ``{"routed":
true}`` or ``false``, as RabbitMQ's publish endpoint does with a confirm channel.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...core import errors as core_errors
from ...core.exchanges import Exchange
from ...core.message import Message
from ...core.policies import EXCHANGE
from ...core.session import REJECTED, UNROUTED
from ...core.stats import EXCHANGE_COUNTERS, exchange_counts
from ...core.ttl import parse_expiration
from ...core.vhost import CommandInvalid
from ...frontends.amqp091 import AMQP_CODEC
from ...protocols.amqp091 import properties as props
from ..auth import Rule
from ..bodies import field, query_flag, read_body
from ..context import ManagementContext, context, current_user
from ..direct import committed, direct_session, require, vhost_or_404
from ..errors import bad_request, empty_response, from_core, json_response, not_found
from ..listing import Listing, reply_list, reply_object
from ..messages import decode_payload, jsonable, properties_from_json
from ..routing import Routes
from .common import exchange_name, listed_vhosts, message_stats

routes = Routes()


def exchange_document(ctx: ManagementContext, vhost: str, exchange: Exchange) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "arguments": jsonable(exchange.arguments),
        "auto_delete": exchange.auto_delete,
        "durable": exchange.durable,
        "internal": exchange.internal,
        "name": exchange.name,
        "type": exchange.type,
        "vhost": vhost,
    }
    policy = ctx.policies.applied(vhost, EXCHANGE, exchange.name).policy
    if policy is not None:  # as RabbitMQ: only when one applies (and no operator policy shown)
        doc["policy"] = policy.name
    counts = exchange_counts(exchange)
    if any(counts):  # as RabbitMQ: an exchange nothing was published to has no message_stats
        doc["message_stats"] = message_stats(EXCHANGE_COUNTERS, counts, ctx.sampler.exchanges.rates(exchange))
    return doc


@routes.get("/exchanges", Rule.VHOST)
@routes.get("/exchanges/{vhost}", Rule.VHOST)
async def list_exchanges(request: web.Request) -> web.Response:
    ctx = context(request)
    pairs = [(vhost.name, exchange) for vhost in listed_vhosts(request) for exchange in vhost.exchanges.values()]
    listing = Listing(
        document=lambda pair: exchange_document(ctx, pair[0], pair[1]),
        basic={
            "vhost": lambda pair: pair[0],
            "name": lambda pair: pair[1].name,
            "type": lambda pair: pair[1].type,
            "durable": lambda pair: pair[1].durable,
            "auto_delete": lambda pair: pair[1].auto_delete,
            "internal": lambda pair: pair[1].internal,
        },
    )
    return reply_list(request, pairs, listing)


def _exchange(ctx: ManagementContext, request: web.Request) -> tuple[str, Exchange]:
    vhost = vhost_or_404(ctx, request.match_info["vhost"])
    exchange = vhost.exchanges.get(exchange_name(request))
    if exchange is None:
        raise not_found()
    return vhost.name, exchange


@routes.get("/exchanges/{vhost}/{exchange}", Rule.VHOST)
async def show_exchange(request: web.Request) -> web.Response:
    ctx = context(request)
    vhost, exchange = _exchange(ctx, request)
    document = exchange_document(ctx, vhost, exchange)
    document["incoming"] = []
    document["outgoing"] = []
    return reply_object(request, document)


@routes.put("/exchanges/{vhost}/{exchange}", Rule.VHOST)
async def declare_exchange(request: web.Request) -> web.Response:
    ctx = context(request)
    vhost = vhost_or_404(ctx, request.match_info["vhost"])
    name = exchange_name(request)
    body = await read_body(request)
    type_ = field(body, "type", "str", "direct")  # exchange.declare's default type, as RabbitMQ's API
    durable = field(body, "durable", "bool", False)
    auto_delete = field(body, "auto_delete", "bool", False)
    internal = field(body, "internal", "bool", False)
    arguments = field(body, "arguments", "object", {})
    require(ctx, current_user(request), vhost.name, "configure", "exchange", name)
    existed = name in vhost.exchanges
    try:
        vhost.declare_exchange(
            name, type_, passive=False, durable=durable, auto_delete=auto_delete, internal=internal, arguments=arguments
        )
    except CommandInvalid as error:
        raise bad_request(error.text) from None
    except core_errors.BrokerError as error:
        raise from_core(error) from None
    await committed(ctx)
    return empty_response(204 if existed else 201)


@routes.delete("/exchanges/{vhost}/{exchange}", Rule.VHOST)
async def delete_exchange(request: web.Request) -> web.Response:
    ctx = context(request)
    vhost = vhost_or_404(ctx, request.match_info["vhost"])
    name = exchange_name(request)
    require(ctx, current_user(request), vhost.name, "configure", "exchange", name)
    if not name or name.startswith("amq."):
        raise from_core(core_errors.AccessRefused("reserved exchange"))
    if name not in vhost.exchanges:
        raise not_found()
    try:
        vhost.delete_exchange(name, if_unused=query_flag(request, "if-unused"))
    except core_errors.BrokerError as error:
        raise from_core(error) from None
    await committed(ctx)
    return empty_response()


@routes.post("/exchanges/{vhost}/{exchange}/publish", Rule.VHOST)
async def publish(request: web.Request) -> web.Response:
    ctx = context(request)
    vhost_name, exchange = _exchange(ctx, request)
    body = await read_body(request)
    for required in ("routing_key", "properties", "payload", "payload_encoding"):
        if required not in body:
            raise bad_request(f"{required}: missing (required)")
    routing_key = field(body, "routing_key", "str", "")
    payload = decode_payload(body["payload"], body["payload_encoding"])
    properties = properties_from_json(body["properties"])
    user = current_user(request)
    require(ctx, user, vhost_name, "write", "exchange", exchange.name)
    declared = body["properties"] or {}
    user_id, expiration = declared.get("user_id"), declared.get("expiration")
    try:
        if user_id is not None and user_id != user.name:  # validated as on AMQP (rabbit_channel)
            raise core_errors.PreconditionFailed(
                f"user_id property set to '{user_id}' but authenticated user was '{user.name}'"
            )
        ttl = None if expiration is None else parse_expiration(str(expiration))
        persistent = props.delivery_mode(properties) == 2
    except core_errors.BrokerError as error:
        raise from_core(error) from None
    message = Message(
        exchange.name, routing_key, properties, payload, persistent, AMQP_CODEC, ttl
    )
    refusals = _Refusals()
    with direct_session(ctx, ctx.core.vhosts[vhost_name]) as session:
        ctx.core.publishing = refusals  # a queue on another node of the cluster may refuse it (Broker.publishing)
        try:
            outcome = session.publish(exchange.name, routing_key, message, True)
        except core_errors.BrokerError as error:
            raise from_core(error) from None
        finally:
            ctx.core.publishing = None
        if outcome == UNROUTED:
            session.stats_returned += 1  # mandatory: returned to this "channel", as RabbitMQ's API does
    ok = await committed(ctx)  # after the owners of the queues it went to answered too
    if outcome == REJECTED or refusals.refused or not ok:
        raise bad_request("Unable to publish message. Check queue limits.", error="rejected")
    return json_response({"routed": outcome != UNROUTED})


class _Refusals:
    """The one publish of a management API request, refused (or not) by a queue on another node."""

    published = 1
    refused = False

    def refuse(self, seq: int) -> None:
        self.refused = True
