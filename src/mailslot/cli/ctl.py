"""``mailslot ctl``: administration in the spirit of rabbitmqctl, with its command names, argument order
and flags (``-p VHOST``, ``--priority``, ``--apply-to``); docs/ctl.md.

It talks to a running broker through the management HTTP API, RabbitMQ's paths (so it works against a
RabbitMQ as well), named as every mailslot command names a broker: ``--url`` (``MAILSLOT_URL``), its AMQP
URL ``amqp://user:password@host:port/vhost`` (the API is on the same host, ``--http-port``) or the API's own
``http(s)://`` URL; ``--username`` / ``--password`` (``MAILSLOT_CTL_USERNAME`` / ``MAILSLOT_CTL_PASSWORD``)
override the URL's credentials. With ``--data-dir DIR`` the user, vhost, permission, limit and policy
commands work on a STOPPED broker's data directory instead (ctl_backends.OfflineAdmin).

Rules of this module: every failure is one ``error: ...`` line on stderr and a non-zero exit code (1; 69
when the broker cannot be reached; 2 for bad arguments, typer's); progress lines ("Adding user ...") go to
stderr, so stdout holds only what was asked for (tables, ``--format json``, an exported file with ``-``).
"""

# No ``from __future__ import annotations``: typer reads the annotations of the policy commands, which a
# function defines with its arguments in them (_policy_commands), so they must be evaluated where they stand.

import enum
import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from mailslot.cli.ctl_backends import (
    USER_LIMITS,
    VHOST_LIMITS,
    CtlError,
    HttpAdmin,
    OfflineAdmin,
    parse_limits,
)
from mailslot.cli.queues import DEFAULT_HTTP_PORT, DEFAULT_URL, Api, FetchError

app = typer.Typer(
    name="ctl",
    help="Administer a broker as rabbitmqctl does: users, vhosts, permissions, limits, policies, definitions, "
    "connections (docs/ctl.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Format(enum.StrEnum):
    table = "table"
    json = "json"


@dataclass
class Settings:
    url: str
    http_port: int
    username: str | None
    password: str | None
    data_dir: Path | None
    quiet: bool
    cacert: Path | None = None


@app.callback()
def _ctl(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option("--url", envvar="MAILSLOT_URL",
                     help="The broker: its AMQP URL (the management API is on the same host, --http-port) or the "
                     "API's http(s):// URL; its user must be an administrator (policies: policymaker)."),
    ] = DEFAULT_URL,
    http_port: Annotated[
        int, typer.Option(help="The management API's port, when --url is an AMQP URL.", min=1, max=65535)
    ] = DEFAULT_HTTP_PORT,
    username: Annotated[
        str | None,
        typer.Option("--username", envvar="MAILSLOT_CTL_USERNAME", help="User to log in to the API as "
                     "(overrides the one in --url).", show_default=False),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option("--password", envvar="MAILSLOT_CTL_PASSWORD", help="Its password (overrides the one in "
                     "--url; prefer the environment variable: a flag shows in ps).", show_default=False),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", file_okay=False,
                     help="Work OFFLINE on this stopped broker's data directory (users, vhosts, permissions, "
                     "limits, policies) instead of the running broker's API.", show_default=False),
    ] = None,
    cacert: Annotated[
        Path | None,
        typer.Option("--cacert", envvar="MAILSLOT_CTL_CACERT", dir_okay=False,
                     help="PEM CA certificate(s) to verify an https:// (or amqps://) API with, instead of the "
                     "system's.", show_default=False),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines, as rabbitmqctl -q.")] = False,
) -> None:
    """Administer a broker as rabbitmqctl does (docs/ctl.md)."""
    ctx.obj = Settings(url, http_port, username, password, data_dir, quiet, cacert)


# ---- plumbing ---------------------------------------------------------------------------------------


def _fail(text: str, code: int = 1) -> typer.Exit:
    print(f"error: {text}", file=sys.stderr)
    return typer.Exit(code)


