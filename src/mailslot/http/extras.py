"""mailslot's own API under ``/api/mailslot/``: browsing queues, dead-letter queues and redrive, tracing.

RabbitMQ's management API has none of these, so they live under a prefix of their own and never rename a
RabbitMQ path or field (design.md, "Operators' surfaces speak the anchor's dialect"). Errors have
RabbitMQ's shape (``{"error": ..., "reason": ...}``, http/errors.py) and the rules are its tag rules
(http/auth.py): reading needs access to the vhost and AMQP ``read`` on the queue, as a get does; a redrive
also needs ``write`` on the exchange it publishes to, as a publish does. docs/dead-letter-queues.md and
docs/tracing.md describe every endpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ..core.browse import SCAN_LIMIT, Filter, browse, dead_letter_sources, deaths, json_body, message_age
from ..core.browse import summarize as summarize_dead_letters
from ..core.message import Entry
from ..core.queue import Queue
from ..core.redrive import STEP_MESSAGES, Redrive, RedriveRequest, Redrives, Target, plan
from ..core.vhost import VirtualHost
from ..frontends.amqp091 import AMQP_CODEC
from .auth import Rule, visible_vhosts
from .bodies import parse_int, read_body
from .context import ManagementContext, context, current_user
from .direct import committed, direct_session, require, vhost_or_404
from .errors import ApiError, bad_request, empty_response, json_response, not_found
from .messages import ENCODINGS, message_document
from .routing import Route, Routes
from .tracing_api import routes as tracing_routes
from .tracing_api import setup as tracing_setup

log = logging.getLogger("mailslot.http")

routes = Routes()
REDRIVES: web.AppKey[RedriveRunner] = web.AppKey("mailslot_redrives")
# Messages one browse returns: each is a JSON document in one answer (as http/resources/queues.py's get).
MAX_BROWSE = 10_000
# Messages a filtered browse looks at unless ``scan`` says otherwise (up to core.browse.SCAN_LIMIT): a page
# of a dashboard stays quick on a deep queue; ``truncated_scan`` says when there is more to look at.
BROWSE_SCAN = 10_000
# Moves one dry run lists one by one (it counts them all).
DRY_RUN_ITEMS = 1_000
# Redrives started at another node that this node remembers, to pass their progress requests on.
KEEP_ELSEWHERE = 1_000
# Bodies parsed as JSON for ``payload_json``, at most: a larger one is shown as text only.
MAX_JSON_BODY = 1024 * 1024


# ---- browse -------------------------------------------------------------------------------------------------


def _queue(ctx: ManagementContext, request: web.Request) -> tuple[VirtualHost, Queue]:
    vhost = vhost_or_404(ctx, request.match_info["vhost"])
    queue = vhost.queues.get(request.match_info["name"])
    if queue is None or queue.deleted:
        raise not_found()
    return vhost, queue


# Set on a request another node passed on (mailslot.cluster.proxy.PROXIED): answered here, never passed on again.
PROXIED = "X-Mailslot-Proxied-By"


async def _at_owner(request: web.Request, queue: Queue) -> web.Response | None:
    """In a cluster, a queue another node owns: only the owner holds its messages, so the request is
    answered by the owner (over the cluster link, mailslot.cluster.proxy), or 503 saying why it cannot
    be. None: this node answers."""
    ctx = context(request)
    cluster = ctx.node.cluster
    if queue.remote is None or cluster is None or PROXIED in request.headers:
        return None
    owner = ctx.node.owner_of(queue.key)
    try:
        answer = await cluster.ask(owner, request.method, request.raw_path, dict(request.headers), await request.read())
    except ConnectionError as exc:
        log.warning("queue '%s' in vhost '%s': %s", queue.name, queue.vhost, exc)
        raise ApiError(503, "service_unavailable", f"queue '{queue.name}' in vhost '{queue.vhost}' is owned by node "
                       f"'{owner}', which could not answer: {exc}") from None
    return web.Response(status=answer["status"], body=answer["body"], headers=answer.get("headers", {}))


def _filter(values: Any) -> Filter:
    try:
        return Filter.parse(values)
    except ValueError as error:
        raise bad_request(str(error)) from None


def browse_document(entry: Entry, position: int, encoding: str, truncate: int | None, now: float) -> dict[str, Any]:
    """A message as a browse shows it: /api/queues/.../get's fields plus its id, position, parsed JSON
    body and dead-letter history."""
    message = entry.message
    doc = message_document(entry, AMQP_CODEC, encoding, truncate, id=entry.seq, position=position)
    if len(message.body) <= MAX_JSON_BODY and (truncate is None or truncate >= len(message.body)):
        parsed = json_body(bytes(message.body), message.decoded().content_type)
        if parsed is not None:
            doc["payload_json"] = parsed
    headers = message.headers
    history = deaths(headers)
    doc["x_death"] = [death.document() for death in history]
    first = {key: headers.get(f"x-first-death-{key}") for key in ("queue", "reason", "exchange")}
    doc["first_death"] = (
        {key: value.decode() if isinstance(value, bytes) else value for key, value in first.items()}
        if first["queue"] is not None
        else None
    )
    doc["dead_lettered_at"] = history[0].time if history else None
    doc["age_seconds"] = message_age(message, now)
    return doc


def _encoding(value: str | None) -> str:
    encoding = value or "auto"
    if encoding not in ENCODINGS:
        raise bad_request("Unsupported encoding. Please use auto or base64.")
    return encoding


@routes.get("/mailslot/queues/{vhost}/{name}/messages", Rule.VHOST)
async def browse_messages(request: web.Request) -> web.Response:
    """Messages from ``offset`` on (``limit``, 50 by default), filtered, left in the queue."""
    ctx = context(request)
    vhost, queue = _queue(ctx, request)
    if (answer := await _at_owner(request, queue)) is not None:
        return answer
    query = request.query
    offset = parse_int("offset", query.get("offset", "0"), minimum=0)
    limit = parse_int("limit", query.get("limit", "50"), minimum=0)
    if limit > MAX_BROWSE:
        raise bad_request(f"limit: at most {MAX_BROWSE} messages per request")
    scan = parse_int("scan", query.get("scan", str(BROWSE_SCAN)), minimum=1)
    if scan > SCAN_LIMIT:
        raise bad_request(f"scan: at most {SCAN_LIMIT} messages per request")
    if offset + limit > SCAN_LIMIT:
        raise bad_request(f"offset + limit: at most {SCAN_LIMIT} (a browse reads every message before its page)")
    encoding = _encoding(query.get("encoding"))
    truncate = None if "truncate" not in query else parse_int("truncate", query["truncate"], minimum=0)
    where = _filter(query)
    require(ctx, current_user(request), vhost.name, "read", "queue", queue.name)
    now = ctx.core.clock()
    page = browse(queue, now, offset=offset, limit=limit, where=where, scan_limit=scan)
    return json_response({
        "vhost": vhost.name,
        "queue": queue.name,
        "messages": queue.message_count,
        "offset": offset,
        "limit": limit,
        "scanned": page.scanned,
        "matched": page.matched,
        "truncated_scan": page.partial,
        "items": [browse_document(entry, position, encoding, truncate, now) for position, entry in page.items],
    })


@routes.get("/mailslot/queues/{vhost}/{name}/peek", Rule.VHOST)
async def peek_messages(request: web.Request) -> web.Response:
    """The first ``count`` messages (10 by default) as a plain list: the browse without its envelope."""
    ctx = context(request)
    vhost, queue = _queue(ctx, request)
    if (answer := await _at_owner(request, queue)) is not None:
        return answer
    query = request.query
    count = parse_int("count", query.get("count", "10"), minimum=0)
    if count > MAX_BROWSE:
        raise bad_request(f"count: at most {MAX_BROWSE} messages per request")
    encoding = _encoding(query.get("encoding"))
    truncate = None if "truncate" not in query else parse_int("truncate", query["truncate"], minimum=0)
    require(ctx, current_user(request), vhost.name, "read", "queue", queue.name)
    now = ctx.core.clock()
    page = browse(queue, now, limit=count)
    return json_response([browse_document(entry, pos, encoding, truncate, now) for pos, entry in page.items])


# ---- dead-letter queues -------------------------------------------------------------------------------------


def _visible(request: web.Request) -> list[VirtualHost]:
    ctx = context(request)
    names = visible_vhosts(ctx.access, current_user(request), sorted(ctx.core.vhosts))
    return [ctx.core.vhosts[name] for name in names]


@routes.get("/mailslot/dlq")
@routes.get("/mailslot/dlq/{vhost}", Rule.VHOST)
async def list_dead_letter_queues(request: web.Request) -> web.Response:
    """Queues some queue's dead-letter exchange routes to, with those source queues."""
    ctx = context(request)
    name = request.match_info.get("vhost")
    vhosts = [vhost_or_404(ctx, name)] if name is not None else _visible(request)
    items = []
    for vhost in vhosts:
        for queue_name, sources in sorted(dead_letter_sources(vhost).items()):
            queue = vhost.queues.get(queue_name)
            if queue is None:
                continue
            ready, _, consumers = ctx.node.depths(queue)  # in a cluster: the owner's figures
            items.append({
                "vhost": vhost.name, "name": queue.name, "messages": ready,
                "consumers": consumers, "sources": sorted(sources),
            })
    return json_response(items)


