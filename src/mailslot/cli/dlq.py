"""``mailslot dlq list|show|redrive`` and ``mailslot trace MESSAGE_ID``: dead-letter queues and message
histories of a running broker, through its management API (``/api/mailslot/...``, docs/dead-letter-queues.md
and docs/tracing.md).

The broker is named as for every command (``--url``, docs/cli.md): an AMQP URL, whose vhost is the one these
commands work in unless ``--vhost`` names another, with the API on the same host at ``--http-port``; or the
API's own ``http(s)://`` URL. As ``mailslot queues``: an error is one ``error: ...`` line on stderr and exit
code 1. ``redrive`` follows the redrive it started until it ends; Ctrl-C cancels it (what moved stays moved).
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Annotated, Any, NoReturn

import typer

from .queues import DEFAULT_HTTP_PORT, DEFAULT_URL, REQUEST_TIMEOUT, Api, FetchError, format_duration

dlq = typer.Typer(name="dlq", help="Dead-letter queues: list them, look inside, redrive their messages.",
                  no_args_is_help=True)

UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="MAILSLOT_URL",
                 help="The broker: its AMQP URL (the API is on the same host, --http-port) or the API's http(s):// URL."),
]
PortOption = Annotated[int, typer.Option(help="The management API's port, when --url is an AMQP URL.", min=1, max=65535)]
VhostOption = Annotated[str | None, typer.Option(help="The virtual host (default: the --url's, else '/').")]
PROGRESS_INTERVAL = 0.5  # seconds between two progress readings of a redrive


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def url_vhost(url: str) -> str:
    """The vhost of an AMQP URL (``/`` when it names none, as AMQP clients read it)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("amqp", "amqps") or parts.path in ("", "/"):
        return "/"
    return urllib.parse.unquote(parts.path[1:])


