"""``/api/queues``: list, show, declare, delete, purge; get (mailslot's peek and browse: http/extras.py).

Documents carry RabbitMQ's fields (rabbit_mgmt_format:queue plus the stats the queue process reports):
depths and their rates (``messages``, ``messages_ready``, ``messages_unacknowledged`` with ``_details``),
``message_stats`` (publish, deliver, deliver_no_ack, get, get_no_ack, get_empty, deliver_get, ack, redeliver
and their rates), memory-resident and paged-out counts, consumers. mailslot adds ``drain_seconds`` and
``full_seconds`` (the forecasts of docs/management-api.md). Erlang process internals (``reductions``,
``garbage_collection``, ``backing_queue_status``) have no counterpart and are left out.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...core import errors as core_errors
from ...core.policies import QUEUE
from ...core.queue import Queue
from ...core.stats import QUEUE_COUNTERS, QUEUE_SAMPLE, active_consumer_tag, memory_estimate, queue_counts
from ...frontends.amqp091 import AMQP_CODEC
from ..auth import Rule
from ..bodies import field, parse_int, query_flag, read_body
from ..context import ManagementContext, context, current_user
from ..direct import committed, direct_session, require, vhost_or_404
from ..errors import bad_request, empty_response, from_core, json_response, not_found
from ..listing import Listing, reply_list, reply_object
from ..messages import ENCODINGS, jsonable, message_document
from ..routing import Routes
from .common import details, listed_vhosts, message_stats, rate
from .consumers import consumer_document

routes = Routes()

ACK_MODES = ("ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false")
# What the owner of a queue on another node does with the messages of such a get (Queue.remote.get).
REMOTE_SETTLE = {"ack_requeue_true": "requeue", "ack_requeue_false": "take", "reject_requeue_true": "requeue",
                 "reject_requeue_false": "reject"}
# Messages one get or peek may return: RabbitMQ sets no bound, but each one is a JSON document in one
# response; 10,000 of 4 KB is 40 MB, which is where a browser tab or a script stops being helped.
MAX_MESSAGES_PER_REQUEST = 10_000
_SAMPLE_INDEX = {name: i for i, name in enumerate(QUEUE_SAMPLE)}


def queue_document(ctx: ManagementContext, queue: Queue) -> dict[str, Any]:
    """A queue as /api/queues lists it."""
    counts = queue_counts(queue)
    rates = ctx.sampler.queues.rates(queue)
    ready, unacked, consumers = ctx.node.depths(queue)  # in a cluster: the owner's figures
    held, held_unacked = queue.message_count, queue.unacked  # what this node holds in memory
    paged = queue.paged
    ready_bytes = queue.ready_bytes
    forecast = ctx.sampler.queue_stats(queue)
    applied = ctx.policies.applied(queue.vhost, QUEUE, queue.name, queue.arguments)
    doc: dict[str, Any] = {
        "arguments": jsonable(queue.arguments),
        "auto_delete": queue.auto_delete,
        "consumers": consumers,
        "durable": queue.durable,
        "effective_policy_definition": applied.definition,
        "exclusive": queue.exclusive_owner is not None,
        "exclusive_consumer_tag": next((c.tag for c in queue.consumers if c.exclusive), None),
        "head_message_timestamp": None,
        "memory": memory_estimate(held - paged + held_unacked, ready_bytes),
        "message_bytes": ready_bytes,
        "message_bytes_ready": ready_bytes,
        "messages_paged_out": paged,
        "messages_ram": held - paged + held_unacked,
        "messages_ready_ram": held - paged,
        "messages_unacknowledged_ram": held_unacked,
        "name": queue.name,
        "node": ctx.node.owner_of(queue.key),  # in a cluster: the node that owns it
        "operator_policy": applied.operator_policy.name if applied.operator_policy else None,
        "policy": applied.policy.name if applied.policy else None,
        "recoverable_slaves": None,
        "single_active_consumer_tag": active_consumer_tag(queue),
        "state": "running",
        "type": "classic",
        "vhost": queue.vhost,
        # mailslot's forecasts, in seconds (null: never)
        "drain_seconds": _seconds(forecast.drain_seconds),
        "full_seconds": _seconds(forecast.full_seconds),
    }
    stats = message_stats(QUEUE_COUNTERS, counts, rates)
    if stats:  # as RabbitMQ: none until something was published or delivered
        doc["message_stats"] = stats
    if not paged:  # the bytes of paged-out bodies are not counted apart, so these show only when exact
        doc["message_bytes_ram"] = ready_bytes
        doc["message_bytes_paged_out"] = 0
    for name, depth in (("messages", ready + unacked), ("messages_ready", ready), ("messages_unacknowledged", unacked)):
        details(name, depth, rates[_SAMPLE_INDEX[name]], doc)
    return doc



def _seconds(value: float | None) -> float | None:
    return None if value is None else rate(value)


def _listing(ctx: ManagementContext) -> Listing:
    return Listing(
        document=lambda queue: queue_document(ctx, queue),
        basic={
            "vhost": "vhost",
            "name": "name",
            "durable": "durable",
            "auto_delete": "auto_delete",
            "exclusive": lambda q: q.exclusive_owner is not None,
            "consumers": lambda q: ctx.node.depths(q)[2],
            "messages": lambda q: sum(ctx.node.depths(q)[:2]),
            "messages_ready": lambda q: ctx.node.depths(q)[0],
            "messages_unacknowledged": lambda q: ctx.node.depths(q)[1],
            "node": lambda q: ctx.node.owner_of(q.key),
            "type": lambda q: "classic",
            "state": lambda q: "running",
        },
    )


@routes.get("/queues", Rule.VHOST)
@routes.get("/queues/{vhost}", Rule.VHOST)
async def list_queues(request: web.Request) -> web.Response:
    ctx = context(request)
    queues = [q for vhost in listed_vhosts(request) for q in vhost.queues.values() if not q.deleted]
    return reply_list(request, queues, _listing(ctx))


@routes.get("/queues/{vhost}/{name}", Rule.VHOST)
async def show_queue(request: web.Request) -> web.Response:
    ctx = context(request)
    queue = _queue(ctx, request)
    document = queue_document(ctx, queue)
    document["consumer_details"] = [consumer_document(ctx, c, queue) for c in queue.consumers]
    document["deliveries"] = []
    document["incoming"] = []
    return reply_object(request, document)


def _queue(ctx: ManagementContext, request: web.Request) -> Queue:
    vhost = vhost_or_404(ctx, request.match_info["vhost"])
    queue = vhost.queues.get(request.match_info["name"])
    if queue is None or queue.deleted:
        raise not_found()
    return queue


@routes.put("/queues/{vhost}/{name}", Rule.VHOST)
async def declare_queue(request: web.Request) -> web.Response:
    """As queue.declare on a channel of the caller's: 201 when created, 204 when it already was
    (equivalent), 400 with RabbitMQ's text when not."""
    ctx = context(request)
    user = current_user(request)
    vhost = vhost_or_404(ctx, request.match_info["vhost"])
    name = request.match_info["name"]
    body = await read_body(request)
    _check_node(ctx, body)
    if len(name.encode()) > 255:  # AMQP shortstr (rabbit_parameter_validation:amqp091_queue_name)
        raise bad_request(f"queue name '{name[:50]}...' is longer than 255 bytes")
    durable = field(body, "durable", "bool", False)
    auto_delete = field(body, "auto_delete", "bool", False)
    arguments = field(body, "arguments", "object", {})
    require(ctx, user, vhost.name, "configure", "queue", name)
    existed = name in vhost.queues
    try:
        vhost.declare_queue(
            name,
            passive=False,
            durable=durable,
            exclusive=False,  # RabbitMQ's API ignores "exclusive": its channel would take the queue along
            auto_delete=auto_delete,
            arguments=arguments,
            owner=None,
        )
    except core_errors.BrokerError as error:
        raise from_core(error) from None
    await committed(ctx)
    return empty_response(204 if existed else 201)


