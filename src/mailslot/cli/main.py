"""The ``mailslot`` command: wiring only. Each command's work lives in its own module so that
``mailslot --help`` stays fast and the modules stay small:

- :mod:`mailslot.cli.serve` runs a broker (``mailslot serve``);
- :mod:`mailslot.cli.client_commands` talks to one as a client (``publish``, ``consume``).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"  # RabbitMQ's defaults: guest user, vhost "/"

app = typer.Typer(
    name="mailslot",
    help="mailslot: a durable message broker that speaks AMQP 0-9-1 like RabbitMQ.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # tracebacks only for real bugs, and then plain ones
)


class Store(enum.StrEnum):
    sqlite = "sqlite"
    segments = "segments"
    postgres = "postgres"
    memory = "memory"


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mailslot {version('mailslot')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """mailslot: a durable message broker that speaks AMQP 0-9-1 like RabbitMQ."""


def _check_memory_watermark(value: str) -> str:
    from mailslot.core.alarms import LimitError, memory_limit

    try:
        memory_limit(value, 1)
    except LimitError as error:
        raise typer.BadParameter(str(error)) from None
    return value


def _check_disk_free_limit(value: str) -> str:
    from mailslot.core.alarms import LimitError, disk_free_limit

    try:
        disk_free_limit(value, 1)
    except LimitError as error:
        raise typer.BadParameter(str(error)) from None
    return value


def _port_or_none(value: str | int | None) -> int | None:
    """A port number (0 picks a free one) or ``none``: that listener is off."""
    if value is None or isinstance(value, int):
        return value
    if value.strip().lower() in ("none", "off"):
        return None
    try:
        port = int(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a port number or none") from None
    if not 0 <= port <= 65535:
        raise typer.BadParameter(f"{port} is not in the range 0<=x<=65535")
    return port


def _port_option(text: str) -> Any:
    return typer.Option(parser=_port_or_none, metavar="PORT|none", help=text)


@app.command()
def serve(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="MAILSLOT_CONFIG",
            dir_okay=False,
            help="TOML config file (docs/configuration.md). Precedence: flags > MAILSLOT_* environment "
            "variables > this file > defaults.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "0.0.0.0",
    port: Annotated[
        int | None,
        _port_option("AMQP port (0 picks a free one; none: no plain AMQP listener)."),
    ] = 5672,
    http_port: Annotated[
        int | None,
        _port_option("Management API port (0 picks a free one; none: no HTTP listener)."),
    ] = 15672,
    http_host: Annotated[
        str | None,
        typer.Option(help="Interface the management API listens on (default: the same as --host)."),
    ] = None,
    prometheus_port: Annotated[
        int | None,
        _port_option("Prometheus metrics port (0 picks a free one; none: no metrics listener)."),
    ] = 15692,
    prometheus_host: Annotated[
        str | None,
        typer.Option(help="Interface the metrics endpoint listens on (default: the same as --http-host)."),
    ] = None,
    http_open_health_checks: Annotated[
        bool,
        typer.Option(
            "--http-open-health-checks/--no-http-open-health-checks",
            help="Let /api/health/checks/* answer callers without credentials (load balancers, probes).",
        ),
    ] = False,
    data_dir: Annotated[
        Path, typer.Option(help="Where the durable store keeps its files.", file_okay=False)
    ] = Path("mailslot-data"),
    store: Annotated[
        Store,
        typer.Option(
            help="segments (default): durable segment log, fastest. sqlite: durable, one SQLite file. "
            "postgres: durable, in PostgreSQL (--postgres-dsn). memory: lost on exit."
        ),
    ] = Store.segments,
    heartbeat: Annotated[
        int, typer.Option(help="Heartbeat interval offered to clients, seconds (0 = off).", min=0)
    ] = 60,
    memory_high_watermark: Annotated[
        str,
        typer.Option(
            help="Block publishers while the broker's memory (RSS) is above this: a fraction of RAM (0.4) "
            "or a size (512MB, 2GiB). RabbitMQ's vm_memory_high_watermark.",
            callback=_check_memory_watermark,
        ),
    ] = "0.4",
    disk_free_limit: Annotated[
        str,
        typer.Option(
            help="Block publishers while free disk under --data-dir is below this: a size (50MB, 1GB) or "
            "a multiple of RAM (mem_relative:1.0 or 1.0x). RabbitMQ's disk_free_limit.",
            callback=_check_disk_free_limit,
        ),
    ] = "50MB",
    consumer_timeout: Annotated[
        float,
        typer.Option(
            help="Close a channel whose unacknowledged delivery is older than this, seconds (0 = never); "
            "queues may set their own with x-consumer-timeout (ms). RabbitMQ's consumer_timeout.",
            min=0,
        ),
    ] = 1800.0,
    max_message_size: Annotated[
        int,
        typer.Option(
            help="Largest message body accepted, bytes (16 MiB default as RabbitMQ 4.x; at most 536870912, "
            "512 MiB). RabbitMQ's max_message_size.",
            min=1,
        ),
    ] = 16 * 1024 * 1024,
    tls_port: Annotated[
        int | None,
        _port_option("AMQPS (AMQP over TLS) port, e.g. 5671; off unless given."),
    ] = None,
    http_tls_port: Annotated[
        int | None,
        _port_option("HTTPS port for the HTTP API, e.g. 15671; off unless given."),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(dir_okay=False, help="PEM server certificate (with its chain) for TLS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(dir_okay=False, help="PEM private key of --tls-cert.")] = None,
    tls_ca: Annotated[
        Path | None, typer.Option(dir_okay=False, help="PEM CA certificates that client certificates must chain to.")
    ] = None,
    tls_verify_peer: Annotated[
        bool,
        typer.Option(
            "--tls-verify-peer/--no-tls-verify-peer",
            help="Ask AMQPS clients for a certificate and verify it against --tls-ca (RabbitMQ's verify_peer).",
        ),
    ] = False,
    tls_fail_if_no_peer_cert: Annotated[
        bool,
        typer.Option(
            "--tls-fail-if-no-peer-cert/--no-tls-fail-if-no-peer-cert",
            help="With --tls-verify-peer: refuse AMQPS clients that send no certificate.",
        ),
    ] = False,
    default_user: Annotated[
        str,
        typer.Option(help="User created on a fresh data directory (administrator on --default-vhost). "
                     "RabbitMQ's default_user; guest may log in only from localhost."),
    ] = "guest",
    default_pass: Annotated[
        str, typer.Option(help="Its password (or MAILSLOT_DEFAULT_PASS / MAILSLOT_DEFAULT_PASS_FILE).")
    ] = "guest",
    default_vhost: Annotated[str, typer.Option(help="Vhost created on a fresh data directory.")] = "/",
    definitions: Annotated[
        Path | None,
        typer.Option(dir_okay=False, help="RabbitMQ definitions JSON to import at boot (rabbitmqctl "
                     "export_definitions); then no default user is created."),
    ] = None,
    handshake_timeout: Annotated[
        float, typer.Option(help="Seconds a client has to finish the AMQP handshake (RabbitMQ: 10).", min=0.001)
    ] = 10.0,
    max_connections: Annotated[
        int | None,
        typer.Option(help="Most client connections at once (default: what the file descriptor limit allows).",
                     min=1),
    ] = None,
    postgres_dsn: Annotated[
        str,
        typer.Option(
            help="With --store postgres: the server, as postgresql://user@host:5432/db (a libpq URL; env "
            "MAILSLOT_POSTGRES_DSN).",
            show_default=False,
        ),
    ] = "",
    postgres_schema: Annotated[
        str, typer.Option(help="With --store postgres: the schema holding this install's tables.")
    ] = "mailslot",
    node_name: Annotated[
        str,
        typer.Option(
            help="This node's name in the API and metrics, and among the nodes sharing a PostgreSQL schema "
            "(default mailslot@<short host name>, as RabbitMQ's rabbit@<host>).",
            show_default=False,
        ),
    ] = "",
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster", help="With --store postgres: share queues with the other nodes on the same schema "
            "(docs/cluster.md).",
        ),
    ] = False,
    lease_ttl: Annotated[
        float,
        typer.Option(help="With --cluster: seconds after which a node that stopped renewing its leases loses "
                     "its queues to another node.", min=0.001),
    ] = 10.0,
    cluster_link: Annotated[
        str,
        typer.Option(help="With --cluster: where this node listens for the other nodes, HOST:PORT or unix:/path "
                     "(publishes to queues another node owns are forwarded there).", show_default=False),
    ] = "",
    cluster_secret: Annotated[
        str,
        typer.Option(help="With --cluster-link: the secret every node shares (env MAILSLOT_CLUSTER_SECRET keeps it "
                     "out of the process list).", show_default=False),
    ] = "",
    cluster_link_tls: Annotated[
        bool,
        typer.Option("--cluster-link-tls", help="Mutual TLS on the cluster link, with --tls-cert/--tls-key (this "
                     "node's, naming its node name or host) and --tls-ca (the cluster's CA)."),
    ] = False,
    log_level: Annotated[LogLevel, typer.Option(help="Log verbosity.")] = LogLevel.info,
) -> None:
    """Run the broker until Ctrl-C or SIGTERM (SIGHUP reloads the TLS certificates)."""
    import sys

    from mailslot.cli.serve import config_from_command_line, run_serve
    from mailslot.config import ConfigError

    try:
        broker_config = config_from_command_line(ctx, config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(1) from None
    raise typer.Exit(run_serve(broker_config, log_level=broker_config.log_level))


UrlOption = Annotated[str, typer.Option("--url", envvar="MAILSLOT_URL", help="Broker URL.")]


@app.command()
def publish(
    body: Annotated[str, typer.Argument(help="Message body; '-' reads it from stdin.")],
    url: UrlOption = DEFAULT_URL,
    exchange: Annotated[str, typer.Option(help="Exchange ('' is the default exchange).")] = "",
    routing_key: Annotated[
        str, typer.Option("--routing-key", "-r", help="Routing key; on the default exchange, the queue name.")
    ] = "",
    persistent: Annotated[
        bool, typer.Option("--persistent/--transient", help="delivery_mode 2 (on disk) or 1.")
    ] = True,
    count: Annotated[int, typer.Option(help="Publish the body this many times.", min=1)] = 1,
    confirm: Annotated[
        bool,
        typer.Option(
            "--confirm", help="Use publisher confirms: wait until the broker has taken each message."
        ),
    ] = False,
    declare: Annotated[
        bool,
        typer.Option(
            "--declare", help="First declare a durable queue named by --routing-key (default exchange only)."
        ),
    ] = False,
) -> None:
    """Publish a message (BODY, or stdin with '-')."""
    import sys

    from mailslot.cli.client_commands import PublishRequest, run_publish

    data = sys.stdin.buffer.read() if body == "-" else body.encode()
    request = PublishRequest(
        url=url,
        exchange=exchange,
        routing_key=routing_key,
        body=data,
        persistent=persistent,
        count=count,
        confirm=confirm,
        declare=declare,
    )
    raise typer.Exit(run_publish(request))


@app.command()
def consume(
    queue: Annotated[str, typer.Option("--queue", "-q", help="Queue to consume from.")],
    url: UrlOption = DEFAULT_URL,
    count: Annotated[
        int, typer.Option(help="Stop after this many messages (0 = run until Ctrl-C).", min=0)
    ] = 0,
    no_ack: Annotated[
        bool,
        typer.Option(
            "--no-ack",
            help="Let the broker forget each message as it sends it (auto-ack). With --count, messages "
            "already sent past the count are lost.",
        ),
    ] = False,
    prefetch: Annotated[int, typer.Option(help="Unacked messages in flight at most.", min=1)] = 100,
    declare: Annotated[
        bool, typer.Option("--declare", help="First declare QUEUE as a durable queue.")
    ] = False,
) -> None:
    """Print each message's routing key and body as it arrives."""
    from mailslot.cli.client_commands import ConsumeRequest, run_consume

    request = ConsumeRequest(
        url=url, queue=queue, count=count, no_ack=no_ack, prefetch=prefetch, declare=declare
    )
    raise typer.Exit(run_consume(request))

