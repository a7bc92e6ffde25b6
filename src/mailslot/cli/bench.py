"""``mailslot bench``: a lean PerfTest-like load generator for any AMQP 0-9-1 broker, by URL.

Imports of the load generator happen inside the command so ``mailslot --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"


def bench(
    url: Annotated[str, typer.Option("--url", envvar="MAILSLOT_URL", help="Broker URL.")] = DEFAULT_URL,
    producers: Annotated[int, typer.Option("--producers", "-x", min=0, help="Producer connections.")] = 1,
    consumers: Annotated[int, typer.Option("--consumers", "-y", min=0, help="Consumer connections.")] = 1,
    queues: Annotated[int, typer.Option(min=1, help="Queues (producers/consumers spread round-robin).")] = 1,
    size: Annotated[int, typer.Option("--size", "-s", min=16, help="Body size in bytes (>= 16).")] = 256,
    persistent: Annotated[
        bool, typer.Option("--persistent/--transient", help="delivery_mode 2 into durable queues, or 1.")
    ] = True,
    confirm: Annotated[
        int, typer.Option("--confirm", "-c", min=0, help="Publisher-confirm window per producer (0 = none).")
    ] = 1000,
    prefetch: Annotated[int, typer.Option("--prefetch", "-q", min=0, help="basic.qos prefetch count.")] = 1000,
    multi_ack: Annotated[
        int, typer.Option("--multi-ack", "-A", min=1, help="Ack every N deliveries with multiple=true.")
    ] = 100,
    rate: Annotated[int, typer.Option("--rate", "-r", min=0, help="msg/s per producer (0 = unlimited).")] = 0,
    duration: Annotated[float, typer.Option("--duration", "-z", min=0, help="Seconds to run.")] = 10.0,
    count: Annotated[
        int, typer.Option("--count", "-C", min=0, help="Messages per producer; ends the run instead of --duration.")
    ] = 0,
    auto_ack: Annotated[bool, typer.Option("--auto-ack", "-a", help="Consume with no_ack=true.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object with the results.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress line each second.")] = False,
) -> None:
    """Publish and consume as fast as allowed; report throughput and latency percentiles."""
    import json
    import sys

    from rich.console import Console

    from mailslot.bench.runner import BenchConfig, run_bench
    from mailslot.cli.event_loop import run

    err = Console(stderr=True, highlight=False)

    def progress(p: dict[str, Any]) -> None:
        err.print(
            f"[dim]{p['elapsed_s']:5.1f}s[/] pub [bold]{p['published_per_s']:>9,.0f}[/]/s  "
            f"conf {p['confirmed_per_s']:>9,.0f}/s  cons [bold]{p['consumed_per_s']:>9,.0f}[/]/s  "
            f"confirm p99 {p['confirm_p99_ms']:7.1f} ms  deliver p99 {p['deliver_p99_ms']:7.1f} ms"
        )

    cfg = BenchConfig(url=url, producers=producers, consumers=consumers, queues=queues, size=size,
                      persistent=persistent, confirm=confirm, prefetch=prefetch, multi_ack=multi_ack, rate=rate,
                      duration=duration, count=count, auto_ack=auto_ack, progress=None if quiet else progress)
    try:
        result = run(run_bench(cfg))
    except (OSError, RuntimeError, ValueError) as exc:
        err.print(f"[red]bench failed:[/] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    if json_out:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    out = Console()
    c, d = result["confirm_latency_ms"], result["deliver_latency_ms"]
    out.print(f"[bold]{url}[/]  {result['elapsed_s']:.1f} s")
    out.print(f"  published  {result['published_per_s']:>10,.0f} msg/s  ({result['published']:,})")
    out.print(f"  confirmed  {result['confirmed_per_s']:>10,.0f} msg/s  ({result['confirmed']:,})")
    if result["nacked"]:  # refused by the broker (a full queue, a disk alarm...): never counted as confirmed
        out.print(f"  [red]nacked[/]     {result['nacked_per_s']:>10,.0f} msg/s  ({result['nacked']:,})")
    out.print(f"  consumed   {result['consumed_per_s']:>10,.0f} msg/s  ({result['consumed']:,})")
    for name, lat in (("publish->confirm", c), ("publish->deliver", d)):
        out.print(f"  {name:<17} p50 {lat['p50']:7.2f}  p95 {lat['p95']:7.2f}  p99 {lat['p99']:7.2f}  "
                  f"max {lat['max']:7.2f} ms")
