"""The management API and metrics with many queues, side by side with RabbitMQ in one run.

Creates ``--queues`` (50,000) queues on a fresh mailslot (``python -m mailslot serve``, memory store, in a child
process) and on the reference RabbitMQ (127.0.0.1:5672/15672/15692, in a vhost of its own that is deleted
afterwards), then times, alternating the two brokers, ``--rounds`` times each:

* ``GET /api/queues/{vhost}?page=1&page_size=100`` (a paged listing, the management UI's first request);
* ``GET /api/queues/{vhost}?page=1&page_size=100&name=...`` (the same, filtered by name);
* ``GET /metrics/per-object`` (one sample per queue per family);
* ``GET /metrics`` (aggregated: mailslot's target is under 100 ms).

Reports medians and mailslot / RabbitMQ ratios (below 1: mailslot is faster), and the brokers' RSS
before and after creating the queues. Run it under the bench lock, on a quiet machine:

    flock /tmp/mailslot-bench.lock python benchmarks/management_scale.py [--queues 50000] [--rounds 7]

These are benchmarks, not tests: nothing here asserts; the numbers go into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _broker import MailslotProcess

from mailslot.bench.driver import AMQPUrl, connect

RABBITMQ = {"amqp": "amqp://guest:guest@127.0.0.1:5672/", "api": "http://127.0.0.1:15672",
            "metrics": "http://127.0.0.1:15692"}
AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
DECLARE_WINDOW = 500  # queue.declare in flight per connection: fast to create, gentle on the broker


@dataclass
class Target:
    name: str
    api: str
    metrics: str
    amqp: str  # without the vhost
    pid: int | None = None
    times: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)

    def request(self, method: str, url: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {**AUTH, "content-type": "application/json"}
        req = urllib.request.Request(url, method=method, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=600) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def timed(self, label: str, url: str) -> None:
        """Time one GET; a broker that drops the request (RabbitMQ closes a connection it has not answered
        within its HTTP idle timeout) or refuses it is recorded as a failure after the time it took."""
        started = time.perf_counter()
        try:
            status, _ = self.request("GET", url)
        except OSError:
            status = 0
        elapsed = time.perf_counter() - started
        self.times.setdefault(label, []).append(elapsed)
        if status != 200:
            self.failures.setdefault(label, []).append(f"{status or 'dropped'} after {elapsed:.1f} s")
        print(f"  {self.name:9} {label:40} {elapsed * 1000:10.1f} ms  {status or 'dropped'}", flush=True)


def rss(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:  # noqa: BLE001 -- a reading we cannot take is reported as 0
        return 0


def rabbitmq_pid() -> int | None:
    try:
        import psutil

        for process in psutil.process_iter(["name", "cmdline"]):
            if process.info["name"] == "beam.smp" and "rabbit" in " ".join(process.info["cmdline"] or []):
                return int(process.pid)
    except Exception:  # noqa: BLE001
        return None
    return None


async def declare_queues(amqp_url: str, count: int, prefix: str) -> float:
    """Declare ``count`` non-durable queues with a window of declares in flight; returns seconds taken."""
    from pamqp import commands

    from mailslot.protocols.amqp091.events import Event, MethodReceived

    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    proto = await connect(AMQPUrl.parse(amqp_url), name="scale")
    finished: asyncio.Future[None] = loop.create_future()
    sent = done = 0
    try:
        await proto.call(1, lambda: proto.conn.open_channel(1), commands.Channel.OpenOk)

        def pump() -> None:
            nonlocal sent
            while sent < count and sent - done < DECLARE_WINDOW:
                proto.conn.send_method(1, commands.Queue.Declare(queue=f"{prefix}{sent:06d}"))
                sent += 1
            proto.flush()
            if done >= count and not finished.done():
                finished.set_result(None)

        def handler(events: list[Event]) -> None:
            nonlocal done
            done += sum(1 for e in events if type(e) is MethodReceived and isinstance(e.method, commands.Queue.DeclareOk))
            proto.control(events)
            pump()

        proto.handler = handler
        pump()
        await asyncio.wait_for(finished, 900)
    finally:
        await proto.close()
    return time.perf_counter() - started


def delete_vhost(rabbit: Target, vhost: str) -> None:
    """Remove the benchmark's vhost from the reference. Deleting 50,000 queues takes RabbitMQ over a minute,
    longer than its HTTP idle timeout, so ``rabbitmqctl`` does it when it is at hand."""
    import shutil
    import subprocess

    if shutil.which("rabbitmqctl"):
        done = subprocess.run(["rabbitmqctl", "delete_vhost", vhost], check=False, capture_output=True, timeout=900)
        if done.returncode == 0:
            return
    try:
        rabbit.request("DELETE", f"{rabbit.api}/api/vhosts/{urllib.parse.quote(vhost, safe='')}")
    except OSError as error:
        print(f"could not delete vhost {vhost} on RabbitMQ ({error}); remove it by hand", file=sys.stderr)


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queues", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    vhost = f"mailslot-bench.scale.{uuid.uuid4().hex[:8]}"
    quoted = urllib.parse.quote(vhost, safe="")
    prefix = "scale-queue-"
    rabbit = Target("rabbitmq", RABBITMQ["api"], RABBITMQ["metrics"], RABBITMQ["amqp"], rabbitmq_pid())
    with MailslotProcess(store="memory") as broker:
        mine = Target("mailslot", broker.http_url, broker.prometheus_url, f"amqp://guest:guest@127.0.0.1:{broker.port}/",
                      broker.process.pid if broker.process else None)
        targets = [mine, rabbit]
        try:
            before = {t.name: rss(t.pid) for t in targets}
            for target in targets:
                status, body = target.request("PUT", f"{target.api}/api/vhosts/{quoted}", {})
                assert status in (201, 204), (target.name, status, body)
                target.request("PUT", f"{target.api}/api/permissions/{quoted}/guest",
                               {"configure": ".*", "write": ".*", "read": ".*"})
                took = asyncio.run(declare_queues(target.amqp + quoted, args.queues, prefix))
                print(f"{target.name}: declared {args.queues:,} queues in {took:.1f} s", flush=True)
            # RabbitMQ lists a queue once its first statistics arrived (every 5 s): wait until all are there
            for target in targets:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    _, body = target.request("GET", f"{target.api}/api/queues/{quoted}?page=1&page_size=1&columns=name")
                    if json.loads(body).get("filtered_count") == args.queues:
                        break
                    time.sleep(1)
            after = {t.name: rss(t.pid) for t in targets}
            paged = f"/api/queues/{quoted}?page=1&page_size=100"
            filtered = f"{paged}&name=queue-0499"
            for _ in range(args.rounds):
                for target in targets:  # alternating, so drift hits both alike
                    target.timed("paged GET /api/queues (page_size 100)", target.api + paged)
                    target.timed("paged + name filter", target.api + filtered)
                    target.timed("GET /metrics/per-object", target.metrics + "/metrics/per-object")
                    target.timed("GET /metrics (aggregated)", target.metrics + "/metrics")
        finally:
            delete_vhost(rabbit, vhost)
    print()
    print(f"{args.queues:,} queues, {args.rounds} rounds each, medians (ms)")
    print(f"{'request':44} {'mailslot':>10} {'RabbitMQ':>10} {'ratio':>8}")
    for label in mine.times:
        m, r = median_ms(mine.times[label]), median_ms(rabbit.times[label])
        print(f"{label:44} {m:10.1f} {r:10.1f} {m / r:8.3f}")
    for target in (mine, rabbit):
        for label, failed in target.failures.items():
            print(f"{target.name} failed {label}: {', '.join(failed)}")
    mb = 1024 * 1024
    print()
    for name in ("mailslot", "rabbitmq"):
        print(f"{name} RSS: {before[name] / mb:.0f} MB before, {after[name] / mb:.0f} MB with the queues")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
