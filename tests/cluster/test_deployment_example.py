"""examples/cluster/deployment.sh keeps working: up, a failover with confirmed publishes on both sides of
it, a new standby, down (the script docs/cluster.md gives operators to try the deployment)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import aio_pika
import pytest

from .clients import consume_until
from .pg_pair import BIN, missing

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "cluster" / "deployment.sh"


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports() -> tuple[int, int, int]:
    """Two PostgreSQL ports and a base under which node i listens on base+i (AMQP) and base+100+i (HTTP)."""
    for base in range(int.from_bytes(os.urandom(2), "big") % 20_000 + 20_000, 45_000, 211):
        ports = [base + i for i in (1, 2, 3, 101, 102, 103, 151, 152)]
        if all(map(_free, ports)):
            return base, base + 151, base + 152
    raise RuntimeError("no free ports")


async def _publish(url: str, bodies: list[bytes]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue("example", durable=True)
        for body in bodies:  # each confirmed: committed on the primary and its synchronous standby
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="example")


async def _consume(url: str, count: int) -> list[bytes]:
    return await consume_until(url, "example", lambda got: len(got) >= count,
                               lambda got: f"{count} messages ({len(got)})", timeout=20)


async def test_the_deployment_script_sets_up_fails_over_and_tears_down() -> None:
    reason = missing() or ("" if (Path(sys.executable).parent / "mailslot").exists() else "no mailslot command")
    if reason:
        if os.environ.get("MAILSLOT_REQUIRE_SERVICES", "") == "1":
            pytest.fail(reason + " and MAILSLOT_REQUIRE_SERVICES=1")
        pytest.skip(reason)
    base, pg_a, pg_b = _free_ports()
    env = {**os.environ, "DIR": f"/tmp/mailslot-deployment-{uuid.uuid4().hex[:8]}", "PGBIN": str(BIN),
           "PG_PORTS": f"{pg_a} {pg_b}", "AMQP_BASE": str(base), "HTTP_BASE": str(base + 100),
           "MAILSLOT": str(Path(sys.executable).parent / "mailslot"), "LEASE_TTL": "3"}

    def run(command: str) -> str:
        done = subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=90,
                              check=False)
        assert done.returncode == 0, f"deployment.sh {command}:\n{done.stdout}{done.stderr}"
        return done.stdout

    try:
        assert "standby1|streaming|sync" in await asyncio.to_thread(run, "up")
        url = f"amqp://guest:guest@127.0.0.1:{base + 2}/%2F"
        before, after = [f"before-{i}".encode() for i in range(50)], [f"after-{i}".encode() for i in range(50)]
        await _publish(url, before)
        assert f"promoted port {pg_b}" in await asyncio.to_thread(run, "failover")
        await _publish(url, after)  # node 2 found the new primary on its own
        assert sorted(await _consume(url, 100)) == sorted(before + after)
        await asyncio.to_thread(run, "rebuild-standby")
        status = await asyncio.to_thread(run, "status")
        assert f"primary: port {pg_b}" in status and "standby1|streaming|sync" in status
    finally:
        await asyncio.to_thread(run, "down")
    assert not Path(env["DIR"]).exists()