from mailslot.cli.bench import bench as _bench

app.command(name="bench")(_bench)

from mailslot.cli.queues import queues as _queues

app.command(name="queues")(_queues)

from mailslot.cli.spike import spike as _spike

app.command(name="spike")(_spike)

from mailslot.cli.worker import worker as _worker

app.command(name="worker")(_worker)

from mailslot.cli.dlq import register as _register_dlq

_register_dlq(app)  # mailslot dlq list|show|redrive, mailslot trace MESSAGE_ID

from mailslot.cli.ctl import app as _ctl

app.add_typer(_ctl, name="ctl")


# typer raises click's ClickException, from the click it vendors (0.29+) or the installed one: take it
# from typer.BadParameter's ancestry, whichever it is.
_ClickException: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main() -> None:
    """The ``mailslot`` command: ``app``, with usage mistakes (a missing argument, an unknown option, a bad
    value) reported as one line on stderr and exit code 2, like every other error, instead of click's
    usage panel. ``--help`` (and a bare command group) still print the full usage."""
    try:
        code = app(standalone_mode=False, prog_name="mailslot")
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        raise SystemExit(1) from None
    except _ClickException as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            typer.echo(error.format_message())
            raise SystemExit(0) from None
        context = getattr(error, "ctx", None)
        command = context.command_path if context is not None else "mailslot"
        typer.echo(f"{command}: {error.format_message()} (see {command} --help)", err=True)
        raise SystemExit(error.exit_code) from None
    raise SystemExit(code if isinstance(code, int) else 0)
