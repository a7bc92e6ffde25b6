"""The deployment of docs/cluster.md run for real: three ``mailslot serve --cluster`` processes over a
PostgreSQL primary with a synchronous standby (tests/cluster/pg_pair.py), the nodes naming both servers
in one libpq URL with ``target_session_attrs=read-write``.

Each test checks a row of the doc's failure table: the primary lost and the standby promoted (the
nodes follow on their own, no confirmed message is lost), the standby lost (commits, hence confirms,
wait until it is back), a node lost (its queues taken over). The durations printed are the doc's figures.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import aio_pika
import aiohttp
import pytest

from helpers import async_wait_for, wait_for
from mailslot.bench.broker_process import BrokerProcess
from mailslot.storage.postgres import PostgresSettings, StoreUnavailable
from mailslot.storage.postgres._connect import Link, connect

from .clients import consume_until
from .pg_pair import PgPair, missing

pytestmark = pytest.mark.slow

LEASE_TTL = 3.0
SECRET = "deployment-test-secret-0123456789"
NODES = ("n1", "n2", "n3")
GUEST = {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}  # guest:guest
WAITING_WRITER = ("SELECT {} FROM pg_stat_activity WHERE wait_event = 'SyncRep' "
                  "AND application_name = 'mailslot n1 writer'")


@dataclass
class Deployment:
    pair: PgPair
    nodes: dict[str, BrokerProcess]

    def restore(self) -> None:
        """Whatever a test broke, whole again: a synchronous standby, every node running."""
        if not self.pair.healthy():
            self.pair.rebuild_standby()
        for node in self.nodes.values():
            if not node.alive():
                node.start()


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One deployment for the module (starting one takes seconds); ``deployment`` mends it between tests."""
    reason = missing()
    if reason:
        if os.environ.get("MAILSLOT_REQUIRE_SERVICES", "") == "1":
            pytest.fail(reason + " and MAILSLOT_REQUIRE_SERVICES=1")
        pytest.skip(reason)
    links = tmp_path_factory.mktemp("links")
    began = time.monotonic()
    pair = PgPair()
    nodes: dict[str, BrokerProcess] = {}
    try:
        pair.start()
        pair_up = time.monotonic()
        for name in NODES:
            nodes[name] = BrokerProcess(store="postgres", extra_args=(
                "--postgres-dsn", pair.dsn, "--node-name", name, "--cluster", "--lease-ttl", str(LEASE_TTL),
                "--cluster-link", f"unix:{links}/{name}.sock", "--cluster-secret", SECRET,
            ))
        nodes["n1"].start()  # the first one creates the schema; the others start together
        with ThreadPoolExecutor() as starting:
            list(starting.map(BrokerProcess.start, (nodes[name] for name in NODES[1:])))
        print(f"\ndeployment up in {time.monotonic() - began:.1f} s (PostgreSQL pair {pair_up - began:.1f} s)")
        yield Deployment(pair, nodes)
    finally:
        with ThreadPoolExecutor() as stopping:
            list(stopping.map(BrokerProcess.stop, nodes.values()))
        pair.close()


@pytest.fixture
def deployment(layout: Deployment) -> Iterator[Deployment]:
    layout.restore()
    yield layout
    for name, node in layout.nodes.items():  # shown by pytest when the test failed
        print(f"--- {name}'s last log lines ---")
        print("".join(node.output[-40:])[-6000:])


@dataclass
class Publisher:
    """Publishes numbered persistent messages to its node's queue one at a time, waiting for each confirm."""

    url: str
    queue: str
    confirmed: list[tuple[bytes, float]] = field(default_factory=list)  # (body, when the confirm came)
    nacked: list[bytes] = field(default_factory=list)
    pending: bytes | None = None  # published, neither confirmed nor nacked yet
    stop: bool = False

    async def run(self) -> None:
        connection, channel = await async_wait_for(self._declare, timeout=15, what=f"{self.queue} declared")
        async with connection:
            number = 0
            while not self.stop:
                body = self.pending = f"{self.queue}-{number}".encode()
                number += 1
                try:
                    await channel.default_exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=self.queue)
                except aio_pika.exceptions.DeliveryError:
                    self.nacked.append(body)
                else:
                    self.confirmed.append((body, time.monotonic()))
                self.pending = None

    async def _declare(self) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractChannel] | None:
        """Connected, the queue declared (here: this node owns it). A node whose database connection is
        still in its reconnect backoff from a previous test's outage closes a declare with 541, as
        docs/postgres.md says: a client connects again and retries, as this one does."""
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.declare_queue(self.queue, durable=True)
        except aio_pika.exceptions.AMQPConnectionError:
            return None
        except BaseException:
            await connection.close()
            raise
        return connection, channel

    def confirmed_after(self, moment: float) -> int:
        return sum(1 for _, at in self.confirmed if at > moment)

    def longest_pause(self) -> float:
        """The longest time between two confirms in a row (seconds)."""
        times = [at for _, at in self.confirmed]
        return max(later - earlier for earlier, later in itertools.pairwise(times))


