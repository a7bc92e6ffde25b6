"""``mailslot spike``: the Black Friday scenario (a publish spike into a queue drained by slow workers), with a
live display, an exact loss/duplicate report and a picture (PNG + self-contained HTML).

Imports of the load generator happen inside the command so ``mailslot --help`` stays fast.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
MB = 1024 * 1024


class SpikeStore(enum.StrEnum):
    segments = "segments"
    sqlite = "sqlite"
    memory = "memory"


def spike(
    url: Annotated[str, typer.Option("--url", envvar="MAILSLOT_URL", help="Broker URL (any AMQP 0-9-1 broker).")]
    = DEFAULT_URL,
    start: Annotated[
        bool, typer.Option("--start", help="Start a mailslot broker subprocess (temp data dir) instead of --url.")
    ] = False,
    store: Annotated[SpikeStore, typer.Option(help="Store of the --start broker.")] = SpikeStore.segments,
    pid: Annotated[
        int | None, typer.Option("--pid", help="Broker process id for RSS (with --url; --start knows it).")
    ] = None,
    rate: Annotated[float, typer.Option("--rate", "-r", min=1, help="Total publish rate, msg/s.")] = 10_000,
    duration: Annotated[float, typer.Option("--duration", "-z", min=0.1, help="Seconds of spike.")] = 60.0,
    worker_rate: Annotated[
        float, typer.Option("--worker-rate", "-w", min=1, help="Total processing rate of the workers, msg/s.")
    ] = 500,
    workers: Annotated[int, typer.Option("--workers", "-y", min=1, help="Worker connections.")] = 4,
    producers: Annotated[int, typer.Option("--producers", "-x", min=1, help="Producer connections.")] = 2,
    size: Annotated[int, typer.Option("--size", "-s", min=24, help="Body bytes (>= 24: the stamp).")] = 256,
    queue: Annotated[
        str, typer.Option("--queue", help="Queue name (default: a fresh mailslot-spike-<id>, deleted afterwards).")
    ] = "",
    max_length: Annotated[
        int, typer.Option("--max-length", min=0,
                          help="Declare the queue with x-max-length N and x-overflow reject-publish (0 = no limit).")
    ] = 0,
    drain: Annotated[
        bool, typer.Option("--drain/--no-drain", help="After the spike, keep the workers going until the queue is empty.")
    ] = True,
    drain_rate: Annotated[
        float, typer.Option("--drain-rate", min=0, help="Total worker rate while draining (0 = --worker-rate).")
    ] = 0,
    drain_timeout: Annotated[
        float, typer.Option("--drain-timeout", min=0, help="Stop draining after this many seconds (0 = never).")
    ] = 0,
    confirm_window: Annotated[
        int, typer.Option("--confirm-window", min=1, help="Unconfirmed messages per producer at most.")
    ] = 5000,
    prefetch: Annotated[int, typer.Option("--prefetch", min=1, help="basic.qos prefetch per worker.")] = 100,
    out: Annotated[Path, typer.Option("--out", file_okay=False, help="Directory for spike.png/.html/.json.")]
    = Path("spike-out"),
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live display.")] = False,
) -> None:
    """Black Friday: publish a spike (default 10,000 msg/s for 60 s, persistent, confirmed) into a queue that
    workers drain at 500 msg/s; show it live; report lost/duplicate messages exactly; draw it."""
    import json
    import sys

    from rich.console import Console

    from mailslot.bench.driver import BenchConnectionError
    from mailslot.bench.spike import SpikeConfig, run_spike
    from mailslot.cli.event_loop import run

    err = Console(stderr=True, highlight=False)
    broker = None
    if start:
        from mailslot.bench.broker_process import BrokerProcess

        try:
            broker = BrokerProcess(store=store.value).start()
        except (OSError, RuntimeError) as exc:
            err.print(f"[red]could not start mailslot:[/] {exc}")
            raise typer.Exit(1) from None
        url, pid = broker.url, broker.pid
        err.print(f"[dim]started mailslot pid {pid} ({store.value} store, {broker.data_dir}) at {url}[/]")

    live = None if quiet else _LiveView(err)
    cfg = SpikeConfig(url=url, rate=rate, duration=duration, worker_rate=worker_rate, workers=workers,
                      producers=producers, size=size, queue=queue, max_length=max_length, drain=drain,
                      drain_rate=drain_rate, drain_timeout=drain_timeout, confirm_window=confirm_window,
                      prefetch=prefetch, pid=pid, progress=live.update if live else None)
    broker_exit = None
    try:
        if live:
            live.start()
        result = run(run_spike(cfg))
    except (OSError, RuntimeError, ValueError, BenchConnectionError) as exc:
        if live:
            live.stop()
        err.print(f"[red]spike failed:[/] {type(exc).__name__}: {exc}")
        if broker is not None and not broker.alive():
            err.print(f"[red]the broker exited with code {broker.process.returncode}:[/]")  # type: ignore[union-attr]
            err.print("".join(broker.output[-20:]))
        if broker is not None:
            broker.stop()
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        if live:
            live.stop()
        if broker is not None:
            broker.stop()
        raise typer.Exit(130) from None
    finally:
        if live:
            live.stop()
    if broker is not None:
        alive = broker.alive()
        broker_exit = broker.stop()
        result["report"]["broker_alive_at_end"] = alive
        result["report"]["broker_exit_code"] = broker_exit
    paths = _write_outputs(result, out, err)
    rep = result["report"]
    if json_out:
        sys.stdout.write(json.dumps({**rep, "files": [str(p) for p in paths]}) + "\n")
    else:
        print_report(Console(highlight=False), cfg, rep, paths)
    if rep["lost"] or rep["duplicates"] or rep.get("broker_alive_at_end") is False:
        raise typer.Exit(1)


def _write_outputs(result: dict[str, Any], out: Path, err: Any) -> list[Path]:
    import json

    from mailslot.bench.spike_chart import write_html, write_png

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    data = out / "spike.json"
    data.write_text(json.dumps(result, indent=1), encoding="utf-8")
    paths.append(data)
    paths.append(write_html(result, out / "spike.html"))
    try:
        paths.append(write_png(result, out / "spike.png"))
    except ImportError:
        from rich.markup import escape

        # escape(): rich would take "[bench]" for markup and print "pip install 'mailslot'" (issue 15).
        err.print(f"[yellow]no PNG (spike.html has the same picture): matplotlib is not installed; the bench extra "
                  f"brings it: {escape(install_extra_command('bench'))}[/]", soft_wrap=True)
    return paths


def install_extra_command(extra: str) -> str:
    """The command that adds ``extra`` to the mailslot that runs, in its own environment: from the source
    checkout it was installed from (what scripts/serve does: ``pip install 'mailslot[bench]'`` would fetch
    another copy from the package index instead), else from the index."""
    import json
    import shlex
    import sys
    import urllib.parse
    from importlib import metadata

    target = f"mailslot[{extra}]"
    try:
        direct = json.loads(metadata.distribution("mailslot").read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        direct = {}
    url = str(direct.get("url", ""))
    editable = ""
    if url.startswith("file://"):
        target = urllib.parse.unquote(urllib.parse.urlsplit(url).path) + f"[{extra}]"
        editable = "-e " if (direct.get("dir_info") or {}).get("editable") else ""
    return f"{shlex.quote(sys.executable)} -m pip install {editable}{shlex.quote(target)}"


def _mb(v: int | None) -> str:
    return "n/a" if v is None else f"{v / MB:,.1f} MB"


def _n(v: Any) -> str:
    return "n/a" if v is None else f"{v:,}"


def print_report(out: Any, cfg: Any, r: dict[str, Any], paths: list[Path]) -> None:
    ok = "[green]0[/]" if r["lost"] == 0 else (f"[red bold]{r['lost']:,}[/] e.g. {', '.join(r['lost_sample'])}"
                                               if r["lost"] else "[yellow]unknown (not drained)[/]")
    out.print(f"[bold]spike[/] {cfg.rate:,.0f} msg/s x {cfg.duration:g} s -> queue [bold]{r['queue']}[/], "
              f"workers {cfg.worker_rate:,.0f} msg/s"
              + (f", max-length {cfg.max_length:,} (reject-publish)" if cfg.max_length else ""))
    out.print(f"  published     {r['published']:>12,}   reached {r['reached_publish_rate']:>9,.0f} msg/s "
              f"(requested {r['requested_rate']:,.0f})")
    out.print(f"  confirmed     {r['confirmed']:>12,}")
    out.print(f"  rejected      {r['rejected']:>12,}   (nacked by the broker: refused, not lost)")
    if r["unconfirmed"]:
        out.print(f"  unconfirmed   {r['unconfirmed']:>12,}   [yellow](no confirm before the end)[/]")
    out.print(f"  delivered     {r['delivered']:>12,}   during the spike {r['reached_deliver_rate']:,.0f} msg/s"
              + (f", draining {r['drain_deliver_rate']:,.0f} msg/s" if r["drain_deliver_rate"] else ""))
    out.print(f"  lost          {'':>12}   {ok}   (confirmed, never delivered)")
    out.print(f"  duplicates    {r['duplicates']:>12,}")
    if r["delivered_rejected"] or r["foreign"]:
        out.print(f"  [yellow]delivered although nacked {r['delivered_rejected']:,}; other messages "
                  f"{r['foreign']:,}[/]")
    out.print(f"  peak depth    {_n(r['peak_depth']):>12}   (final {_n(r['final_depth'])})")
    out.print(f"  broker RSS    {_mb(r['rss_start']):>12} at start, peak {_mb(r['peak_rss'])}")
    drain = {"drained": f"{r['time_to_drain_s']:,.1f} s after the spike (longest wait {r['max_wait_s']:,.1f} s)",
             "off": "not drained (--no-drain)", "timeout": "[yellow]drain timeout[/]",
             "stalled": "[red]stalled: queue empty, messages missing[/]", "broken": "[red]connection lost[/]"}
    out.print(f"  time to drain {'':>12}   {drain.get(r['drain'], r['drain'])}")
    if "broker_alive_at_end" in r:
        out.print(f"  broker        {'':>12}   {'[green]alive[/]' if r['broker_alive_at_end'] else '[red]DIED[/]'}"
                  f" at the end (exit code after SIGTERM {r['broker_exit_code']})")
    for p in paths:
        out.print(f"  wrote {p}")


class _LiveView:
    """rich Live panel refreshed by each sample (every 0.5 s)."""

    def __init__(self, console: Any) -> None:
        from rich.live import Live

        self.live = Live(console=console, auto_refresh=False, transient=False)
        self.started = False

    def start(self) -> None:
        self.live.start()
        self.started = True

    def stop(self) -> None:
        if self.started:
            self.live.stop()
            self.live.console.print()
            self.started = False

    def update(self, s: dict[str, Any]) -> None:
        from rich.table import Table

        t = Table(title=f"mailslot spike  [bold]{s['phase']}[/]  {s['t']:6.1f} s  queue {s['queue']}",
                  show_header=True, header_style="bold", title_justify="left")
        for col in ("publish/s", "confirm/s", "reject/s", "deliver/s", "queue depth", "broker RSS"):
            t.add_column(col, justify="right")
        req = f" / {s['requested_rate']:,.0f}" if s["requested_rate"] else ""
        t.add_row(f"{s['publish_rate']:,.0f}{req}", f"{s['confirm_rate']:,.0f}", f"{s['reject_rate']:,.0f}",
                  f"{s['deliver_rate']:,.0f}", _n(s["depth"]), _mb(s["rss"]))
        t.add_row(f"{s['published']:,}", f"{s['confirmed']:,}", f"{s['rejected']:,}", f"{s['delivered']:,}",
                  "", "", style="dim")
        self.live.update(t, refresh=True)
