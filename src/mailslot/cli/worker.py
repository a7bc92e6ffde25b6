"""``mailslot worker module:function``: run a handler over a queue with a delivery guarantee.

Imports of the worker happen inside the command so ``mailslot --help`` stays fast.
"""

from __future__ import annotations

import enum
import importlib
import logging
import os
import sys
from typing import Annotated, Any

import typer

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"


class GuaranteeOption(enum.StrEnum):
    at_most_once = "at-most-once"
    at_least_once = "at-least-once"
    exactly_once = "exactly-once"


def load_handler(spec: str) -> Any:
    """``package.module:function`` -> the function (the current directory is importable, as for
    ``python -m``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise typer.BadParameter(f"{spec!r}: expected module:function")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise typer.BadParameter(f"cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise typer.BadParameter(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise typer.BadParameter(f"{spec!r} is not callable")
    return obj


def worker(
    handler: Annotated[str, typer.Argument(help="The handler, module:function; it gets a mailslot.worker.Job.")],
    queue: Annotated[str, typer.Option("--queue", "-q", help="Queue to consume (declared durable).")],
    url: Annotated[str, typer.Option("--url", envvar="MAILSLOT_URL", help="Broker URL; the nodes of a cluster as "
                                     "several URLs separated by commas (it reconnects to the next that answers).")
                   ] = DEFAULT_URL,
    guarantee: Annotated[GuaranteeOption, typer.Option(help="Delivery guarantee.")] = GuaranteeOption.at_least_once,
    sqlite: Annotated[
        str | None, typer.Option(help="exactly-once: the SQLite file holding your tables and the inbox.")
    ] = None,
    postgres: Annotated[
        str | None, typer.Option(help="exactly-once: PostgreSQL URL (psycopg 3) of your database and the inbox.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Messages in flight at once (the prefetch).")] = 16,
    shutdown_timeout: Annotated[
        float, typer.Option(min=0, help="On SIGTERM/Ctrl-C, seconds to finish in-flight messages before "
                            "requeueing them.")
    ] = 30.0,
    name: Annotated[str | None, typer.Option(help="Scope of derived output keys (default: the queue).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Consume QUEUE and run HANDLER for each message until SIGTERM or Ctrl-C."""
    from mailslot.worker import Guarantee, PostgresInbox, SQLiteInbox, Worker, run_worker

    if sqlite and postgres:
        raise typer.BadParameter("--sqlite and --postgres are exclusive")
    if guarantee is GuaranteeOption.exactly_once and not (sqlite or postgres):
        raise typer.BadParameter("exactly-once needs --sqlite FILE or --postgres URL (the inbox lives there)")
    function = load_handler(handler)
    inbox: SQLiteInbox | PostgresInbox | None = None
    if sqlite:
        inbox = SQLiteInbox(sqlite)
    elif postgres:
        inbox = PostgresInbox(postgres)
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        w = Worker(url.split(",") if "," in url else url, queue, function, guarantee=Guarantee(guarantee.value), inbox=inbox,
                   concurrency=concurrency, shutdown_timeout=shutdown_timeout, name=name)
    except (TypeError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    stats = run_worker(w)
    typer.echo(f"handled {stats.handled}, already processed {stats.already_processed}, failed {stats.failed}",
               err=True)
