"""Tracing through the management API: RabbitMQ's per-vhost ``tracing`` flag (``PUT /api/vhosts/{vhost}``
with ``{"tracing": true}``, shown by ``GET /api/vhosts``), and mailslot's message history lookup under
``/api/mailslot/trace/{vhost}`` (docs/tracing.md).

The flag is kept in the metadata store (record kind ``tracing``), as RabbitMQ keeps it in the vhost record,
so a restart turns tracing back on; the history itself is in memory. A vhost's history outlives turning
tracing off (it is still there to be read), until tracing is turned on again, which starts a new one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..core import tracing
from ..core.tracing import MessageHistory, Tracer
from ..core.vhost import VirtualHost
from .auth import Rule
from .bodies import parse_int, read_body
from .context import ManagementContext, context, current_user
from .direct import require, vhost_or_404
from .errors import bad_request, empty_response, json_response
from .messages import jsonable
from .routing import Routes
from .trace_archive import TraceArchive

routes = Routes()
RECORD_KIND = "tracing"
ARCHIVE_DIRECTORY = "trace"  # under the data directory (http/trace_archive.py)
HISTORY_CAPACITY = tracing.DEFAULT_CAPACITY  # messages per vhost in memory; the rest goes to the archive
MAX_RESULTS = 100


class TracingState:
    """The tracers of one broker by vhost name: the running ones (also ``vhost.tracer``) and the last one
    of each vhost where tracing was turned off (its history stays readable)."""

    def __init__(self, ctx: ManagementContext) -> None:
        self.ctx = ctx
        self.tracers: dict[str, Tracer] = {}
        self.archives: dict[str, TraceArchive] = {}

    def restore(self) -> None:
        for name, value in self.ctx.core.metadata.load_records(RECORD_KIND).items():
            vhost = self.ctx.core.vhosts.get(name)
            if value and vhost is not None:
                self.tracers[name] = tracing.enable(vhost, self.ctx.node.name, HISTORY_CAPACITY)
                if isinstance(value, dict) and value.get("archive"):
                    self._archive_on(vhost, fresh=False)

    def set(self, name: str, on: bool) -> None:
        """RabbitMQ's flag. Turning it on starts a new history (and no archive: that is asked for apart)."""
        vhost = self.ctx.core.vhosts.get(name)
        if vhost is None:
            return
        if on and vhost.tracer is None:
            self.tracers[name] = tracing.enable(vhost, self.ctx.node.name, HISTORY_CAPACITY)
            self._archive_off(name)
            self.ctx.core.metadata.save_record(RECORD_KIND, name, True)
        elif not on and vhost.tracer is not None:
            tracing.disable(vhost)
            self.ctx.core.metadata.delete_record(RECORD_KIND, name)

    def set_archive(self, vhost: VirtualHost, on: bool) -> None:
        """Keep what the in-memory history forgets on disk (tracing must be on)."""
        if on:
            if vhost.name not in self.archives:
                self._archive_on(vhost, fresh=True)
        else:
            self._archive_off(vhost.name)
        self.ctx.core.metadata.save_record(RECORD_KIND, vhost.name, {"archive": on})

    def _archive_on(self, vhost: VirtualHost, fresh: bool) -> None:
        """A new archive (``fresh``: files of an earlier history are removed) or, after a restart with
        tracing on, the one it kept."""
        data_dir = self.ctx.node.data_dir
        tracer = vhost.tracer
        if data_dir is None or tracer is None:
            return
        archive = TraceArchive(data_dir / ARCHIVE_DIRECTORY, vhost.name)
        if fresh:
            archive.remove()
            archive = TraceArchive(data_dir / ARCHIVE_DIRECTORY, vhost.name)
        self.archives[vhost.name] = archive
        tracer.history.forgotten = lambda record: archive.append(history_document(record))

    def _archive_off(self, name: str) -> None:
        archive = self.archives.pop(name, None)
        tracer = self.tracers.get(name)
        if tracer is not None:
            tracer.history.forgotten = None
        if archive is not None:
            archive.remove()

    def forget(self, name: str) -> None:
        """The vhost was deleted: its flag and history go with it (RabbitMQ's flag lives in the vhost record)."""
        self.tracers.pop(name, None)
        archive = self.archives.pop(name, None)
        if archive is not None:
            archive.remove()
        self.ctx.core.metadata.delete_record(RECORD_KIND, name)

    async def close(self, _app: web.Application | None = None) -> None:
        """The broker stops: what the in-memory histories of traced vhosts hold goes to their archives, so
        a restart with tracing on still finds it."""
        for name, archive in self.archives.items():
            vhost = self.ctx.core.vhosts.get(name)
            tracer = self.tracers.get(name)
            if vhost is not None and tracer is not None and vhost.tracer is tracer:
                for record in tracer.history.records():
                    archive.append(history_document(record))
            archive.close()

    def archive(self, name: str) -> TraceArchive | None:
        return self.archives.get(name) if self.tracer(name) is not None else None

    def archiving(self, name: str) -> bool:
        return name in self.archives and self.ctx.node.data_dir is not None

    def tracer(self, name: str) -> Tracer | None:
        vhost = self.ctx.core.vhosts.get(name)
        tracer = self.tracers.get(name)
        if vhost is None or (tracer is not None and tracer.vhost is not vhost):
            return None  # the vhost was deleted (and maybe created again): its history went with it
        return tracer


