"""The broker core: virtual hosts, the batch cycle, recovery.

The batch cycle is the heart of the hot path (design.md): front ends apply a whole read buffer
of work through sessions, which only *stage* effects (enqueue, ack, store writes) and mark queues
dirty. ``flush`` then runs once per event-loop iteration: it dispatches every dirty queue to its
consumers, commits the store once (one fsync for the whole batch: group commit) and only then
runs the after-commit hooks that release publisher confirms and tx.commit-ok.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable, Iterable

from ..storage.api import MessageLog, MetadataStore
from .errors import StoreFailure
from .exchanges import Exchange
from .message import HeadersReader, Message
from .queue import Queue
from .session import DeliverySink, Gate, Session
from .vhost import VirtualHost

log = logging.getLogger("mailslot.core")

CommitHook = Callable[[bool], None]  # called with True after a durable commit, False if it failed


class Broker:
    def __init__(
        self,
        message_log: MessageLog,
        metadata: MetadataStore,
        read_headers: HeadersReader,
        vhosts: Iterable[str] = ("/",),
    ) -> None:
        self.log = message_log
        self.metadata = metadata
        self.read_headers = read_headers
        self.vhosts = {name: VirtualHost(name, message_log, metadata, read_headers) for name in vhosts}
        self._dirty: dict[Queue, None] = {}  # insertion-ordered set
        self._hooks: list[CommitHook] = []
        self._reply_sessions: dict[str, Session] = {}
        self.request_flush: Callable[[], None] = lambda: None  # set by the transport: schedule flush() soon

    # ---- start-up -------------------------------------------------------------------------------

    def recover(self) -> None:
        """Rebuild durable definitions, then point each durable queue at what the log holds."""
        definitions = self.metadata.load()
        for ex in definitions.exchanges:
            vhost = self.vhosts.get(ex.vhost)
            if vhost is not None and ex.name not in vhost.exchanges:
                vhost.declare_exchange(
                    ex.name,
                    ex.type,
                    passive=False,
                    durable=True,
                    auto_delete=ex.auto_delete,
                    internal=ex.internal,
                    arguments=ex.arguments,
                )
        for q in definitions.queues:
            vhost = self.vhosts.get(q.vhost)
            if vhost is not None:
                vhost.declare_queue(
                    q.name,
                    passive=False,
                    durable=True,
                    exclusive=False,
                    auto_delete=q.auto_delete,
                    arguments=q.arguments,
                    owner=None,
                )
        for binding in definitions.bindings:
            vhost = self.vhosts.get(binding.vhost)
            if vhost is None:
                continue
            exchange = vhost.exchanges.get(binding.source)
            arguments = definitions.binding_arguments.get(binding, {})
            if exchange is not None:
                exchange.bind(
                    (binding.destination_kind, binding.destination), binding.routing_key, arguments, binding.arguments_key
                )
        by_key = {queue.key: queue for vhost in self.vhosts.values() for queue in vhost.queues.values()}
        for recovered in self.log.recover():
            queue = by_key.get(recovered.queue)
            if queue is None:
                self.log.stage_purge(recovered.queue)  # rows of a queue that no longer exists
            else:
                queue.restore(recovered.count, recovered.max_seq)
        if self.log.has_staged():
            self.log.commit()

    # ---- sessions -------------------------------------------------------------------------------

    def open_session(self, vhost: VirtualHost, owner: object, sink: DeliverySink, gate: Gate) -> Session:
        return Session(self, vhost, owner, sink, gate)

    def connection_closed(self, owner: object) -> None:
        """Exclusive queues die with their connection."""
        for vhost in self.vhosts.values():
            for queue in [q for q in vhost.queues.values() if q.exclusive_owner is owner]:
                self.delete_queue(vhost, queue)
        self.request_flush()

    def delete_queue(self, vhost: VirtualHost, queue: Queue) -> int:
        """Delete and tell its consumers (consumer_cancel_notify)."""
        for consumer in list(queue.consumers):
            consumer.session.cancelled_by_broker(consumer)
        queue.consumers.clear()
        self._dirty.pop(queue, None)
        return vhost.remove_queue(queue)

    # ---- direct reply-to ------------------------------------------------------------------------

    def register_reply_session(self, session: Session) -> str:
        token = base64.urlsafe_b64encode(os.urandom(18)).decode()
        self._reply_sessions[token] = session
        return token

    def unregister_reply_session(self, token: str) -> None:
        self._reply_sessions.pop(token, None)

    def deliver_reply(self, token: str, message: Message) -> bool:
        session = self._reply_sessions.get(token)
        if session is None or session.closed:
            return False  # the requester is gone: the reply is dropped, as RabbitMQ does
        session.deliver_reply(message)
        return True

    # ---- the batch cycle ------------------------------------------------------------------------

    def mark_dirty(self, queue: Queue) -> None:
        self._dirty[queue] = None

    def after_commit(self, hook: CommitHook) -> None:
        self._hooks.append(hook)

    def flush(self) -> None:
        """Dispatch dirty queues, group-commit the store, then release confirms (after the fsync)."""
        dirty = self._dirty
        touched: list[Queue] = []
        while dirty:
            batch = list(dirty)
            dirty.clear()
            for queue in batch:
                if not queue.deleted:
                    queue.dispatch()
                    touched.append(queue)
        for queue in touched:
            queue.spill()  # what did not fit the memory window goes into this commit
        ok = True
        if self.log.has_staged():
            try:
                self.log.commit()
            except Exception:  # a full disk or I/O error: nack what waited on this commit
                log.exception("store commit failed; unconfirmed publishes will be nacked")
                ok = False
        hooks = self._hooks
        if hooks:
            self._hooks = []
            for hook in hooks:
                hook(ok)

    def close(self) -> None:
        self.flush()
        self.log.close()
        self.metadata.close()

    @staticmethod
    def store_failure() -> StoreFailure:
        return StoreFailure("store write failed")

    def exchange(self, vhost: VirtualHost, name: str) -> Exchange:
        return vhost.exchange(name)