def call(api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    """One API request: (status, JSON answer, headers); FetchError for failures, with the API's reason."""
    url = api.base.rstrip("/") + path
    credentials = base64.b64encode(f"{api.username}:{api.password}".encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Basic {credentials}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None, dict(response.headers.items())
    except urllib.error.HTTPError as exc:
        reason = str(exc.reason)
        try:
            reason = str(json.load(exc).get("reason") or reason)
        except (ValueError, AttributeError):
            pass
        raise FetchError(f"{url} answered {exc.code}: {reason}") from None
    except urllib.error.URLError as exc:
        why = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        raise FetchError(f"cannot reach the HTTP API at {api.base}: {why}") from None
    except (OSError, ValueError) as exc:
        raise FetchError(f"cannot read {url}: {exc}") from None


def _setup(url: str, http_port: int, vhost: str | None) -> tuple[Api, str]:
    try:
        return Api.from_url(url, http_port), vhost if vhost is not None else url_vhost(url)
    except FetchError as exc:
        _fail(exc)


def _fail(exc: Exception) -> NoReturn:
    print(f"error: {exc}", file=sys.stderr)
    raise typer.Exit(1)


def _filter(reason: str | None, source_queue: str | None, header: str | None, min_age: float | None,
            max_age: float | None, body: str | None) -> dict[str, Any]:
    values = {"reason": reason, "source_queue": source_queue, "header": header, "min_age": min_age,
              "max_age": max_age, "body": body}
    return {key: value for key, value in values.items() if value is not None}


ReasonOption = Annotated[str | None, typer.Option(help="Newest death's reason: rejected, expired, maxlen, delivery_limit.")]
SourceOption = Annotated[str | None, typer.Option(help="Died in this queue.")]
HeaderOption = Annotated[str | None, typer.Option(help="NAME=VALUE: this header has this value.")]
MinAgeOption = Annotated[float | None, typer.Option(help="Dead-lettered at least this many seconds ago.")]
MaxAgeOption = Annotated[float | None, typer.Option(help="Dead-lettered at most this many seconds ago.")]
BodyOption = Annotated[str | None, typer.Option(help="Body contains this text (case-insensitive).")]


@dlq.command(name="list")
def list_command(url: UrlOption = DEFAULT_URL, http_port: PortOption = DEFAULT_HTTP_PORT,
                 vhost: Annotated[str | None, typer.Option(help="Only this virtual host.")] = None) -> None:
    """The dead-letter queues (those some queue's dead-letter exchange routes to), with their depth."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    api, _ = _setup(url, http_port, vhost)
    try:
        _, items, _ = call(api, "GET", "/api/mailslot/dlq" + ("" if vhost is None else "/" + _q(vhost)))
    except FetchError as exc:
        _fail(exc)
    table = Table(title=f"dead-letter queues at {api.base}", title_justify="left", box=box.SIMPLE_HEAD)
    for heading in ("vhost", "queue", "messages", "consumers", "dead letters from"):
        table.add_column(heading, overflow="fold")
    for item in items:
        table.add_row(item["vhost"], item["name"], f"{item['messages']:,}", str(item["consumers"]),
                      ", ".join(item["sources"]))
    Console().print(table)


@dlq.command(name="show")
def show_command(
    queue: Annotated[str, typer.Argument(help="The dead-letter queue.")],
    url: UrlOption = DEFAULT_URL,
    http_port: PortOption = DEFAULT_HTTP_PORT,
    vhost: VhostOption = None,
    reason: ReasonOption = None,
    source_queue: SourceOption = None,
    header: HeaderOption = None,
    min_age: MinAgeOption = None,
    max_age: MaxAgeOption = None,
    body: BodyOption = None,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many matching messages.")] = 0,
    limit: Annotated[int, typer.Option(min=0, help="Show this many messages.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")] = False,
) -> None:
    """Why messages died and where they came from, then the messages (left in the queue)."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    api, name = _setup(url, http_port, vhost)
    query = {"offset": offset, "limit": limit, **_filter(reason, source_queue, header, min_age, max_age, body)}
    base = f"/{_q(name)}/{_q(queue)}"
    try:
        _, summary, _ = call(api, "GET", "/api/mailslot/dlq" + base)
        _, page, _ = call(api, "GET", f"/api/mailslot/queues{base}/messages?{urllib.parse.urlencode(query)}")
    except FetchError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps({"summary": summary, "messages": page}, indent=2))
        return
    console = Console()
    reasons = ", ".join(f"{k}: {v:,}" for k, v in summary["by_reason"].items()) or "none"
    sources = ", ".join(f"{k}: {v:,}" for k, v in summary["by_source"].items()) or "none"
    console.print(f"[bold]{escape(queue)}[/] in vhost {escape(name)}: {summary['messages']:,} messages; "
                  f"reasons {escape(reasons)}; from {escape(sources)}")
    table = Table(box=box.SIMPLE_HEAD, caption=f"{page['matched']:,} matching of {page['scanned']:,} looked at",
                  caption_justify="left")
    for heading in ("id", "pos", "reason", "from", "count", "age", "routing key", "body"):
        table.add_column(heading, overflow="fold")
    for item in page["items"]:
        death = item["x_death"][0] if item["x_death"] else {}
        payload = item["payload"] if item["payload_encoding"] == "string" else "(base64) " + item["payload"]
        table.add_row(str(item["id"]), str(item["position"]), death.get("reason", "-"), escape(death.get("queue", "-")),
                      str(death.get("count", "-")),
                      "-" if item["age_seconds"] is None else format_duration(item["age_seconds"]),
                      escape(item["routing_key"]), escape(payload[:60] + ("..." if len(payload) > 60 else "")))
    console.print(table)


@dlq.command(name="redrive")
def redrive_command(
    queue: Annotated[str, typer.Argument(help="The dead-letter queue.")],
    url: UrlOption = DEFAULT_URL,
    http_port: PortOption = DEFAULT_HTTP_PORT,
    vhost: VhostOption = None,
    ids: Annotated[list[int] | None, typer.Option("--id", help="Move this message (its id; repeat for more).")] = None,
    reason: ReasonOption = None,
    source_queue: SourceOption = None,
    header: HeaderOption = None,
    min_age: MinAgeOption = None,
    max_age: MaxAgeOption = None,
    body: BodyOption = None,
    to_exchange: Annotated[str | None, typer.Option(help="Publish to this exchange ('' : the default one) "
                                                         "instead of each message's original queue.")] = None,
    routing_key: Annotated[str, typer.Option(help="With --to-exchange: the routing key.")] = "",
    rate: Annotated[float | None, typer.Option(min=0.001, help="At most this many messages a second.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Move at most this many messages.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would move, and where.")] = False,
    wait: Annotated[bool, typer.Option(help="Follow the redrive until it ends (Ctrl-C cancels it).")] = True,
) -> None:
    """Move dead-lettered messages back to their original queue (or to --to-exchange): those named by
    --id, or all matching the filters, or all."""
    api, name = _setup(url, http_port, vhost)
    request: dict[str, Any] = {"dry_run": dry_run}
    if ids:
        request["ids"] = list(ids)
    where = _filter(reason, source_queue, header, min_age, max_age, body)
    if where:
        request["filter"] = where
    if to_exchange is not None:
        request["target"] = {"exchange": to_exchange, "routing_key": routing_key}
    if rate is not None:
        request["rate"] = rate
    if limit is not None:
        request["limit"] = limit
    try:
        _, answer, headers = call(api, "POST", f"/api/mailslot/dlq/{_q(name)}/{_q(queue)}/redrive", request)
    except FetchError as exc:
        _fail(exc)
    if dry_run:
        print(f"dry run: {answer['matched']:,} matching, {answer['would_move']:,} would move, "
              f"{answer['unroutable']:,} unroutable (would stay)")
        for item in answer["items"]:
            where_to = ", ".join(item["destination_queues"]) or "nowhere"
            print(f"  {item['id']}: exchange '{item['target_exchange']}' key '{item['target_routing_key']}' -> {where_to}")
        return
    location = headers.get("Location") or f"/api/mailslot/redrives/{_q(name)}/{answer['id']}"
    print(f"redrive {answer['id']} started: {answer['matched']:,} messages selected")
    if not wait:
        return
    raise typer.Exit(_follow(api, location, answer))


def _follow(api: Api, location: str, progress: dict[str, Any]) -> int:
    from rich.progress import Progress

    try:
        with Progress(transient=True) as bar:
            task = bar.add_task("moving", total=max(1, progress["matched"]))
            while progress["state"] == "running":
                time.sleep(PROGRESS_INTERVAL)
                _, progress, _ = call(api, "GET", location)
                bar.update(task, completed=progress["moved"] + progress["failed"] + progress["skipped"])
    except KeyboardInterrupt:
        call(api, "DELETE", location)
        _, progress, _ = call(api, "GET", location)
    except FetchError as exc:
        _fail(exc)
    print(f"redrive {progress['id']} {progress['state']}: moved {progress['moved']:,}, failed {progress['failed']:,} "
          f"(kept in the queue), skipped {progress['skipped']:,}, remaining {progress['remaining']:,}"
          + (f"; {progress['error']}" if progress.get("error") else ""))
    return 0 if progress["state"] in ("done", "cancelled") else 1


def trace(
    message_id: Annotated[str | None, typer.Argument(help="The message id (AMQP message_id property).")] = None,
    url: UrlOption = DEFAULT_URL,
    http_port: PortOption = DEFAULT_HTTP_PORT,
    vhost: VhostOption = None,
    header: HeaderOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")] = False,
) -> None:
    """What happened to a message: published, routed, delivered, acked, requeued, dead-lettered (the
    vhost's tracing must be on: PUT /api/vhosts/{vhost} {"tracing": true})."""
    from rich.console import Console
    from rich.markup import escape

    api, name = _setup(url, http_port, vhost)
    if message_id is None and header is None:
        _fail(ValueError("give a MESSAGE_ID or --header NAME=VALUE"))
    path = f"/api/mailslot/trace/{_q(name)}/messages?" + urllib.parse.urlencode(
        {"message_id": message_id} if message_id is not None else {"header": header})
    try:
        _, answer, _ = call(api, "GET", path)
    except FetchError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    console = Console()
    if not answer["items"]:
        state = "on" if answer["tracing"] else "off"
        console.print(f"no history for this message in vhost {escape(name)} (tracing is {state}; "
                      f"{answer['dropped_messages']:,} older messages were dropped from the history)")
        raise typer.Exit(1)
    for item in answer["items"]:
        console.print(f"[bold]message {escape(str(item['message_id']))}[/] published to exchange "
                      f"'{escape(item['exchange'])}' with routing key '{escape(item['routing_key'])}'")
        for event in item["events"]:
            console.print(f"  {_clock(event['at'])}  {escape(_describe(event))}")
        if item["events_dropped"]:
            console.print(f"  ... {item['events_dropped']:,} later events not kept")


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def _describe(event: dict[str, Any]) -> str:
    kind = event["event"]
    if kind == "published":
        queues = ", ".join(event.get("queues") or []) or "no queue"
        return f"published by {event.get('user') or '?'} on {event.get('connection') or 'the API'} -> {queues}"
    if kind == "delivered":
        to = f"consumer {event['consumer_tag']}" if event.get("consumer_tag") else "basic.get"
        again = " (redelivered)" if event.get("redelivered") else ""
        return f"delivered from {event['queue']} to {to} on {event.get('connection') or 'the API'}{again}"
    if kind == "dead_lettered":
        return f"dead-lettered from {event['queue']} ({event['reason']}) to exchange '{event['dead_letter_exchange']}'"
    if kind in ("dropped", "expired"):
        return f"{kind} in {event['queue']}" + (f" ({event['reason']})" if event.get("reason") else "")
    return f"{kind} in {event.get('queue', '?')}"


def register(app: typer.Typer) -> None:
    """Add ``dlq`` and ``trace`` to the ``mailslot`` command."""
    app.add_typer(dlq, name="dlq")
    app.command(name="trace")(trace)