@contextmanager
def _admin(ctx: typer.Context, *, offline: bool = True) -> Iterator[Any]:
    """The backend the command works on; any CtlError ends the command with one line."""
    settings: Settings = ctx.obj
    command = ctx.info_name or "this command"
    try:
        if settings.data_dir is not None:
            if not offline:
                raise CtlError(f"{command} needs a running broker; offline mode (--data-dir) covers users, "
                               "vhosts, permissions, limits and policies")
            with OfflineAdmin.open(settings.data_dir) as admin:
                yield admin
            return
        try:
            api = Api.from_url(settings.url, settings.http_port)
        except FetchError as error:
            raise CtlError(str(error)) from None
        if settings.username is not None or settings.password is not None:
            api = Api(api.base, settings.username if settings.username is not None else api.username,
                      settings.password if settings.password is not None else api.password)
        yield HttpAdmin(api, settings.cacert)
    except CtlError as error:
        raise _fail(str(error), error.exit_code) from None


def _say(ctx: typer.Context, text: str) -> None:
    if not ctx.obj.quiet:
        print(text, file=sys.stderr)


def _show(rows: list[dict[str, Any]], columns: list[str], fmt: Format, title: str) -> None:
    if fmt is Format.json:
        print(json.dumps(rows, indent=2))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    Console(highlight=False, markup=False).print(table)


def _cell(value: Any) -> str:
    from rich.markup import escape

    if isinstance(value, list):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(value, sort_keys=True)
    elif value is None:
        text = ""
    else:
        text = str(value)
    return escape(text)


