"""The worker loop: consume a queue, run the handler under the chosen guarantee, settle, shut down
gracefully. See docs/exactly-once.md for the order of the steps and why.

Per message, by guarantee:

- at-most-once: the ack of every message received is committed (``tx.commit``, which the broker answers
  only once the ack is on disk) *before* the handler runs; a crash after that loses the message;
- at-least-once: handler, publish its outputs (confirmed), ack; a failure nacks with requeue (the queue's
  ``x-retry-delays`` spaces the retries when it has them); a crash before the ack runs it again;
- exactly-once: in one database transaction, claim the key in the inbox (already there: a repeat; skip
  the handler), run the handler with that transaction, record its outputs in the outbox; COMMIT; then
  publish the outputs (confirmed, with derived keys), drop them from the outbox, ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mailslot.client import Channel, ConnectionClosed, ConnectionLost, Message, connect
from mailslot.client.connection import RECONNECT_CODES, Connection

from .api import Guarantee, Handler, Inbox, InboxSession, Job, Output, delivery_count, message_key

log = logging.getLogger("mailslot.worker")


@dataclass
class WorkerStats:
    received: int = 0
    redelivered: int = 0  # deliveries flagged redelivered by the broker
    handled: int = 0  # the handler ran and its outcome was settled
    already_processed: int = 0  # exactly-once: key found in the inbox, acked without running the handler
    failed: int = 0  # the handler (or its transaction) raised
    rejected_without_key: int = 0  # exactly-once: no x-deduplication-header and no message_id
    published: int = 0  # outputs confirmed by the broker


class Worker:
    """Run ``handler`` over ``queue``. ``await worker.run()`` until :meth:`stop` (or SIGTERM/SIGINT with
    :func:`run_worker`). ``url`` may be a list of URLs, the nodes of a cluster: the worker reconnects to
    the next one that answers when its node goes away (:func:`mailslot.client.connect`).

    ``concurrency`` messages are in flight at once (the prefetch); synchronous handlers run in a pool of
    that many threads, each exactly-once thread with its own database connection. ``inbox`` (a
    :class:`~mailslot.worker.SQLiteInbox` or :class:`~mailslot.worker.PostgresInbox`) is required for
    exactly-once. ``name`` scopes the derived keys of outputs (default: the queue name).
    ``shutdown_timeout``: how long a graceful stop waits for in-flight messages before requeueing them.
    ``after_commit(job)``, for fault-injection tests only, runs after an exactly-once transaction commits
    and before its outputs are published and the message is acked.
    """

    def __init__(self, url: str | Sequence[str], queue: str, handler: Handler, *,
                 guarantee: Guarantee | str = Guarantee.AT_LEAST_ONCE, inbox: Inbox | None = None,
                 concurrency: int = 16, declare: bool = True, queue_arguments: dict[str, Any] | None = None,
                 shutdown_timeout: float = 30.0, name: str | None = None,
                 after_commit: Callable[[Job], None] | None = None) -> None:
        self.guarantee = Guarantee(guarantee)
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        is_async = inspect.iscoroutinefunction(handler)
        if self.guarantee is Guarantee.EXACTLY_ONCE:
            if inbox is None:
                raise ValueError("exactly-once needs an inbox (SQLiteInbox or PostgresInbox) in your database")
            if is_async:
                raise TypeError("an exactly-once handler is a plain function: it runs in a thread with "
                                "job.db, the open (blocking) database connection")
        self.url = url
        self.queue = queue
        self.handler = handler
        self.inbox = inbox
        self.concurrency = concurrency
        self.declare = declare
        self.queue_arguments = queue_arguments
        self.shutdown_timeout = shutdown_timeout
        self.name = name or queue
        self.after_commit = after_commit
        self.stats = WorkerStats()
        self._async_handler = is_async
        self._stop: asyncio.Event | None = None
        self._force = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._active: dict[str, asyncio.Future[None]] = {}  # exactly-once keys being processed here
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._sessions: list[InboxSession] = []
        self._sessions_lock = threading.Lock()
        self.connection: Connection | None = None

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Stop consuming, finish what is in flight (up to ``shutdown_timeout``), requeue the rest.
        A second call stops at once (in-flight messages are requeued)."""
        if self._stop is None:
            return
        if self._stop.is_set():
            self._force = True
            for task in list(self._tasks):
                task.cancel()
        self._stop.set()

    async def run(self) -> WorkerStats:
        self._stop = asyncio.Event()
        if not self._async_handler:
            self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="mailslot-worker")
        conn = await self._connect()
        if conn is None:
            return self.stats
        self.connection = conn
        try:
            consume_ch = await conn.channel()
            publish_ch = await conn.channel()
            await publish_ch.confirm_select()
            if self.declare:
                await consume_ch.declare_queue(self.queue, durable=True, arguments=self.queue_arguments)
            if self.guarantee is Guarantee.AT_MOST_ONCE:
                await consume_ch.tx_select()  # acks are committed (on disk) before the handler runs
            log.info("worker %s: consuming %r (%s, %d in flight)", self.name, self.queue, self.guarantee,
                     self.concurrency)
            await self._consume(consume_ch, publish_ch)
            await self._drain_in_flight()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await conn.close()
            if self._executor is not None:
                # A handler still running in a thread cannot be interrupted: its message was requeued,
                # and its transaction (if it commits) is found in the inbox when the copy arrives.
                self._executor.shutdown(wait=False, cancel_futures=True)
            with self._sessions_lock:
                sessions, self._sessions = self._sessions, []
            for session in sessions:
                session.close()
        log.info("worker %s: stopped (%s)", self.name, self.stats)
        return self.stats

    async def _connect(self) -> Connection | None:
        """Connect, retrying while the broker is unreachable (it may be restarting) until stopped."""
        assert self._stop is not None
        delay = 0.1
        while not self._stop.is_set():
            try:
                return await connect(self.url, reconnect=True, name=f"mailslot.worker {self.name}")
            except (OSError, TimeoutError, ConnectionLost) as exc:
                if isinstance(exc, ConnectionClosed) and exc.code not in RECONNECT_CODES:
                    raise
                log.warning("worker %s: cannot connect (%s); retrying in %.1f s", self.name, exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, 5.0)
        return None

    # ------------------------------------------------------------------ consuming
    async def _consume(self, ch: Channel, publish_ch: Channel) -> None:
        assert self._stop is not None
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            async with ch.consume(self.queue, prefetch=self.concurrency) as messages:
                while True:
                    # At most `concurrency` messages in flight. The prefetch bounds the unacked ones, but
                    # at-most-once acks on receipt, so the bound is kept here for every guarantee.
                    while len(self._tasks) >= self.concurrency and not self._stop.is_set():
                        await asyncio.wait({*self._tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    free = max(1, self.concurrency - len(self._tasks))
                    batch_task = asyncio.ensure_future(messages.next_batch(free))
                    await asyncio.wait({batch_task, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if not batch_task.done():
                        batch_task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await batch_task
                    if batch_task.cancelled():
                        return  # stop requested; leaving the block cancels the consumer, requeues its buffer
                    batch = batch_task.result()
                    if not batch:
                        return
                    if self.guarantee is Guarantee.AT_MOST_ONCE and not await self._ack_received(ch, batch):
                        continue
                    for message in batch:
                        task = asyncio.ensure_future(self._process(message, publish_ch))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
        finally:
            stopping.cancel()

    async def _ack_received(self, ch: Channel, batch: list[Message]) -> bool:
        """at-most-once: ack the batch and wait for tx.commit-ok, i.e. the acks are on the broker's disk.
        When the commit's outcome is unknown (connection lost) the batch is not handled: if the acks did
        not apply, the broker redelivers the messages; if they did, they are lost (at most once)."""
        for attempt in (1, 2):
            if not await ch.ack(batch[-1], multiple=True):
                return False  # delivered on a connection since replaced: the broker redelivers them
            try:
                await ch.tx_commit()
                return True
            except ConnectionLost as exc:
                # Either the connection dropped with the commit in flight, or it had dropped before
                # and this commit reports that the previous transaction was lost (our acks then sit
                # uncommitted in the new channel's transaction). Roll back and, if the batch's delivery
                # tags are still alive, ack it again.
                log.warning("worker %s: ack commit of %d message(s) interrupted (%s)", self.name, len(batch), exc)
                if attempt == 2:
                    break
                try:
                    await ch.tx_rollback()
                except ConnectionLost:
                    break
        log.warning("worker %s: not handling %d message(s) whose ack commit is unknown", self.name, len(batch))
        return False

    async def _drain_in_flight(self) -> None:
        if not self._tasks:
            return
        log.info("worker %s: finishing %d in-flight message(s) (up to %.0f s)", self.name, len(self._tasks),
                 self.shutdown_timeout)
        _done, pending = await asyncio.wait(set(self._tasks), timeout=self.shutdown_timeout)
        if pending:
            log.warning("worker %s: requeueing %d message(s) still in flight at the shutdown deadline",
                        self.name, len(pending))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------------ one message
    async def _process(self, message: Message, publish_ch: Channel) -> None:
        stats = self.stats
        stats.received += 1
        if message.redelivered:
            stats.redelivered += 1
        key = message_key(message)
        job = Job(message, key, self.name)
        guarantee = self.guarantee
        repeat = False
        try:
            if guarantee is Guarantee.EXACTLY_ONCE:
                if key is None:
                    stats.rejected_without_key += 1
                    log.error("worker %s: message without x-deduplication-header or message_id cannot be "
                              "processed exactly once: rejected (dead-lettered if the queue has a "
                              "dead-letter exchange, else dropped)", self.name)
                    await message.reject(requeue=False)
                    return
                # Copies of one key in flight in this worker run one after the other: the second then
                # finds the key and an empty outbox instead of republishing what the first is publishing.
                while (other := self._active.get(key)) is not None:
                    await asyncio.shield(other)
                done = self._active[key] = asyncio.get_running_loop().create_future()
                try:
                    repeat, outputs = await self._in_thread(self._transaction, job)
                    if repeat:
                        stats.already_processed += 1
                        log.info("worker %s: key=%s already processed: acked without running the handler "
                                 "(redelivered=%s, %d output(s) to republish)", self.name, key,
                                 message.redelivered, len(outputs))
                    elif self.after_commit is not None:
                        self.after_commit(job)
                    if outputs:
                        await self._publish(publish_ch, outputs)
                        await self._in_thread(self._outputs_confirmed, key)
                finally:
                    del self._active[key]
                    done.set_result(None)
                await message.ack()
            else:
                await self._run_handler(job)
                if job.outputs:
                    await self._publish(publish_ch, job.outputs)
                if guarantee is Guarantee.AT_LEAST_ONCE:
                    await message.ack()
            if not repeat:
                stats.handled += 1
        except asyncio.CancelledError:
            if guarantee is not Guarantee.AT_MOST_ONCE:
                await message.nack(requeue=True)  # no waiting for a reconnect while shutting down
            raise
        except ConnectionLost as exc:
            # The delivery tag died with the connection: the broker redelivers the message.
            log.warning("worker %s: key=%s: connection lost before the ack (%s); the broker redelivers it",
                        self.name, key, exc)
        except Exception as exc:  # the handler's failure: log it, settle the message
            stats.failed += 1
            count = delivery_count(message)
            if guarantee is Guarantee.AT_MOST_ONCE:
                outcome = "lost (at-most-once: acked before handling)"
            else:
                outcome = ("requeued" if await message.nack(requeue=True)
                           else "redelivered after reconnect")
            log.error("worker %s: handler failed: key=%s delivery=%s redelivered=%s: %s: %s; %s", self.name,
                      key, count if count is not None else "?", message.redelivered, type(exc).__name__, exc,
                      outcome)
            log.debug("traceback of the failure", exc_info=True)

    async def _run_handler(self, job: Job) -> None:
        if self._async_handler:
            await self.handler(job)
        else:
            await self._in_thread(self.handler, job)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _publish(self, ch: Channel, outputs: list[Output]) -> None:
        await asyncio.gather(*(ch.publish(o.exchange, o.routing_key, o.body, headers=o.headers_with_key(),
                                          message_id=o.key) for o in outputs))
        self.stats.published += len(outputs)

    # ------------------------------------------------------------------ exactly-once, in a pool thread
    def _session(self) -> InboxSession:
        session: InboxSession | None = getattr(self._local, "session", None)
        if session is None:
            assert self.inbox is not None
            session = self._local.session = self.inbox.session()
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _drop_session(self) -> None:
        """After an error the connection may be broken (database restarted): the next message opens a new one."""
        session = getattr(self._local, "session", None)
        self._local.session = None
        if session is not None:
            with self._sessions_lock:
                if session in self._sessions:
                    self._sessions.remove(session)
            session.close()

    def _transaction(self, job: Job) -> tuple[bool, list[Output]]:
        """(True, outbox rows) for a key already processed, else (False, the new outputs) after COMMIT."""
        key = job.key
        assert key is not None
        session = self._session()
        try:
            with session.transaction():
                if not session.claim(key):
                    return True, session.pending_outputs(key)
                job.db = session.db
                try:
                    self.handler(job)
                finally:
                    job.db = None
                if job.outputs:
                    session.record_outputs(key, job.outputs)
        except BaseException:
            self._drop_session()
            raise
        return False, job.outputs

    def _outputs_confirmed(self, key: str) -> None:
        self._session().outputs_confirmed(key)


def run_worker(worker: Worker) -> WorkerStats:
    """Run a worker until SIGTERM or SIGINT (the first stops gracefully, a second at once)."""

    async def main() -> WorkerStats:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(worker.run())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        try:
            return await task
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    return asyncio.run(main())