async def _owner(node: BrokerProcess, queue: str) -> str | None:
    """The queue's owner as ``node``'s management API reports it (None: the node does not know the queue)."""
    async with (aiohttp.ClientSession(headers=GUEST) as http,
                http.get(f"{node.http_url}/api/queues/%2F/{queue}") as response):
        return (await response.json())["node"] if response.status == 200 else None


async def _drain(url: str, queue: str, expected: set[bytes]) -> list[bytes]:
    """Consume ``queue`` through the node at ``url`` until every body of ``expected`` came (acked)."""
    return await consume_until(url, queue, lambda got: expected <= set(got),
                               lambda got: f"every confirmed message of {queue} ({len(expected - set(got))} missing)")


def _assert_every_confirmed_delivered(publisher: Publisher, delivered: list[bytes]) -> None:
    confirmed = {body for body, _ in publisher.confirmed}
    assert confirmed <= set(delivered), f"{publisher.queue}: confirmed messages lost"
    assert len(delivered) == len(set(delivered)), f"{publisher.queue}: a message stored twice"
    # Anything delivered beyond the confirmed ones was published and nacked or never answered.
    assert set(delivered) - confirmed <= set(publisher.nacked) | {publisher.pending}


@pytest.mark.parametrize("detected_after", [0.0, 1.5 * LEASE_TTL], ids=["promoted-at-once", "outage-over-ttl"])
async def test_the_primary_lost_and_the_standby_promoted_loses_no_confirmed_message(
    deployment: Deployment, detected_after: float,
) -> None:
    pair, nodes = deployment.pair, deployment.nodes
    # A non-durable queue lives as long as its node (n2): an outage must not make another node think n2 died.
    transient = f"transient-{detected_after}"
    async with await aio_pika.connect(nodes["n2"].url) as connection:
        await (await connection.channel()).declare_queue(transient, durable=False)
    await async_wait_for(lambda: _owner(nodes["n3"], transient), timeout=5, what="n3 to know the queue (metadata sync)")
    publishers = [Publisher(node.url, f"failover-{detected_after}-{name}") for name, node in nodes.items()]
    tasks = [asyncio.create_task(p.run()) for p in publishers]
    await async_wait_for(lambda: all(len(p.confirmed) >= 20 for p in publishers), timeout=20,
                         what="20 confirms on every node before the failover")

    killed_at = time.monotonic()
    await asyncio.to_thread(pair.primary.kill)  # every process of it: the machine is lost
    await asyncio.sleep(detected_after)  # the failover tool noticing (the scenario, not a synchronisation)
    await asyncio.to_thread(pair.fail_over)  # what the failover tool does; the nodes are not told
    promoted_at = time.monotonic()
    assert await asyncio.to_thread(pair.primary.query, "SELECT NOT pg_is_in_recovery()") == [(True,)]
    await async_wait_for(lambda: all(p.confirmed_after(promoted_at) >= 20 for p in publishers), timeout=30,
                         what=lambda: "20 confirms on every node after the promotion "
                         f"({[p.confirmed_after(promoted_at) for p in publishers]}); "
                         + "".join(nodes["n1"].output[-15:]))
    for p in publishers:
        p.stop = True
    await asyncio.gather(*tasks)

    pauses = [p.longest_pause() for p in publishers]
    resumed = [min(at for _, at in p.confirmed if at > promoted_at) - promoted_at for p in publishers]
    owners = {p.queue: await _owner(node, p.queue) for p, node in zip(publishers, nodes.values(), strict=True)}
    print(f"\nfailover: promoted {promoted_at - killed_at:.2f} s after the kill; longest pause of each publisher "
          f"{', '.join(f'{s:.2f}' for s in pauses)} s; first confirm {', '.join(f'{s:.2f}' for s in resumed)} s "
          f"after the promotion; nacks {[len(p.nacked) for p in publishers]}; owners then {owners}")
    assert all(node.alive() for node in nodes.values()), "a node exited instead of waiting for the database"
    # The writer retries for postgres_commit_timeout (10 s): a failover within it is a pause, not nacks.
    assert not any(p.nacked for p in publishers)
    # Even when the outage outlasts the lease TTL, every node renews its leases before any takes another's.
    assert owners == {p.queue: name for p, name in zip(publishers, nodes, strict=True)}, "queues reshuffled"
    async with await aio_pika.connect(nodes["n3"].url) as connection:  # passive: 404 closes it if deleted
        await (await connection.channel()).declare_queue(transient, passive=True)
    for publisher, node in zip(publishers, nodes.values(), strict=True):
        delivered = await _drain(node.url, publisher.queue, {body for body, _ in publisher.confirmed})
        _assert_every_confirmed_delivered(publisher, delivered)