def _read_password(given: str | None) -> str:
    """rabbitmqctl asks for the password when it is left out: from the terminal, or a line of stdin."""
    if given is not None:
        return given
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    line = sys.stdin.readline()
    if not line:
        raise _fail("no password given (as an argument or a line on stdin)")
    return line.rstrip("\r\n")


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise _fail(f"the {what} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise _fail(f"the {what} must be a JSON object, such as '{{\"max-length\": 1000}}'")
    return value


VhostOption = Annotated[str, typer.Option("-p", "--vhost", help="Virtual host (rabbitmqctl's -p).")]
FormatOption = Annotated[
    Format, typer.Option("--format", "--formatter", help="table, or json (a list of objects).")
]


def _command(name: str, help: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A ctl command; its help is the function's docstring, or ``help`` for one a factory defines."""
    return app.command(name, help=help)


# ---- users ------------------------------------------------------------------------------------------


PasswordArgument = Annotated[str | None, typer.Argument(help="Left out: read from the terminal or stdin.")]


@_command("add_user")
def add_user(ctx: typer.Context, username: str, password: PasswordArgument = None) -> None:
    """Add a user (no tags, no permissions), as rabbitmqctl add_user."""
    secret = _read_password(password)
    with _admin(ctx) as admin:
        _say(ctx, f'Adding user "{username}" ...')
        admin.add_user(username, secret)


@_command("change_password")
def change_password(ctx: typer.Context, username: str, password: PasswordArgument = None) -> None:
    """Change a user's password (its open connections are closed)."""
    secret = _read_password(password)
    with _admin(ctx) as admin:
        _say(ctx, f'Changing password for user "{username}" ...')
        admin.change_password(username, secret)


@_command("clear_password")
def clear_password(ctx: typer.Context, username: str) -> None:
    """Remove a user's password: it can then log in only with a certificate (SASL EXTERNAL)."""
    with _admin(ctx) as admin:
        _say(ctx, f'Clearing password for user "{username}" ...')
        admin.change_password(username, None)


@_command("delete_user")
def delete_user(ctx: typer.Context, username: str) -> None:
    """Delete a user, its permissions and limits (its open connections are closed)."""
    with _admin(ctx) as admin:
        _say(ctx, f'Deleting user "{username}" ...')
        admin.delete_user(username)


@_command("set_user_tags")
def set_user_tags(
    ctx: typer.Context,
    username: str,
    tags: Annotated[list[str] | None, typer.Argument(help="administrator, monitoring, policymaker, management, "
                                                    "impersonator, or your own; none clears them.")] = None,
) -> None:
    """Set a user's tags (replacing the ones it has)."""
    given = list(tags or [])
    with _admin(ctx) as admin:
        _say(ctx, f'Setting tags for user "{username}" to [{", ".join(given)}] ...')
        admin.set_user_tags(username, given)


@_command("list_users")
def list_users(ctx: typer.Context, fmt: FormatOption = Format.table) -> None:
    """List users and their tags."""
    with _admin(ctx) as admin:
        _say(ctx, "Listing users ...")
        _show(admin.list_users(), ["user", "tags"], fmt, "users")


# ---- vhosts -----------------------------------------------------------------------------------------


@_command("add_vhost")
def add_vhost(
    ctx: typer.Context,
    vhost: str,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    tags: Annotated[str, typer.Option(help="Comma-separated tags.")] = "",
    default_queue_type: Annotated[str, typer.Option(help="classic, quorum or stream (kept, exported).")] = "",
) -> None:
    """Add a virtual host (an existing one keeps its contents, as rabbitmqctl)."""
    with _admin(ctx) as admin:
        _say(ctx, f'Adding vhost "{vhost}" ...')
        admin.add_vhost(vhost, description, [t.strip() for t in tags.split(",") if t.strip()], default_queue_type)


@_command("delete_vhost")
def delete_vhost(ctx: typer.Context, vhost: str) -> None:
    """Delete a virtual host with its queues, messages, exchanges and permissions (connections closed)."""
    with _admin(ctx) as admin:
        _say(ctx, f'Deleting vhost "{vhost}" ...')
        admin.delete_vhost(vhost)


@_command("list_vhosts")
def list_vhosts(ctx: typer.Context, fmt: FormatOption = Format.table) -> None:
    """List virtual hosts."""
    with _admin(ctx) as admin:
        _say(ctx, "Listing vhosts ...")
        _show(admin.list_vhosts(), ["name", "description", "tags", "default_queue_type"], fmt, "vhosts")


# ---- permissions ------------------------------------------------------------------------------------


@_command("set_permissions")
def set_permissions(
    ctx: typer.Context,
    username: str,
    conf: Annotated[str, typer.Argument(help="Regex of the resources the user may configure.")],
    write: Annotated[str, typer.Argument(help="Regex of the resources it may write to.")],
    read: Annotated[str, typer.Argument(help="Regex of the resources it may read from.")],
    vhost: VhostOption = "/",
) -> None:
    """Set a user's configure, write and read permissions in a vhost."""
    with _admin(ctx) as admin:
        _say(ctx, f'Setting permissions for user "{username}" in vhost "{vhost}" ...')
        admin.set_permissions(vhost, username, conf, write, read)


@_command("clear_permissions")
def clear_permissions(ctx: typer.Context, username: str, vhost: VhostOption = "/") -> None:
    """Remove a user's permissions in a vhost."""
    with _admin(ctx) as admin:
        _say(ctx, f'Clearing permissions for user "{username}" in vhost "{vhost}" ...')
        admin.clear_permissions(vhost, username)


@_command("list_permissions")
def list_permissions(ctx: typer.Context, vhost: VhostOption = "/", fmt: FormatOption = Format.table) -> None:
    """List the permissions of every user in a vhost."""
    with _admin(ctx) as admin:
        _say(ctx, f'Listing permissions for vhost "{vhost}" ...')
        _show(admin.list_permissions(vhost), ["user", "configure", "write", "read"], fmt, f"permissions in {vhost}")


@_command("list_user_permissions")
def list_user_permissions(ctx: typer.Context, username: str, fmt: FormatOption = Format.table) -> None:
    """List a user's permissions in every vhost."""
    with _admin(ctx) as admin:
        _say(ctx, f'Listing permissions for user "{username}" ...')
        _show(admin.list_user_permissions(username), ["vhost", "configure", "write", "read"], fmt,
              f"permissions of {username}")


@_command("set_topic_permissions")
def set_topic_permissions(
    ctx: typer.Context,
    username: str,
    exchange: Annotated[str, typer.Argument(help="The topic exchange the patterns apply to.")],
    write: Annotated[str, typer.Argument(help="Regex of the routing keys the user may publish with.")],
    read: Annotated[str, typer.Argument(help="Regex of the routing keys it may bind with.")],
    vhost: VhostOption = "/",
) -> None:
    """Set a user's topic permissions on an exchange ({username} and {vhost} may appear in the patterns)."""
    with _admin(ctx) as admin:
        _say(ctx, f'Setting topic permissions on "{exchange}" for user "{username}" in vhost "{vhost}" ...')
        admin.set_topic_permissions(vhost, username, exchange, write, read)


@_command("clear_topic_permissions")
def clear_topic_permissions(
    ctx: typer.Context,
    username: str,
    exchange: Annotated[str | None, typer.Argument(help="Only this exchange's (default: all).")] = None,
    vhost: VhostOption = "/",
) -> None:
    """Remove a user's topic permissions in a vhost (on one exchange, or all)."""
    with _admin(ctx) as admin:
        _say(ctx, f'Clearing topic permissions for user "{username}" in vhost "{vhost}" ...')
        admin.clear_topic_permissions(vhost, username, exchange)


@_command("list_topic_permissions")
def list_topic_permissions(ctx: typer.Context, vhost: VhostOption = "/", fmt: FormatOption = Format.table) -> None:
    """List the topic permissions in a vhost."""
    with _admin(ctx) as admin:
        _say(ctx, f'Listing topic permissions for vhost "{vhost}" ...')
        _show(admin.list_topic_permissions(vhost), ["user", "exchange", "write", "read"], fmt,
              f"topic permissions in {vhost}")


# ---- limits -----------------------------------------------------------------------------------------


def _parse_limits(definition: str, allowed: tuple[str, ...]) -> dict[str, int]:
    """Checked before the broker is asked anything, so a bad definition is the error whatever its state."""
    try:
        return parse_limits(definition, allowed)
    except CtlError as error:
        raise _fail(str(error)) from None


def _show_limits(limits: dict[str, int], fmt: Format, title: str) -> None:
    _show([{"limit": k, "value": v} for k, v in sorted(limits.items())], ["limit", "value"], fmt, title)


@_command("set_vhost_limits")
def set_vhost_limits(
    ctx: typer.Context,
    definition: Annotated[str, typer.Argument(help='JSON, e.g. \'{"max-connections": 100, "max-queues": 500}\'; '
                                              "-1: no limit. Replaces the vhost's limits.")],
    vhost: VhostOption = "/",
) -> None:
    """Set a vhost's max-connections and max-queues (the ones not given are cleared, as rabbitmqctl)."""
    limits = _parse_limits(definition, VHOST_LIMITS)
    with _admin(ctx) as admin:
        _say(ctx, f'Setting vhost limits to "{definition}" for vhost "{vhost}" ...')
        admin.set_vhost_limits(vhost, limits)


@_command("clear_vhost_limits")
def clear_vhost_limits(ctx: typer.Context, vhost: VhostOption = "/") -> None:
    """Remove a vhost's limits."""
    with _admin(ctx) as admin:
        _say(ctx, f'Clearing vhost "{vhost}" limits ...')
        admin.clear_vhost_limits(vhost)


@_command("list_vhost_limits")
def list_vhost_limits(ctx: typer.Context, vhost: VhostOption = "/", fmt: FormatOption = Format.table) -> None:
    """Show a vhost's limits."""
    with _admin(ctx) as admin:
        _say(ctx, f'Listing limits for vhost "{vhost}" ...')
        _show_limits(admin.vhost_limits(vhost), fmt, f"limits of vhost {vhost}")


@_command("set_user_limits")
def set_user_limits(
    ctx: typer.Context,
    username: str,
    definition: Annotated[str, typer.Argument(help='JSON, e.g. \'{"max-connections": 10, "max-channels": 20}\'; '
                                              "-1: no limit. Merged into the user's limits.")],
) -> None:
    """Set a user's max-connections and max-channels (other limits it has stay, as rabbitmqctl)."""
    limits = _parse_limits(definition, USER_LIMITS)
    with _admin(ctx) as admin:
        _say(ctx, f'Setting user limits to "{definition}" for user "{username}" ...')
        admin.set_user_limits(username, limits)


@_command("clear_user_limits")
def clear_user_limits(
    ctx: typer.Context,
    username: str,
    limit: Annotated[str, typer.Argument(help="max-connections, max-channels, or all.")] = "all",
) -> None:
    """Remove one of a user's limits, or all of them."""
    if limit not in (*USER_LIMITS, "all"):
        raise _fail(f"unknown limit {limit!r}; expected one of {', '.join(USER_LIMITS)} or all")
    with _admin(ctx) as admin:
        _say(ctx, f'Clearing "{limit}" limit for user "{username}" ...')
        admin.clear_user_limits(username, limit)


@_command("list_user_limits")
def list_user_limits(ctx: typer.Context, username: str, fmt: FormatOption = Format.table) -> None:
    """Show a user's limits."""
    with _admin(ctx) as admin:
        _say(ctx, f'Listing limits for user "{username}" ...')
        _show_limits(admin.user_limits(username), fmt, f"limits of user {username}")


# ---- definitions --------------------------------------------------------------------------------------


@_command("import_definitions")
def import_definitions(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="A definitions JSON file (rabbitmqctl export_definitions); - reads "
                                        "stdin.")],
    vhost: Annotated[str | None, typer.Option("-p", "--vhost", help="Import into this vhost only.")] = None,
) -> None:
    """Import RabbitMQ definitions (users, vhosts, permissions, policies, queues, exchanges, bindings)."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        body = json.loads(text)
    except (OSError, UnicodeDecodeError) as error:
        raise _fail(f"cannot read {file}: {error}") from None
    except ValueError as error:
        raise _fail(f"{file} is not JSON: {error}") from None
    with _admin(ctx, offline=False) as admin:
        _say(ctx, f'Importing definitions from "{file}" ...')
        admin.import_definitions(body, vhost)


@_command("export_definitions")
def export_definitions(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="Where to write the JSON; - writes stdout.")],
    vhost: Annotated[str | None, typer.Option("-p", "--vhost", help="Only this vhost's definitions.")] = None,
) -> None:
    """Export the broker's definitions as RabbitMQ's JSON (rabbitmqctl export_definitions)."""
    with _admin(ctx, offline=False) as admin:
        _say(ctx, f'Exporting definitions to "{file}" ...')
        text = json.dumps(admin.export_definitions(vhost), indent=2) + "\n"
    if file == "-":
        sys.stdout.write(text)
        return
    try:
        Path(file).write_text(text, encoding="utf-8")
    except OSError as error:
        raise _fail(f"cannot write {file}: {error}") from None


# ---- connections ------------------------------------------------------------------------------------


@_command("list_connections")
def list_connections(ctx: typer.Context, fmt: FormatOption = Format.table) -> None:
    """List client connections (the names close_connection takes)."""
    with _admin(ctx, offline=False) as admin:
        _say(ctx, "Listing connections ...")
        _show(admin.list_connections(), ["name", "user", "vhost", "peer_host", "peer_port", "state", "channels",
                                         "client"], fmt, "connections")


@_command("close_connection")
def close_connection(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="As list_connections shows it, e.g. '127.0.0.1:50312 -> 127.0.0.1:5672'.")],
    reason: Annotated[str, typer.Argument(help="Sent to the client with 320 CONNECTION_FORCED.")],
) -> None:
    """Close a client connection (AMQP 320 CONNECTION_FORCED with REASON)."""
    with _admin(ctx, offline=False) as admin:
        _say(ctx, f'Closing connection "{name}", reason: {reason} ...')
        admin.close_connection(name, reason)


# ---- policies ---------------------------------------------------------------------------------------
# Policies and operator policies are the same three commands on two kinds of policy; _PolicyKind holds
# what differs (names, rabbitmqctl's wording, --apply-to) and _policy_commands registers them for each.


@dataclass(frozen=True)
class _PolicyKind:
    path: str  # the API's path segment, which the backends take as the kind
    noun: str  # in the command names (spaces as _) and their help
    plural: str
    a_noun: str  # with its article
    said: tuple[str, str]  # rabbitmqctl's word for one and for several in its progress lines
    set_help: str
    apply_to: str  # --apply-to's default
    apply_to_help: str


PriorityOption = Annotated[int, typer.Option("--priority", help="The highest-priority matching policy applies.")]
PatternArgument = Annotated[str, typer.Argument(help="Regex matched against queue/exchange names.")]
DefinitionArgument = Annotated[str, typer.Argument(help='JSON, e.g. \'{"max-length": 1000}\'.')]


def _policy_commands(kind: _PolicyKind) -> None:
    """Register set_<noun>, clear_<noun> and list_<plural> for one kind of policy."""
    noun = kind.noun.replace(" ", "_")

    @_command(f"set_{noun}", help=kind.set_help)
    def set_policy(
        ctx: typer.Context,
        name: str,
        pattern: PatternArgument,
        definition: DefinitionArgument,
        vhost: VhostOption = "/",
        priority: PriorityOption = 0,
        apply_to: Annotated[str, typer.Option("--apply-to", help=kind.apply_to_help)] = kind.apply_to,
    ) -> None:
        body = _json_object(definition, "policy definition")
        with _admin(ctx) as admin:
            _say(ctx, f'Setting {kind.said[0]} "{name}" for pattern "{pattern}" to "{definition}" with priority '
                      f'"{priority}" for vhost "{vhost}" ...')
            admin.set_policy(kind.path, vhost, name, pattern, body, priority, apply_to)

    @_command(f"clear_{noun}", help=f"Remove {kind.a_noun}.")
    def clear_policy(ctx: typer.Context, name: str, vhost: VhostOption = "/") -> None:
        with _admin(ctx) as admin:
            _say(ctx, f'Clearing {kind.noun} "{name}" on vhost "{vhost}" ...')
            admin.clear_policy(kind.path, vhost, name)

    @_command(f"list_{kind.plural.replace(' ', '_')}", help=f"List a vhost's {kind.plural}.")
    def list_policies(ctx: typer.Context, vhost: VhostOption = "/", fmt: FormatOption = Format.table) -> None:
        with _admin(ctx) as admin:
            _say(ctx, f'Listing {kind.said[1]} for vhost "{vhost}" ...')
            _show(admin.list_policies(kind.path, vhost),
                  ["vhost", "name", "pattern", "apply-to", "definition", "priority"], fmt, f"{kind.plural} in {vhost}")


_policy_commands(_PolicyKind(
    path="policies", noun="policy", plural="policies", a_noun="a policy", said=("policy", "policies"),
    set_help="Set a policy (docs/policies.md).",
    apply_to="all", apply_to_help="queues, classic_queues, quorum_queues, exchanges or all.",
))
_policy_commands(_PolicyKind(
    path="operator-policies", noun="operator policy", plural="operator policies", a_noun="an operator policy",
    said=("operator policy override", "operator policy overrides"),
    set_help="Set an operator policy: limits on top of the queues' own (the lower value wins).",
    apply_to="queues", apply_to_help="queues, classic_queues or quorum_queues.",
))