def _check_node(ctx: ManagementContext, body: dict[str, Any]) -> None:
    node = body.get("node")
    if node is not None and node != ctx.node.name:
        raise bad_request(f"Node {node} could not be contacted")


@routes.delete("/queues/{vhost}/{name}", Rule.VHOST)
async def delete_queue(request: web.Request) -> web.Response:
    """As queue.delete with ``if-unused`` / ``if-empty`` from the query string."""
    ctx = context(request)
    queue = _queue(ctx, request)
    vhost = ctx.core.vhosts[queue.vhost]
    require(ctx, current_user(request), vhost.name, "configure", "queue", queue.name)
    where = f"in vhost '{vhost.name}'"
    if query_flag(request, "if-unused") and queue.consumers:
        raise bad_request(f"PRECONDITION_FAILED - queue '{queue.name}' {where} in use")
    if query_flag(request, "if-empty") and queue.message_count:
        raise bad_request(f"PRECONDITION_FAILED - queue '{queue.name}' {where} not empty")
    if queue.exclusive_owner is not None:
        raise bad_request(
            f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{queue.name}' {where}"
        )
    ctx.core.delete_queue(vhost, queue)
    await committed(ctx)
    return empty_response()


@routes.delete("/queues/{vhost}/{name}/contents", Rule.VHOST)
async def purge_queue(request: web.Request) -> web.Response:
    ctx = context(request)
    queue = _queue(ctx, request)
    require(ctx, current_user(request), queue.vhost, "read", "queue", queue.name)
    if queue.exclusive_owner is not None:
        raise bad_request(
            f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{queue.name}' "
            f"in vhost '{queue.vhost}'"
        )
    if queue.remote is not None:  # mailslot.cluster: another node owns it, purged there
        try:
            await queue.remote.purge(queue)
        except core_errors.BrokerError as error:
            raise from_core(error) from None
        return empty_response()
    queue.purge()
    await committed(ctx)
    return empty_response()


