"""``mailslot queues``: a table of a running broker's queues (depth, rates, forecasts), read from its
management API (``GET /api/queues``, docs/management-api.md); ``--watch`` redraws it every second.

The broker is named as every mailslot command names it (docs/cli.md): ``--url`` (or ``MAILSLOT_URL``), the
AMQP URL of the broker, ``amqp://user:password@host:port/vhost``. This command talks to the management API
on the same host, with the same credentials, on ``--http-port`` (15672 by default); an ``http://`` or
``https://`` URL names the API directly. ``--http-url`` is the old name of ``--url`` and still accepted.

Rules of this module: a broker that cannot be reached ends the command with one ``error: ...`` line
on stderr and exit code 1 (in ``--watch`` mode the error is shown in place of the table and the
command keeps trying); Ctrl-C ends ``--watch`` with exit code 0.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import RenderableType

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"  # the same default as publish, consume and bench
DEFAULT_HTTP_PORT = 15672  # mailslot serve's default --http-port (RabbitMQ management's)
REQUEST_TIMEOUT = 5.0  # seconds: the API answers from memory, so a slow answer means trouble
WATCH_INTERVAL = 1.0  # seconds, the broker's sampling interval: faster shows nothing new
# The fields the table shows: asking for these only keeps the answer small with many queues.
COLUMNS = (
    "vhost,name,messages,messages_ready,messages_unacknowledged,consumers,arguments,"
    "message_stats.publish_details,message_stats.deliver_get_details,drain_seconds,full_seconds,"
    "single_active_consumer_tag,policy,operator_policy,effective_policy_definition,node"
)
# Policy keys that are numeric limits: against a queue argument the lower value runs (docs/policies.md).
_LIMIT_KEYS = {"x-max-length": "max-length", "x-max-length-bytes": "max-length-bytes"}


class FetchError(Exception):
    pass


@dataclass(frozen=True)
class Api:
    """Where the management API is and who asks: derived from the command's ``--url``."""

    base: str  # http(s)://host:port, without credentials
    username: str
    password: str

    @classmethod
    def from_url(cls, url: str, http_port: int = DEFAULT_HTTP_PORT) -> Api:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("amqp", "amqps", "http", "https") or not parts.hostname:
            raise FetchError(f"not a broker URL: {url!r} (expected e.g. {DEFAULT_URL})")
        username = urllib.parse.unquote(parts.username or "guest")
        password = urllib.parse.unquote(parts.password or "guest")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        if parts.scheme in ("http", "https"):
            port = f":{parts.port}" if parts.port else ""
            return cls(f"{parts.scheme}://{host}{port}", username, password)
        scheme = "https" if parts.scheme == "amqps" else "http"
        return cls(f"{scheme}://{host}:{http_port}", username, password)


def fetch_json(api: Api, path: str) -> Any:
    url = api.base.rstrip("/") + path
    credentials = base64.b64encode(f"{api.username}:{api.password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {credentials}"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:  # the scheme was checked
            return json.load(response)
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
    except (OSError, ValueError) as exc:  # timeouts, resets, a body that is not JSON
        raise FetchError(f"cannot read {url}: {exc}") from None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 1:
        return "<1s" if seconds > 0 else "0s"
    whole = int(seconds)
    for unit, size, sub_unit, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if whole >= size:
            rest = (whole % size) // sub_size
            return f"{whole // size}{unit} {rest}{sub_unit}" if rest else f"{whole // size}{unit}"
    return f"{whole}s"


def format_rate(rate: float | None) -> str:
    if not rate:
        return "0"
    return f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}"


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" or value >= 10 else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _limit_text(arguments: dict[str, Any]) -> str:
    """x-max-length as a count, x-max-length-bytes as a size: ``5,000``, ``64MiB``, ``5,000/64MiB``."""
    parts = []
    max_length, max_bytes = arguments.get("x-max-length"), arguments.get("x-max-length-bytes")
    if isinstance(max_length, int) and not isinstance(max_length, bool):
        parts.append(f"{max_length:,}")
    if isinstance(max_bytes, int) and not isinstance(max_bytes, bool):
        parts.append(format_bytes(max_bytes))
    return "/".join(parts)


def effective_limits(queue: dict[str, Any]) -> dict[str, Any]:
    """The queue's length limits as they run: its arguments, lowered by the policies in force."""
    arguments = dict(queue.get("arguments") or {})
    definition = queue.get("effective_policy_definition") or {}
    for argument, key in _LIMIT_KEYS.items():
        value = definition.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            current = arguments.get(argument)
            arguments[argument] = value if not isinstance(current, int) else min(current, value)
    return arguments


