"""tx.commit is atomic and durable under kill -9 (docs/transactions.md).

Consume-transform-produce inside the broker: a worker takes one input from ``in``, and in ONE
transaction publishes one output to ``out-a`` and one to ``out-b`` (persistent) and acks the input.
The broker (a child process) is SIGKILLed at random moments, half of them aimed just after a
``tx.commit`` left the client, and restarted on the same data directory. After every restart, for every input id:

* either the input is still in ``in`` and neither output queue holds an output for it,
* or the input is gone and ``out-a`` and ``out-b`` each hold exactly one output for it,

and every transaction whose ``tx.commit-ok`` arrived is in the second state (durable). A transaction
whose commit was in flight at the kill may land either way, but whole. Outputs are drained (acked) at
each check and counted cumulatively; the inputs left in ``in`` are read with a consumer and requeued.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

import mailslot.client
from mailslot.client.errors import ClientError, ConnectionLost

from .broker_process import BrokerProcess

pytestmark = pytest.mark.slow

STORES = ["segments", "sqlite"]
INPUTS = 20_000  # more than the worker gets through between the kills
KILLS = 8
SEED = random.randrange(1 << 32)


@dataclass
class Run:
    committed: set[int] = field(default_factory=set)  # tx.commit-ok received
    in_flight: int | None = None  # the input whose tx.commit is sent and not answered yet
    commit_sent: asyncio.Event = field(default_factory=asyncio.Event)
    uncertain: list[int] = field(default_factory=list)  # in flight when the broker was killed
    out_a: Counter[int] = field(default_factory=Counter)  # outputs drained so far
    out_b: Counter[int] = field(default_factory=Counter)
    kills_in_flight: int = 0
    uncertain_applied: int = 0


async def _setup(url: str) -> None:
    conn = await mailslot.client.connect(url)
    try:
        ch = await conn.channel()
        for q in ("in", "out-a", "out-b"):
            await ch.declare_queue(q, durable=True)
        await ch.publish_many([("", "in", b"%d" % i) for i in range(INPUTS)], window=1000)
    finally:
        await conn.close()


async def _worker(url: str, run: Run) -> None:
    """Transform inputs until the broker dies (or ``in`` is empty)."""
    conn = await mailslot.client.connect(url)
    try:
        ch = await conn.channel()
        await ch.tx_select()
        while (m := await ch.get("in")) is not None:
            i = int(m.body)
            await ch.publish("", "out-a", b"%d" % i)
            await ch.publish("", "out-b", b"%d" % i)
            await m.ack()
            run.in_flight = i
            run.commit_sent.set()
            await ch.tx_commit()
            run.in_flight = None
            run.committed.add(i)
    finally:
        try:
            await asyncio.wait_for(conn.close(), 2)
        except (ClientError, TimeoutError, OSError):
            pass


async def _read_all(ch: Any, queue: str, no_ack: bool) -> Counter[int]:
    """The ids of every message in ``queue`` (no_ack: taken out of it; else left unacked)."""
    _, count, _ = await ch.declare_queue(queue, durable=True, passive=True)
    ids: Counter[int] = Counter()
    if count:
        async with ch.consume(queue, prefetch=0, no_ack=no_ack) as messages:
            while ids.total() < count:
                ids.update(int(m.body) for m in await messages.next_batch(count))
    return ids


async def _check(url: str, run: Run) -> int:
    """Drain the outputs, read the inputs still in ``in`` (requeued on close); assert the invariant.
    Returns how many inputs are left."""
    conn = await mailslot.client.connect(url)
    try:
        ch = await conn.channel()
        run.out_a.update(await _read_all(ch, "out-a", no_ack=True))
        run.out_b.update(await _read_all(ch, "out-b", no_ack=True))
        pending = await _read_all(ch, "in", no_ack=False)
        left = pending.total()
        await ch.close()  # the inputs read above go back to ``in``
    finally:
        await conn.close()
    for i in run.uncertain:
        run.uncertain_applied += i not in pending
    run.uncertain.clear()
    bad = []
    for i in range(INPUTS):
        state = (pending[i], run.out_a[i], run.out_b[i])
        if state not in ((1, 0, 0), (0, 1, 1)):
            bad.append((i, state))
    assert not bad, f"(id, (in, out-a, out-b)) neither all nor nothing: {bad[:10]} (seed {SEED})"
    lost = [i for i in run.committed if pending[i]]
    assert not lost, f"committed transactions undone by a kill: {sorted(lost)[:10]} (seed {SEED})"
    return left


@pytest.mark.parametrize("store", STORES)
async def test_tx_commit_is_all_or_nothing_across_queues_under_sigkill(tmp_path, store):
    rng = random.Random(f"{SEED}-{store}")
    run = Run()
    broker = BrokerProcess(store=store, data_dir=tmp_path / "data")
    started = time.monotonic()
    try:
        broker.start()
        await _setup(broker.url)
        for k in range(KILLS):
            assert await _check(broker.url, run) > 0, "ran out of inputs: raise INPUTS"
            run.commit_sent.clear()
            worker = asyncio.ensure_future(_worker(broker.url, run))
            await asyncio.sleep(rng.uniform(0.05, 0.8))
            if k % 2:
                # Aim at a commit: kill within 0-3 loop turns of the next tx.commit (0: not even written
                # to the socket yet; more: the broker is somewhere between reading it and the fsync).
                run.commit_sent.clear()
                await asyncio.wait_for(run.commit_sent.wait(), 10)
                for _ in range(rng.randrange(4)):
                    await asyncio.sleep(0)
            in_flight = run.in_flight
            broker.kill()
            if in_flight is not None:
                run.kills_in_flight += 1
                run.uncertain.append(in_flight)
            await asyncio.gather(worker, return_exceptions=True)
            assert isinstance(worker.exception(), ConnectionLost), worker.exception()  # not out of inputs
            broker.start()
        await _check(broker.url, run)
    finally:
        broker.kill()
    elapsed = time.monotonic() - started
    print(
        f"\n{store}: {KILLS} kills in {elapsed:.1f} s, {len(run.committed)} transactions committed,"
        f" {run.kills_in_flight} kills during a tx.commit ({run.uncertain_applied} of those applied,"
        f" {run.kills_in_flight - run.uncertain_applied} not), seed {SEED}"
    )
    assert run.kills_in_flight >= 2  # aimed kills land while a commit is in flight (a fast fsync may beat one)
    assert len(run.committed) > KILLS  # transactions went through between the kills