def _message_options(body: dict[str, Any]) -> tuple[int, str, int | None]:
    count = parse_int("count", body["count"], minimum=0) if "count" in body else None
    if count is None:
        raise bad_request("count: missing (required)")
    if count > MAX_MESSAGES_PER_REQUEST:
        raise bad_request(f"count: at most {MAX_MESSAGES_PER_REQUEST} messages per request")
    encoding = body.get("encoding")
    if encoding is None:
        raise bad_request("encoding: missing (required)")
    if encoding not in ENCODINGS:
        raise bad_request("Unsupported encoding. Please use auto or base64.")
    truncate = body.get("truncate")
    return count, encoding, None if truncate is None else parse_int("truncate", truncate, minimum=0)


@routes.post("/queues/{vhost}/{name}/get", Rule.VHOST)
async def get_messages(request: web.Request) -> web.Response:
    """basic.get ``count`` times on a channel of the caller's, then settle by ``ackmode``:
    ``ack_requeue_true`` and ``reject_requeue_true`` give the messages back (marked redelivered),
    ``ack_requeue_false`` takes them, ``reject_requeue_false`` rejects them (dead-lettering them)."""
    ctx = context(request)
    queue = _queue(ctx, request)
    body = await read_body(request)
    ackmode = body.get("ackmode")
    if ackmode is None:
        raise bad_request("ackmode: missing (required)")
    if ackmode not in ACK_MODES:
        raise bad_request(f"ackmode: expected one of {', '.join(ACK_MODES)}, got {ackmode!r}")
    count, encoding, truncate = _message_options(body)
    require(ctx, current_user(request), queue.vhost, "read", "queue", queue.name)
    vhost = ctx.core.vhosts[queue.vhost]
    if queue.remote is not None:  # mailslot.cluster: another node owns it, got (and settled) there
        try:
            from_owner = await queue.remote.get(queue, count, REMOTE_SETTLE[ackmode])
        except core_errors.BrokerError as error:
            raise from_core(error) from None
        return json_response([message_document(entry, AMQP_CODEC, encoding, truncate, message_count=remaining)
                              for entry, remaining in from_owner])
    documents = []
    with direct_session(ctx, vhost) as session:
        taken = []
        try:
            for _ in range(count):
                got = session.get(queue.name, no_ack=ackmode == "ack_requeue_false")
                if got is None:
                    break
                tag, entry, remaining = got
                taken.append(tag)
                documents.append(
                    message_document(entry, AMQP_CODEC, encoding, truncate, message_count=remaining)
                )
        except core_errors.BrokerError as error:
            raise from_core(error) from None
        if taken and ackmode != "ack_requeue_false":
            # The reject (or the requeue of ack_requeue_true) comes after all gets, as RabbitMQ does it:
            # requeued at once, the same message would be got again.
            for tag in taken:
                session.nack(tag, multiple=False, requeue=ackmode != "reject_requeue_false")
    await committed(ctx)
    return json_response(documents)