def policy_text(queue: dict[str, Any]) -> str:
    """``policy: p``, ``operator: o``, both, or "" (RabbitMQ reports a missing one as null or absent)."""
    parts = [f"{label}: {queue[key]}" for key, label in (("policy", "policy"), ("operator_policy", "operator"))
             if queue.get(key)]
    return ", ".join(parts)


def _rate(queue: dict[str, Any], counter: str) -> float:
    details = (queue.get("message_stats") or {}).get(counter + "_details") or {}
    return float(details.get("rate") or 0.0)


def render_table(queues: list[dict[str, Any]], source: str) -> RenderableType:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    show_vhost = len({q.get("vhost") for q in queues}) > 1
    # Several nodes (mailslot serve --cluster): which one owns each queue (docs/cluster.md).
    show_node = len({q.get("node") for q in queues}) > 1
    table = Table(
        title=f"queues at {source}",
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    if show_vhost:
        table.add_column("vhost", overflow="fold")
    table.add_column("queue", overflow="fold", min_width=14)
    if show_node:
        table.add_column("node", overflow="fold")
    # Short headings: the table must fit 80 columns (the caption explains them).
    for heading in ("ready", "unacked", "cons", "in/s", "out/s", "drain", "full", "limit"):
        table.add_column(heading, justify="right", no_wrap=True)
    total = 0
    for q in queues:
        ready = int(q.get("messages_ready") or 0)
        total += int(q.get("messages") or 0)
        limit = _limit_text(effective_limits(q))
        drain = "empty" if ready == 0 else format_duration(q.get("drain_seconds"))
        full = format_duration(q.get("full_seconds")) if limit else "-"
        if full == "0s":
            full = "[bold red]full[/]"
        row = [
            str(q.get("name", "")),
            f"{ready:,}",
            f"{int(q.get('messages_unacknowledged') or 0):,}",
            str(q.get("consumers", 0)),
            format_rate(_rate(q, "publish")),
            format_rate(_rate(q, "deliver_get")),
            drain,
            full,
            limit or "-",
        ]
        active = q.get("single_active_consumer_tag")
        if active:  # x-single-active-consumer: the consumer that gets the deliveries
            row[0] += f" (active: {escape(str(active))})"
        policies = policy_text(q)
        if policies:  # the policy and operator policy in force (their limits are in "limit")
            row[0] += f" ({escape(policies)})"
        if show_node:
            row.insert(1, escape(str(q.get("node") or "")))
        table.add_row(*([str(q.get("vhost", ""))] if show_vhost else []), *row)
    table.caption = (
        f"{len(queues)} queue{'s' if len(queues) != 1 else ''}, {total:,} messages. "
        "in/s, out/s: published, delivered or got per second (last 5 s); drain: time to empty, "
        "full: time to reach the limit, at these rates; limit: arguments and policies combined"
    )
    return table


def _load(api: Api, vhost: str | None) -> list[dict[str, Any]]:
    path = "/api/queues" if vhost is None else "/api/queues/" + urllib.parse.quote(vhost, safe="")
    data = fetch_json(api, f"{path}?columns={COLUMNS}")
    if not isinstance(data, list):
        raise FetchError(f"{api.base}{path} did not answer a list of queues")
    return data


def queues(
    url: Annotated[
        str,
        typer.Option(
            "--url",
            "--http-url",
            envvar=["MAILSLOT_URL", "MAILSLOT_HTTP_URL"],
            help="The broker, as for every command: its AMQP URL (the API is on the same host, --http-port), "
            "or the API's own http(s):// URL. --http-url is the old name.",
        ),
    ] = DEFAULT_URL,
    http_port: Annotated[
        int, typer.Option(help="The management API's port, when --url is an AMQP URL.", min=1, max=65535)
    ] = DEFAULT_HTTP_PORT,
    vhost: Annotated[str | None, typer.Option(help="Only this virtual host's queues.")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Redraw every second until Ctrl-C.")] = False,
) -> None:
    """Show each queue's depth, publish/deliver rates, time to drain and time until full, and the policy
    and operator policy in force."""
    from rich.console import Console

    console = Console()
    try:
        api = Api.from_url(url, http_port)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    if not watch:
        try:
            console.print(render_table(_load(api, vhost), api.base))
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(1) from None
        return
    raise typer.Exit(_watch(console, api, vhost))


def _watch(console: Any, api: Api, vhost: str | None) -> int:
    from rich.live import Live
    from rich.text import Text

    def frame() -> RenderableType:
        try:
            return render_table(_load(api, vhost), api.base)
        except FetchError as exc:
            return Text(f"error: {exc} (retrying)", style="red")

    try:
        with Live(frame(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(WATCH_INTERVAL)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        return 0
