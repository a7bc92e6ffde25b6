"""``/api/connections``, ``/api/channels`` and ``/api/consumers``: list, show, close.

Connections and channels come from the front ends (``ConnectionSource``); what a user sees follows
RabbitMQ: monitoring and administrator users see every connection, others their own; closing one needs
administrator, or to be its user. A closed connection gets AMQP's 320 CONNECTION_FORCED with the reason
given in the ``X-Reason`` header (RabbitMQ's default text otherwise).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...core.connections import ChannelView, ConnectionView
from ...core.queue import Queue
from ...core.session import Consumer, Session
from ...core.stats import CONNECTION_COUNTERS, SESSION_COUNTERS, session_counts
from ..auth import Rule, may_close, may_see, visible_vhosts
from ..context import ManagementContext, context, current_user
from ..direct import vhost_or_404
from ..errors import empty_response, json_response, not_authorised, not_found
from ..listing import Listing, reply_list, reply_object
from ..messages import jsonable
from ..routing import Routes
from .common import details, message_stats

routes = Routes()

# RabbitMQ's text for a connection closed through the API (rabbit_mgmt_wm_connection:delete_resource).
DEFAULT_CLOSE_REASON = "Closed via management plugin"


# ---- documents ---------------------------------------------------------------------------------------


def connection_document(ctx: ManagementContext, conn: ConnectionView) -> dict[str, Any]:
    rates = ctx.sampler.connections.rates(conn.key)
    doc: dict[str, Any] = {
        "auth_mechanism": conn.auth_mechanism,
        "channel_max": conn.channel_max,
        "channels": len(conn.channels),
        "client_properties": jsonable(conn.client_properties),
        "connected_at": conn.connected_at,
        "frame_max": conn.frame_max,
        "host": conn.host,
        "name": conn.name,
        "node": ctx.node.name,
        "peer_cert_issuer": None,
        "peer_cert_subject": None,
        "peer_cert_validity": None,
        "peer_host": conn.peer_host,
        "peer_port": conn.peer_port,
        "port": conn.port,
        "protocol": conn.protocol,
        "recv_cnt": conn.recv_cnt,
        "send_cnt": conn.send_cnt,
        "send_pend": 0,
        "ssl": False,
        "ssl_cipher": None,
        "ssl_hash": None,
        "ssl_key_exchange": None,
        "ssl_protocol": None,
        "state": conn.state,
        "timeout": conn.timeout,
        "type": "network",
        "user": conn.user,
        "user_who_performed_action": conn.user,
        "vhost": conn.vhost,
    }
    for name, count, per_second in zip(CONNECTION_COUNTERS, (conn.recv_oct, conn.send_oct), rates, strict=True):
        details(name, count, per_second, doc)
    return doc


def _connection_details(conn: ConnectionView) -> dict[str, Any]:
    return {"name": conn.name, "peer_host": conn.peer_host, "peer_port": conn.peer_port}


def channel_document(ctx: ManagementContext, channel: ChannelView) -> dict[str, Any]:
    session = channel.session
    conn = channel.connection
    in_tx = session.tx is not None
    doc = {
        "acks_uncommitted": len(session.tx.settles) if session.tx is not None else 0,
        "confirm": channel.confirm,
        "connection_details": _connection_details(conn),
        "consumer_count": len(session.consumers),
        "global_prefetch_count": session.channel_prefetch,
        "messages_unacknowledged": session.unacked_count,
        "messages_uncommitted": len(session.tx.publishes) if session.tx is not None else 0,
        "messages_unconfirmed": channel.unconfirmed,
        "name": channel.name,
        "node": ctx.node.name,
        "number": channel.number,
        "pending_raft_commands": 0,
        "prefetch_count": session.consumer_prefetch,
        "state": "running" if session.flow_active else "flow",
        "transactional": in_tx,
        "user": conn.user,
        "user_who_performed_action": conn.user,
        "vhost": conn.vhost,
    }
    stats = message_stats(SESSION_COUNTERS, session_counts(session), ctx.sampler.sessions.rates(session))
    if stats:  # as RabbitMQ: none until the channel published or consumed
        doc["message_stats"] = stats
    return doc


def _channel_details(channel: ChannelView, node: str) -> dict[str, Any]:
    conn = channel.connection
    return {
        "connection_name": conn.name,
        "name": channel.name,
        "node": node,
        "number": channel.number,
        "peer_host": conn.peer_host,
        "peer_port": conn.peer_port,
        "user": conn.user,
    }


def consumer_document(
    ctx: ManagementContext,
    consumer: Consumer,
    queue: Queue,
    channels: dict[Session, ChannelView] | None = None,
) -> dict[str, Any]:
    """A consumer as /api/consumers and a queue's ``consumer_details`` show it. With
    x-single-active-consumer the first registered consumer is ``single_active``, the others ``waiting``."""
    if channels is None:
        channels = channels_by_session(ctx)
    single = queue.policy.single_active_consumer
    active = not single or (bool(queue.consumers) and queue.consumers[0] is consumer)
    channel = channels.get(consumer.session)
    channel_details = _channel_details(channel, ctx.node.name) if channel is not None else {}
    return {
        "arguments": jsonable(consumer.arguments or {}),
        "ack_required": not consumer.no_ack,
        "active": active,
        "activity_status": ("single_active" if active else "waiting") if single else "up",
        "channel_details": channel_details,
        "consumer_tag": consumer.tag,
        "exclusive": consumer.exclusive,
        "prefetch_count": consumer.prefetch,
        "queue": {"name": queue.name, "vhost": queue.vhost},
        "messages_unacknowledged": consumer.unacked,  # mailslot: what this consumer holds unacknowledged
    }


def channels_by_session(ctx: ManagementContext) -> dict[Session, ChannelView]:
    return {ch.session: ch for conn in ctx.connections.connections() for ch in conn.channels}


# ---- who sees what ----------------------------------------------------------------------------------


def _visible_connections(request: web.Request, vhost: str | None = None) -> list[ConnectionView]:
    ctx = context(request)
    user = current_user(request)
    if vhost is not None:
        vhost_or_404(ctx, vhost)
    return [
        conn
        for conn in ctx.connections.connections()
        if may_see(user, conn.user) and (vhost is None or conn.vhost == vhost)
    ]


def _find_connection(request: web.Request) -> ConnectionView:
    name = request.match_info["name"]
    for conn in context(request).connections.connections():
        if conn.name == name:
            return conn
    raise not_found()


def _find_channel(request: web.Request) -> ChannelView:
    name = request.match_info["name"]
    for conn in context(request).connections.connections():
        for channel in conn.channels:
            if channel.name == name:
                return channel
    raise not_found()


def _connection_listing(ctx: ManagementContext) -> Listing:
    return Listing(
        document=lambda conn: connection_document(ctx, conn),
        basic={
            "vhost": lambda c: c.vhost,
            "name": lambda c: c.name,
            "user": lambda c: c.user,
            "channels": lambda c: len(c.channels),
            "peer_host": lambda c: c.peer_host,
            "peer_port": lambda c: c.peer_port,
            "connected_at": lambda c: c.connected_at,
            "protocol": lambda c: c.protocol,
        },
    )


def _channel_listing(ctx: ManagementContext) -> Listing:
    return Listing(
        document=lambda ch: channel_document(ctx, ch),
        basic={
            "vhost": lambda ch: ch.connection.vhost,
            "name": lambda ch: ch.name,
            "user": lambda ch: ch.connection.user,
            "number": lambda ch: ch.number,
        },
    )


# ---- connections -------------------------------------------------------------------------------------


@routes.get("/connections")
@routes.get("/vhosts/{vhost}/connections", Rule.VHOST_VISIBLE)
async def list_connections(request: web.Request) -> web.Response:
    conns = _visible_connections(request, request.match_info.get("vhost"))
    return reply_list(request, conns, _connection_listing(context(request)))


@routes.get("/connections/username/{username}")
async def list_user_connections(request: web.Request) -> web.Response:
    """RabbitMQ's tracked-connection summary (name, vhost, user, node) of one user's connections."""
    ctx = context(request)
    username = request.match_info["username"]
    if not may_see(current_user(request), username):
        raise not_authorised("User not authorised to access object")
    return json_response(
        [
            {"name": c.name, "vhost": c.vhost, "user": c.user, "node": ctx.node.name}
            for c in ctx.connections.connections()
            if c.user == username
        ]
    )


@routes.delete("/connections/username/{username}")
async def close_user_connections(request: web.Request) -> web.Response:
    ctx = context(request)
    username = request.match_info["username"]
    if not may_close(current_user(request), username):
        raise not_authorised("User not authorised to access object")
    reason = request.headers.get("X-Reason", DEFAULT_CLOSE_REASON)
    for conn in ctx.connections.connections():
        if conn.user == username:
            ctx.connections.close(conn, reason)
    return empty_response()


@routes.get("/connections/{name}")
async def show_connection(request: web.Request) -> web.Response:
    conn = _find_connection(request)
    if not may_see(current_user(request), conn.user):
        raise not_authorised("User not authorised to access object")
    return reply_object(request, connection_document(context(request), conn))


@routes.delete("/connections/{name}")
async def close_connection(request: web.Request) -> web.Response:
    conn = _find_connection(request)
    if not may_close(current_user(request), conn.user):
        raise not_authorised("User not authorised to access object")
    context(request).connections.close(conn, request.headers.get("X-Reason", DEFAULT_CLOSE_REASON))
    return empty_response()


@routes.get("/connections/{name}/channels")
async def list_connection_channels(request: web.Request) -> web.Response:
    conn = _find_connection(request)
    if not may_see(current_user(request), conn.user):
        raise not_authorised("User not authorised to access object")
    return reply_list(request, conn.channels, _channel_listing(context(request)))


# ---- channels ------------------------------------------------------------------------------------------


def _visible_channels(request: web.Request, vhost: str | None = None) -> list[ChannelView]:
    return [ch for conn in _visible_connections(request, vhost) for ch in conn.channels]


@routes.get("/channels")
@routes.get("/vhosts/{vhost}/channels", Rule.VHOST_VISIBLE)
async def list_channels(request: web.Request) -> web.Response:
    channels = _visible_channels(request, request.match_info.get("vhost"))
    return reply_list(request, channels, _channel_listing(context(request)))


@routes.get("/channels/{name}")
async def show_channel(request: web.Request) -> web.Response:
    ctx = context(request)
    channel = _find_channel(request)
    if not may_see(current_user(request), channel.connection.user):
        raise not_authorised("User not authorised to access object")
    document = channel_document(ctx, channel)
    by_session = {channel.session: channel}
    document["consumer_details"] = [
        consumer_document(ctx, consumer, consumer.queue, by_session) for consumer in channel.session.consumers.values()
    ]
    document["deliveries"] = []
    document["publishes"] = []
    return reply_object(request, document)


# ---- consumers -----------------------------------------------------------------------------------------


@routes.get("/consumers")
@routes.get("/consumers/{vhost}")
async def list_consumers(request: web.Request) -> web.Response:
    """Everyone may ask; each sees the consumers of the vhosts it sees (RabbitMQ's filter_vhost)."""
    ctx = context(request)
    visible = set(visible_vhosts(ctx.access, current_user(request), sorted(ctx.core.vhosts)))
    name = request.match_info.get("vhost")
    if name is not None:
        vhost_or_404(ctx, name)
        visible &= {name}
    vhosts = [ctx.core.vhosts[n] for n in sorted(visible)]
    by_session = channels_by_session(ctx)
    pairs = [(consumer, queue) for vhost in vhosts for queue in vhost.queues.values() for consumer in queue.consumers]
    listing = Listing(
        document=lambda pair: consumer_document(ctx, pair[0], pair[1], by_session),
        basic={
            "vhost": lambda pair: pair[1].vhost,
            "consumer_tag": lambda pair: pair[0].tag,
            "queue.name": lambda pair: pair[1].name,
        },
        default_sort=("vhost", "consumer_tag"),
        name=lambda pair: pair[0].tag,
    )
    return reply_list(request, pairs, listing)