async def test_the_standby_lost_holds_every_confirm_until_it_is_back(deployment: Deployment) -> None:
    pair, nodes = deployment.pair, deployment.nodes
    publisher = Publisher(nodes["n1"].url, "standby-lost")
    task = asyncio.create_task(publisher.run())
    await async_wait_for(lambda: len(publisher.confirmed) >= 20, timeout=20, what="20 confirms")

    await asyncio.to_thread(pair.standby.stop)
    stopped_at = time.monotonic()
    # A COMMIT waits for the standby: the primary shows the writer's backend waiting on SyncRep. (Blocking
    # calls run in a thread: the event loop must take in every confirm as it comes.)
    await async_wait_for(lambda: asyncio.to_thread(pair.primary.query, WAITING_WRITER.format(1)), timeout=10,
                         what="the writer's commit waiting for the synchronous standby")
    confirms_then = len(publisher.confirmed)
    # Its connection cut meanwhile (here by the server; a restart of the primary does the same): PostgreSQL
    # ends the wait, and the commit stays on the primary alone. The node must not confirm it on that.
    assert await asyncio.to_thread(pair.primary.query, WAITING_WRITER.format("pg_terminate_backend(pid)")) == [(True,)]
    # An observation window (nothing may happen in it), longer than the lease TTL: no renewal commits either.
    await asyncio.sleep(1.2 * LEASE_TTL)
    assert len(publisher.confirmed) == confirms_then, "a publish was confirmed while the synchronous standby was down"
    assert publisher.pending is not None and not publisher.nacked, "the publisher should be waiting, not nacked"

    await asyncio.to_thread(pair.standby.start)
    restarted_at = time.monotonic()
    await async_wait_for(lambda: publisher.confirmed_after(restarted_at) >= 20, timeout=20,
                         what="confirms after the standby came back")
    publisher.stop = True
    await task
    resumed = min(at for _, at in publisher.confirmed if at > restarted_at) - restarted_at
    owner = await _owner(nodes["n1"], "standby-lost")
    print(f"\nstandby down {restarted_at - stopped_at:.2f} s: no confirm meanwhile; first confirm "
          f"{resumed:.2f} s after it was started again; owner then {owner}")
    assert not publisher.nacked
    assert owner == "n1", "the queue moved although its node never stopped"
    await asyncio.to_thread(pair.wait_sync)
    delivered = await _drain(nodes["n2"].url, "standby-lost", {body for body, _ in publisher.confirmed})
    _assert_every_confirmed_delivered(publisher, delivered)


async def test_a_node_killed_in_this_layout_has_its_queues_taken_over(deployment: Deployment) -> None:
    nodes = deployment.nodes
    publisher = Publisher(nodes["n1"].url, "node-lost")
    task = asyncio.create_task(publisher.run())
    await async_wait_for(lambda: len(publisher.confirmed) >= 50, timeout=20, what="50 confirms")
    publisher.stop = True
    await task
    await async_wait_for(lambda: _owner(nodes["n2"], "node-lost"), timeout=5, what="n2 to know the queue (metadata sync)")

    killed_at = time.monotonic()
    nodes["n1"].kill()
    delivered = await _drain(nodes["n2"].url, "node-lost", {body for body, _ in publisher.confirmed})
    print(f"\nnode n1 killed: every confirmed message of its queue delivered through n2 "
          f"{time.monotonic() - killed_at:.2f} s later (lease TTL {LEASE_TTL} s)")
    _assert_every_confirmed_delivered(publisher, delivered)
    taken_by = wait_for(lambda: [name for name in ("n2", "n3")
                                 if any("took over queue 'node-lost'" in line for line in nodes[name].output)],
                        timeout=5, what="a 'took over' log line")
    assert len(taken_by) == 1


def test_a_node_connects_to_the_primary_whichever_server_its_dsn_names_first(deployment: Deployment) -> None:
    """Without target_session_attrs in the DSN, mailslot asks for a writable server all the same."""
    primary, standby = deployment.pair.primary, deployment.pair.standby
    standby_first = f"postgresql://postgres@127.0.0.1:{standby.port},127.0.0.1:{primary.port}/postgres"
    conn = connect(PostgresSettings(standby_first, node_name="probe"), "probe")
    with conn:
        assert conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone() == (primary.port, False)
    with pytest.raises(StoreUnavailable, match="read-only"):  # only the standby named: unreachable, retried
        Link(PostgresSettings(standby.dsn, node_name="probe"), "probe").get()
