"""Two-node clusters and bench clients for the PostgreSQL benchmarks (cluster_forward.py, postgres_soak.py,
postgres_vs_pgmq.py): nodes ``a`` and ``b`` started with ``--cluster`` on one schema, linked over Unix
sockets, and ``mailslot.bench`` run in a child process (so that the client does not share this
process's core with the sampling) that declares its queues on the owner and may publish and consume
through the other node. Imported like ``_broker``."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue as queue_module
import tempfile
from collections.abc import Callable
from typing import Any

from mailslot.bench.broker_process import BrokerProcess
from mailslot.bench.runner import BenchConfig, run_bench

SECRET = "benchmark-cluster-secret-0123456789"
# compare.py's workload (a): persistent, confirms (window 1000), prefetch 1000, multi-ack 100, 256 B
WORKLOAD_A: dict[str, Any] = {"size": 256, "persistent": True, "confirm": 1000, "prefetch": 1000, "multi_ack": 100}


def postgres_node(dsn: str, schema: str, name: str) -> BrokerProcess:
    """A broker on ``--store postgres`` without ``--cluster`` (the single-node reference)."""
    node = BrokerProcess("postgres", extra_args=("--postgres-dsn", dsn, "--postgres-schema", schema,
                                                 "--node-name", name))
    node.log_level = "info"  # BrokerProcess waits for the start-up line
    return node


def cluster_pair(dsn: str, schema: str, prefix: str = "") -> dict[str, BrokerProcess]:
    """Nodes ``a`` and ``b`` (named ``<prefix>a``, ``<prefix>b``), not started."""
    links = tempfile.mkdtemp(prefix="mailslot-links-")
    nodes = {}
    for name in ("a", "b"):
        node = BrokerProcess("postgres", extra_args=(
            "--postgres-dsn", dsn, "--postgres-schema", schema, "--cluster", "--cluster-secret", SECRET,
            "--node-name", prefix + name, "--cluster-link", f"unix:{links}/{name}.sock"))
        node.log_level = "info"
        nodes[name] = node
    return nodes


async def known_everywhere(http_url: str, queues: list[str], owner: str) -> None:
    """Wait until the node at ``http_url`` knows every queue and that ``owner`` owns it (the metadata sync
    and the lease poller), so that its first publish is forwarded rather than nacked."""
    import aiohttp

    headers = {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}
    async with aiohttp.ClientSession(headers=headers) as http:
        for _ in range(400):
            found = 0
            for name in queues:
                async with http.get(f"{http_url}/api/queues/%2F/{name}") as response:
                    if response.status == 200 and (await response.json())["node"] == owner:
                        found += 1
            if found == len(queues):
                return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{http_url} did not learn the queues {queues}")


def bench_config(client: BrokerProcess, owner: BrokerProcess, owner_name: str, **settings: Any) -> BenchConfig:
    """A BenchConfig whose queues are declared on ``owner`` and used through ``client``."""

    async def prepared(queues: list[str]) -> None:
        if client is not owner:
            await known_everywhere(client.http_url, queues, owner_name)

    return BenchConfig(url=client.url, declare_url=owner.url, prepared=prepared, **{**WORKLOAD_A, **settings})


def _child(url: str, declare_url: str, wait_url: str, owner_name: str, settings: dict[str, Any],
           out: Any) -> None:
    async def prepared(queues: list[str]) -> None:
        if wait_url:
            await known_everywhere(wait_url, queues, owner_name)

    cfg = BenchConfig(url=url, declare_url=declare_url, prepared=prepared,
                      progress=lambda p: out.put(("progress", p)), **{**WORKLOAD_A, **settings})
    try:
        result = asyncio.run(run_bench(cfg))
        result["config"].pop("prepared", None)  # a local function: it would not pickle
        out.put(("result", result))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        out.put(("error", f"{type(exc).__name__}: {exc}"))


class ChildBench:
    """``run_bench`` in a spawned process: ``progress`` is called (in the parent, from ``poll``) with each
    second's progress dict, ``result()`` waits for the result dict."""

    def __init__(self, client: BrokerProcess, owner: BrokerProcess, owner_name: str,
                 progress: Callable[[dict[str, Any]], None] | None = None, **settings: Any) -> None:
        ctx = mp.get_context("spawn")
        self.out = ctx.Queue()
        self.progress = progress
        self._result: dict[str, Any] | None = None
        wait_url = client.http_url if client is not owner else ""
        self.process = ctx.Process(target=_child, args=(client.url, owner.url, wait_url, owner_name, settings,
                                                        self.out), daemon=True)
        self.process.start()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def poll(self, timeout: float = 0.0) -> bool:
        """Handles what the child sent; True once its result arrived."""
        while self._result is None:
            alive = self.process.is_alive()  # read before the queue: a child that exits has sent all first
            try:
                kind, value = self.out.get(timeout=timeout)
            except queue_module.Empty:
                if not alive:
                    raise RuntimeError("the bench process died without a result") from None
                return False
            timeout = 0.0
            if kind == "progress" and self.progress is not None:
                self.progress(value)
            elif kind == "error":
                raise RuntimeError(f"bench failed: {value}")
            elif kind == "result":
                self._result = value
        return True

    def result(self, timeout: float = 600.0) -> dict[str, Any]:
        import time

        deadline = time.monotonic() + timeout
        while not self.poll(timeout=1.0):
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError("the bench process gave no result in time")
        self.process.join(30)
        assert self._result is not None
        return self._result