TRACING: web.AppKey[TracingState] = web.AppKey("mailslot_tracing")


def tracing_state(request: web.Request) -> TracingState:
    return request.app[TRACING]


def tracing_flag(value: Any) -> bool | None:
    """``PUT /api/vhosts/{vhost}``'s ``tracing`` field: a boolean (or its text, as RabbitMQ takes it), or
    None when absent; anything else is a 400 (RabbitMQ: ``not_boolean``)."""
    if value is None:
        return None
    if value in (True, "true"):
        return True
    if value in (False, "false"):
        return False
    raise bad_request(f"tracing: expected true or false, got {value!r} (not_boolean)")


def set_tracing(request: web.Request, vhost: str, on: bool) -> None:
    tracing_state(request).set(vhost, on)


def forget_tracing(request: web.Request, vhost: str) -> None:
    tracing_state(request).forget(vhost)


def history_document(record: MessageHistory) -> dict[str, Any]:
    return {
        "message_id": record.message_id,
        "exchange": record.exchange,
        "routing_key": record.routing_key,
        "headers": jsonable(record.headers),
        "events": [jsonable(event.document()) for event in record.events],
        "events_dropped": record.events_dropped,
    }


def _status(ctx: ManagementContext, request: web.Request, name: str) -> dict[str, Any]:
    vhost = vhost_or_404(ctx, name)
    tracer = tracing_state(request).tracer(name)
    status: dict[str, Any] = {"vhost": name, "tracing": vhost.tracer is not None}
    if tracer is not None:
        status.update(tracer.status())
    else:
        status.update(capacity=tracing.DEFAULT_CAPACITY, messages=0, events=0, dropped_messages=0, dropped_events=0)
    archive = tracing_state(request).archive(name)
    status["archive"] = None if archive is None else archive.status()
    if archive is not None:  # forgotten in memory but kept on disk is not dropped
        status["dropped_messages"] += archive.dropped - archive.archived
    return status


@routes.get("/mailslot/trace/{vhost}", Rule.VHOST)
async def trace_status(request: web.Request) -> web.Response:
    ctx = context(request)
    return json_response(_status(ctx, request, request.match_info["vhost"]))


@routes.put("/mailslot/trace/{vhost}", Rule.ADMIN)
async def trace_settings(request: web.Request) -> web.Response:
    """``{"archive": true}``: keep what the in-memory history forgets on disk (tracing must be on and the
    broker must have a data directory); ``false`` stops and removes the archive."""
    ctx = context(request)
    vhost = vhost_or_404(ctx, request.match_info["vhost"])
    body = await read_body(request)
    archive = body.get("archive")
    if not isinstance(archive, bool):
        raise bad_request(f"archive: expected true or false, got {archive!r}")
    if vhost.tracer is None:
        raise bad_request(f"tracing is off in vhost '{vhost.name}': turn it on first (PUT /api/vhosts/{{vhost}})")
    if archive and ctx.node.data_dir is None:
        raise bad_request("archive: this broker has no data directory (store memory)")
    tracing_state(request).set_archive(vhost, archive)
    return empty_response()


def _lookup(request: web.Request, message_id: str | None, header: str | None) -> web.Response:
    ctx = context(request)
    name = request.match_info["vhost"]
    status = _status(ctx, request, name)
    # Message histories show bodies' metadata of every queue: as reading the firehose, it needs read on
    # the trace exchange's vhost; RabbitMQ's tracing UI is for administrators and monitoring users.
    require(ctx, current_user(request), name, "read", "exchange", tracing.TRACE_EXCHANGE)
    limit = parse_int("limit", request.query.get("limit", "20"), minimum=1)
    if limit > MAX_RESULTS:
        raise bad_request(f"limit: at most {MAX_RESULTS}")
    if header is not None and "=" not in header:
        raise bad_request("header: expected NAME=VALUE")
    key, _, value = (header or "").partition("=")
    tracer = tracing_state(request).tracer(name)
    records: list[MessageHistory] = []
    if tracer is not None:
        if message_id is not None:
            records = tracer.history.by_message_id(message_id)
        elif header is not None:
            records = tracer.history.by_header(key, value)
    documents = [history_document(r) for r in records]
    archive = tracing_state(request).archive(name)
    if archive is not None:

        def matches(document: dict[str, Any]) -> bool:
            if message_id is not None:
                return bool(document.get("message_id") == message_id)
            found = (document.get("headers") or {}).get(key)
            return found is not None and str(found) == value

        documents = archive.search(matches) + documents  # older ones first
    return json_response({
        "vhost": name,
        "tracing": status["tracing"],
        "items": documents[-limit:],
        "dropped_messages": status["dropped_messages"],
        "dropped_events": status["dropped_events"],
    })


@routes.get("/mailslot/trace/{vhost}/messages", Rule.VHOST)
async def trace_search(request: web.Request) -> web.Response:
    message_id, header = request.query.get("message_id"), request.query.get("header")
    if message_id is None and header is None:
        raise bad_request("message_id or header: one is required")
    return _lookup(request, message_id, header)


@routes.get("/mailslot/trace/{vhost}/messages/{message_id}", Rule.VHOST)
async def trace_message(request: web.Request) -> web.Response:
    return _lookup(request, request.match_info["message_id"], None)


def setup(app: web.Application, ctx: ManagementContext) -> None:
    state = TracingState(ctx)
    state.restore()
    app[TRACING] = state
    app.on_cleanup.append(state.close)