@routes.get("/mailslot/dlq/{vhost}/{name}", Rule.VHOST)
async def show_dead_letter_queue(request: web.Request) -> web.Response:
    ctx = context(request)
    vhost, queue = _queue(ctx, request)
    if (answer := await _at_owner(request, queue)) is not None:
        return answer
    require(ctx, current_user(request), vhost.name, "read", "queue", queue.name)
    summary = summarize_dead_letters(queue, ctx.core.clock())
    return json_response({
        "vhost": vhost.name,
        "name": queue.name,
        "messages": queue.message_count,
        "consumers": len(queue.consumers),
        "sources": sorted(dead_letter_sources(vhost).get(queue.name, [])),
        "scanned": summary.scanned,
        "by_reason": summary.by_reason,
        "by_source": summary.by_source,
        "oldest_death": summary.oldest_death,
        "newest_death": summary.newest_death,
    })


# ---- redrive --------------------------------------------------------------------------------------------------


def _integers(body: dict[str, Any], name: str) -> list[int] | None:
    values = body.get(name)
    if values is not None and (
        not isinstance(values, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in values)
    ):
        raise bad_request(f"{name}: expected a list of integers >= 0")
    return values


def _redrive_request(body: dict[str, Any], queue: Queue, now: float) -> tuple[RedriveRequest, bool]:
    ids = _integers(body, "ids")
    positions = _integers(body, "positions")
    if positions is not None:  # positions from the head now (as a browse shows them): their ids
        if ids is not None:
            raise bad_request("ids, positions: give one of them")
        if positions and max(positions) >= SCAN_LIMIT:
            raise bad_request(f"positions: below {SCAN_LIMIT}")
        head = browse(queue, now, limit=max(positions, default=-1) + 1).items
        wanted = set(positions)
        ids = [entry.seq for position, entry in head if position in wanted]
    where = body.get("filter")
    if where is not None and not isinstance(where, dict):
        raise bad_request("filter: expected a JSON object")
    target_doc = body.get("target")
    target = None
    if target_doc is not None:
        if not isinstance(target_doc, dict) or not isinstance(target_doc.get("exchange", ""), str) or not isinstance(
            target_doc.get("routing_key", ""), str
        ):
            raise bad_request("target: expected {\"exchange\": NAME, \"routing_key\": KEY}")
        exchange = target_doc.get("exchange", "")
        target = Target("" if exchange == "amq.default" else exchange, target_doc.get("routing_key", ""))
    rate = body.get("rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0):
        raise bad_request(f"rate: expected a number of messages a second > 0, got {rate!r}")
    limit = None if body.get("limit") is None else parse_int("limit", body["limit"], minimum=1)
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise bad_request(f"dry_run: expected true or false, got {dry_run!r}")
    request = RedriveRequest(
        ids=None if ids is None else tuple(ids),
        where=None if where is None else _filter(where),
        target=target,
        rate=None if rate is None else float(rate),
        limit=limit,
    )
    return request, dry_run


@routes.post("/mailslot/dlq/{vhost}/{name}/redrive", Rule.VHOST)
@routes.post("/mailslot/queues/{vhost}/{name}/move", Rule.VHOST)
async def start_redrive(request: web.Request) -> web.Response:
    """A dry run (200, what would move) or a redrive started in the background (202, its progress). Any
    queue can be redriven: ``.../queues/{vhost}/{name}/move`` is the same for a queue that is not a
    dead-letter queue (the dashboard's "move messages"), usually with a ``target``."""
    ctx = context(request)
    vhost, queue = _queue(ctx, request)
    if (answer := await _at_owner(request, queue)) is not None:  # the redrive runs there
        if answer.status == 202:
            request.app[REDRIVES].started_elsewhere(vhost.name, json.loads(answer.text or "{}")["id"],
                                                    ctx.node.owner_of(queue.key))
        return answer
    body = await read_body(request)
    redrive_request, dry_run = _redrive_request(body, queue, ctx.core.clock())
    user = current_user(request)
    require(ctx, user, vhost.name, "read", "queue", queue.name)  # as a purge or a get
    if queue.exclusive_owner is not None:  # another connection's queue, as a purge refuses it
        raise bad_request(
            f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{queue.name}' in vhost '{vhost.name}'"
        )
    # As a publish: write on the exchange the messages go to (back to their queues: the default exchange).
    target = redrive_request.target
    require(ctx, user, vhost.name, "write", "exchange", "" if target is None else target.exchange)
    if dry_run:
        moves = plan(vhost, queue, redrive_request, ctx.core.clock())
        routable = [m for m in moves if m.queues]
        return json_response({
            "dry_run": True,
            "matched": len(moves),
            "would_move": len(routable),
            "unroutable": len(moves) - len(routable),
            "items": [
                {
                    "id": m.id,
                    "target_exchange": None if m.target is None else m.target.exchange,
                    "target_routing_key": None if m.target is None else m.target.routing_key,
                    "destination_queues": m.queues,
                }
                for m in moves[:DRY_RUN_ITEMS]
            ],
        })
    redrive = request.app[REDRIVES].start(vhost, queue, redrive_request, user.name)
    location = f"/api/mailslot/redrives/{_quote(vhost.name)}/{redrive.id}"
    return json_response(redrive.document(), 202, {"Location": location})


def _quote(name: str) -> str:
    return quote(name, safe="")


@routes.get("/mailslot/redrives")
async def list_redrives(request: web.Request) -> web.Response:
    names = [vhost.name for vhost in _visible(request)]
    return json_response([r.document() for r in request.app[REDRIVES].redrives.all(names)])


def _redrive(request: web.Request) -> Redrive:
    redrive = request.app[REDRIVES].redrives.get(request.match_info["vhost"], request.match_info["id"])
    if redrive is None:
        raise not_found()
    return redrive


async def _redrive_elsewhere(request: web.Request) -> web.Response | None:
    """A redrive this node started at a queue's owner (start_redrive): the owner answers about it."""
    owner = request.app[REDRIVES].elsewhere.get((request.match_info["vhost"], request.match_info["id"]))
    cluster = context(request).node.cluster
    if owner is None or cluster is None or PROXIED in request.headers:
        return None
    try:
        answer = await cluster.ask(owner, request.method, request.raw_path, dict(request.headers), b"")
    except ConnectionError as exc:
        raise ApiError(503, "service_unavailable", f"redrive {request.match_info['id']} runs on node '{owner}', "
                       f"which could not answer: {exc}") from None
    return web.Response(status=answer["status"], body=answer["body"], headers=answer.get("headers", {}))


@routes.get("/mailslot/redrives/{vhost}/{id}", Rule.VHOST)
async def show_redrive(request: web.Request) -> web.Response:
    if (answer := await _redrive_elsewhere(request)) is not None:
        return answer
    return json_response(_redrive(request).document())


@routes.delete("/mailslot/redrives/{vhost}/{id}", Rule.VHOST)
async def cancel_redrive(request: web.Request) -> web.Response:
    """Stop between two steps: what moved stays moved, the rest stays in the dead-letter queue."""
    if (answer := await _redrive_elsewhere(request)) is not None:
        return answer
    redrive = _redrive(request)
    ctx = context(request)
    require(ctx, current_user(request), redrive.vhost.name, "read", "queue", redrive.queue.name)
    redrive.cancel()
    return empty_response()


class RedriveRunner:
    """Runs redrives as background tasks of the management app: one step, its commit, the pace."""

    # Steps a second when a rate is set: the rate is spread over them (tokens), so 5 msg/s moves one
    # message every 0.2 s rather than five at once each second.
    STEPS_PER_SECOND = 10

    def __init__(self, ctx: ManagementContext) -> None:
        self.ctx = ctx
        self.redrives = Redrives()
        # Redrives started through this node at a queue's owner (a cluster): (vhost, id) -> the owner.
        self.elsewhere: dict[tuple[str, str], str] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def started_elsewhere(self, vhost: str, redrive_id: str, owner: str) -> None:
        self.elsewhere[(vhost, redrive_id)] = owner
        while len(self.elsewhere) > KEEP_ELSEWHERE:
            del self.elsewhere[next(iter(self.elsewhere))]

    def start(self, vhost: VirtualHost, queue: Queue, request: RedriveRequest, user: str) -> Redrive:
        redrive = self.redrives.add(vhost, queue, request, user, self.ctx.core.clock())
        if redrive.running:
            task = asyncio.get_running_loop().create_task(self._run(redrive), name=f"redrive {redrive.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return redrive

    async def _run(self, redrive: Redrive) -> None:
        ctx = self.ctx
        loop = asyncio.get_running_loop()
        rate = redrive.request.rate
        tokens, last = 1.0, loop.time()
        try:
            with direct_session(ctx, redrive.vhost) as session:

                def publish(exchange: str, routing_key: str, message: Any) -> int:
                    return session.publish(exchange, routing_key, message, False)

                while redrive.running:
                    if rate is None:
                        budget = STEP_MESSAGES
                    else:
                        now = loop.time()
                        tokens = min(tokens + (now - last) * rate, max(1.0, rate))
                        last = now
                        budget = int(tokens)
                        if budget < 1:
                            await asyncio.sleep((1 - tokens) / rate)
                            continue
                        tokens -= budget
                    redrive.step(publish, budget)
                    redrive.landed(await committed(ctx))
                    if rate is not None and redrive.running:
                        await asyncio.sleep(1 / self.STEPS_PER_SECOND)
                    else:
                        await asyncio.sleep(0)  # let publishers and consumers have the loop between steps
        except asyncio.CancelledError:
            redrive.cancel()
            raise
        except Exception as error:  # a bug: stop this redrive, keep the broker
            log.exception("redrive %s failed", redrive.id)
            redrive.finish("failed", str(error))

    async def close(self, _app: web.Application | None = None) -> None:
        self.redrives.cancel_all()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def setup(app: web.Application, ctx: ManagementContext) -> list[Route]:
    """Give the management app what these routes need; the routes to install."""
    runner = RedriveRunner(ctx)
    app[REDRIVES] = runner
    tracing_setup(app, ctx)
    app.on_cleanup.append(runner.close)
    return routes.items + tracing_routes.items

