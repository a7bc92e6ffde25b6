"""The worker against an in-process broker: each guarantee's behaviour on success, failure, repeats,
shutdown; exactly-once on SQLite."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time

import pytest

from helpers import async_wait_for
from mailslot.worker import DEDUP_HEADER, SQLiteInbox, Worker

from .helpers import publish_keyed, queue_depth, running

pytestmark = pytest.mark.timeout(60)


async def test_at_least_once_retries_a_failure_and_logs_it(broker_url, channel, caplog):
    seen: list[tuple[str, bool]] = []

    def handler(job):
        seen.append((job.key, job.redelivered))
        if job.key == "k1" and not job.redelivered:
            raise ValueError("boom")

    await publish_keyed(channel, "jobs", ["k0", "k1", "k2"])
    worker = Worker(broker_url, "jobs", handler, guarantee="at-least-once", concurrency=4)
    with caplog.at_level(logging.ERROR, logger="mailslot.worker"):
        async with running(worker):
            await async_wait_for(lambda: worker.stats.handled == 3, what="3 handled")
    assert sorted(seen) == [("k0", False), ("k1", False), ("k1", True), ("k2", False)]
    assert worker.stats.failed == 1
    [line] = [r.getMessage() for r in caplog.records if "handler failed" in r.getMessage()]
    assert "key=k1" in line and "delivery=1" in line and "ValueError: boom" in line and "requeued" in line
    assert await queue_depth(channel, "jobs") == 0


async def test_at_most_once_acks_first_so_a_failure_loses_the_message(broker_url, channel, caplog):
    calls: list[str] = []

    async def handler(job):  # async handlers are fine outside exactly-once
        calls.append(job.key)
        raise RuntimeError("crash while handling")

    await publish_keyed(channel, "fire", ["a", "b"])
    worker = Worker(broker_url, "fire", handler, guarantee="at-most-once")
    with caplog.at_level(logging.ERROR, logger="mailslot.worker"):
        async with running(worker):
            await async_wait_for(lambda: worker.stats.failed == 2)
            # Barrier: a requeued "a" or "b" would be back at the head of the queue, delivered (and
            # handled) before "c", which is published now; once "c" has been handled, nothing is pending.
            await publish_keyed(channel, "fire", ["c"])
            await async_wait_for(lambda: "c" in calls and worker.stats.failed == len(calls), what="the barrier handled")
    assert sorted(calls) == ["a", "b", "c"]
    assert any("lost (at-most-once" in r.getMessage() for r in caplog.records)
    assert await queue_depth(channel, "fire") == 0


def _effects(path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [k for (k,) in db.execute("SELECT k FROM effects ORDER BY k")]
    finally:
        db.close()


def _sqlite_app(tmp_path):
    path = tmp_path / "app.db"
    inbox = SQLiteInbox(path)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE effects (k TEXT)")
    db.commit()
    db.close()
    return path, inbox


async def test_exactly_once_runs_a_repeated_key_once_and_keys_its_outputs(broker_url, channel, tmp_path, caplog):
    path, inbox = _sqlite_app(tmp_path)

    def handler(job):
        job.db.execute("INSERT INTO effects VALUES (?)", (job.key,))
        job.publish("out", job.body + b"!")

    await channel.declare_queue("out")
    await publish_keyed(channel, "in", ["a", "b", "a", "c", "b"])  # a producer that retried twice
    worker = Worker(broker_url, "in", handler, guarantee="exactly-once", inbox=inbox, concurrency=3)
    with caplog.at_level(logging.INFO, logger="mailslot.worker"):
        async with running(worker):
            await async_wait_for(lambda: worker.stats.handled + worker.stats.already_processed == 5)
    assert _effects(path) == ["a", "b", "c"]
    assert worker.stats.already_processed == 2
    assert sum("already processed" in r.getMessage() for r in caplog.records) == 2
    outputs = []
    while (m := await channel.get("out", no_ack=True)) is not None:
        outputs.append((m.headers[DEDUP_HEADER], m.message_id, m.body))
    assert sorted(outputs) == [("in:a:0", "in:a:0", b"a!"), ("in:b:0", "in:b:0", b"b!"), ("in:c:0", "in:c:0", b"c!")]
    assert await queue_depth(channel, "in") == 0


async def test_exactly_once_failure_rolls_back_the_effect_and_retries(broker_url, channel, tmp_path):
    path, inbox = _sqlite_app(tmp_path)
    attempts: list[bool] = []

    def handler(job):
        job.db.execute("INSERT INTO effects VALUES (?)", (job.key,))
        attempts.append(job.redelivered)
        if len(attempts) == 1:
            raise ConnectionError("payment service down")  # after the write: it must be rolled back

    await publish_keyed(channel, "pay", ["p1"])
    worker = Worker(broker_url, "pay", handler, guarantee="exactly-once", inbox=inbox)
    async with running(worker):
        await async_wait_for(lambda: worker.stats.handled == 1)
    assert attempts == [False, True]
    assert _effects(path) == ["p1"]


async def test_crash_between_commit_and_publish_republishes_from_the_outbox(broker_url, channel, tmp_path):
    path, inbox = _sqlite_app(tmp_path)
    runs: list[str] = []
    crashed: list[str] = []

    def handler(job):
        runs.append(job.key)
        job.db.execute("INSERT INTO effects VALUES (?)", (job.key,))
        job.publish("out", b"first")
        job.publish("out", b"second")

    def after_commit(job):
        if not crashed:
            crashed.append(job.key)
            raise OSError("killed after COMMIT, before the outputs went out")

    await channel.declare_queue("out")
    await publish_keyed(channel, "in", ["x"])
    worker = Worker(broker_url, "in", handler, guarantee="exactly-once", inbox=inbox, after_commit=after_commit)
    async with running(worker):
        await async_wait_for(lambda: worker.stats.already_processed == 1)
    assert runs == ["x"] and _effects(path) == ["x"]  # the handler ran once
    bodies = []
    while (m := await channel.get("out", no_ack=True)) is not None:
        bodies.append((m.body, m.headers[DEDUP_HEADER]))
    assert bodies == [(b"first", "in:x:0"), (b"second", "in:x:1")]  # republished from the outbox, in order
    assert inbox.session().pending_outputs("x") == []  # dropped once confirmed


async def test_exactly_once_rejects_a_message_without_key_to_the_dead_letter_queue(broker_url, channel, tmp_path):
    _path, inbox = _sqlite_app(tmp_path)
    await channel.declare_exchange("dlx", "fanout")
    await channel.declare_queue("dead")
    await channel.bind_queue("dead", "dlx")
    args = {"x-dead-letter-exchange": "dlx"}
    await channel.declare_queue("in", arguments=args)
    await channel.publish("", "in", b"no key")
    worker = Worker(broker_url, "in", lambda job: None, guarantee="exactly-once", inbox=inbox, queue_arguments=args)
    async with running(worker):
        await async_wait_for(lambda: worker.stats.rejected_without_key == 1)
    m = await channel.get("dead", no_ack=True)
    assert m is not None and m.body == b"no key"


async def test_messages_run_concurrently(broker_url, channel):
    active = 0
    peak = 0
    lock = threading.Lock()

    def handler(job):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1

    await publish_keyed(channel, "par", [f"k{i}" for i in range(20)])
    worker = Worker(broker_url, "par", handler, concurrency=8)
    async with running(worker):
        await async_wait_for(lambda: worker.stats.handled == 20)
    assert peak > 1


async def test_graceful_stop_finishes_in_flight_and_leaves_the_rest_queued(broker_url, channel):
    started = asyncio.Event()
    finished: list[str] = []

    async def handler(job):
        started.set()
        await asyncio.sleep(0.3)
        finished.append(job.key)

    await publish_keyed(channel, "slow", [f"k{i}" for i in range(10)])
    worker = Worker(broker_url, "slow", handler, concurrency=3)
    task = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    stats = await asyncio.wait_for(task, 10)
    assert len(finished) == 3 and stats.handled == 3  # the three in flight were finished and acked
    assert await queue_depth(channel, "slow") == 7  # nothing else taken, nothing lost


async def test_stop_deadline_requeues_what_is_still_running(broker_url, channel):
    started = asyncio.Event()

    async def handler(job):
        started.set()
        await asyncio.sleep(30)

    await publish_keyed(channel, "stuck", ["a", "b"])
    worker = Worker(broker_url, "stuck", handler, concurrency=2, shutdown_timeout=0.2)
    task = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    stats = await asyncio.wait_for(task, 10)
    assert stats.handled == 0
    assert await queue_depth(channel, "stuck") == 2


async def test_at_least_once_retry_waits_for_the_queues_retry_delay(broker_url, channel):
    times: list[float] = []

    def handler(job):
        times.append(time.monotonic())
        if len(times) == 1:
            raise RuntimeError("first attempt fails")

    args = {"x-retry-delays": [400]}
    await publish_keyed(channel, "backoff", ["r1"], arguments=args)
    worker = Worker(broker_url, "backoff", handler, queue_arguments=args)
    async with running(worker):
        await async_wait_for(lambda: worker.stats.handled == 1)
    assert len(times) == 2 and times[1] - times[0] >= 0.35  # the requeue waited in the broker


@pytest.mark.parametrize("deduplicating", [True, False])
async def test_a_rerun_after_its_outputs_went_out_publishes_nothing_new(broker_url, channel, tmp_path, deduplicating):
    """The worker dies after its outputs were confirmed but before it dropped them from the outbox: the
    redelivered input republishes them with the same derived keys, and a deduplicating output queue
    (the broker's durable window) drops the copies. Without deduplication the copies land: that is the
    contrast that shows what the keys are for."""
    path, inbox = _sqlite_app(tmp_path)
    runs: list[str] = []

    def handler(job):
        runs.append(job.key)
        job.db.execute("INSERT INTO effects VALUES (?)", (job.key,))
        job.publish("out", b"first")
        job.publish("out", b"second")

    arguments = {"x-message-deduplication": True, "x-cache-size": 1000} if deduplicating else {}
    await channel.declare_queue("out", arguments=arguments)
    await publish_keyed(channel, "in", ["x"])
    worker = Worker(broker_url, "in", handler, guarantee="exactly-once", inbox=inbox)
    forget = worker._outputs_confirmed
    dropped: list[str] = []

    def die_before_dropping_the_outbox(key: str) -> None:
        if not dropped:
            dropped.append(key)
            raise OSError("killed after the outputs were confirmed, before the outbox was cleared")
        forget(key)

    worker._outputs_confirmed = die_before_dropping_the_outbox  # type: ignore[method-assign]
    async with running(worker):
        await async_wait_for(lambda: worker.stats.already_processed == 1)
    assert runs == ["x"] and _effects(path) == ["x"]  # the effect ran once either way
    bodies = []
    while (m := await channel.get("out", no_ack=True)) is not None:
        bodies.append((m.body, m.headers[DEDUP_HEADER]))
    once = [(b"first", "in:x:0"), (b"second", "in:x:1")]
    assert bodies == (once if deduplicating else once + once)
