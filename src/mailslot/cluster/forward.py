"""Publishes forwarded to the node that owns their queue, over the cluster link (link.py).

Rules of this module:

* Sender (:class:`Forwarder`, the ``Queue.remote`` of every queue another node owns): a publish
  routed to such a queue is appended to that owner's pending list; when the broker cuts its batch
  (``hold_confirms``), each owner gets ONE frame with everything pending for it, and the batch's
  publisher confirms are held until every owner has answered (core/broker.py releases batches in
  order). A publish routed to queues of several owners is therefore confirmed only when every owner
  has committed it.
* Every frame carries, for each queue in it, the owner's lease epoch as the sender last read it
  from the lease table; the owner refuses a frame naming an epoch it does not hold (the queue moved):
  its publishers are nacked, nothing of it is enqueued.
* Owner (:class:`ForwardReceiver`): enqueues a frame's messages in one go, and answers after its own
  COMMIT with a cumulative ``CONFIRM through seq X`` (batches commit in order, so it covers every
  earlier frame of that link), or ``NACK seq`` for a frame it refused or could not commit.
* A link that breaks fails every frame waiting on it (nacked: the publisher may send again; the
  owner may have kept them, so at-least-once). A frame not answered within ``timeout`` is nacked.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections.abc import Callable
from typing import Any

from mailslot.core import storekeys
from mailslot.core.broker import Broker, Hold, Refusals
from mailslot.core.errors import BrokerError
from mailslot.core.message import Entry, Message
from mailslot.core.queue import Queue
from mailslot.core.session import Gate, Session

from . import link, requests
from .leases import Lease, LeaseTable
from .shared_exchanges import exchange_target

log = logging.getLogger("mailslot.cluster")

PUBLISH, CONFIRM, NACK = 10, 11, 12
SUBSCRIBE, DELIVER, SETTLE, CANCEL, CANCELLED = 13, 14, 15, 16, 17
# The owner's answer to a PUBLISH frame some of whose messages its queues refused (x-overflow
# reject-publish): the frame's seq and those messages' indexes in it. Sent only then (rare).
REFUSED = 20
# What a SETTLE frame does with its deliveries: acknowledged, nacked with requeue, rejected (dead-lettered).
ACK, REQUEUE, REJECT = 0, 1, 2
# Deliveries the owner may have outstanding at a node for one queue (the node's consumers' buffer):
# bounds what a node holds in memory for consumers of a queue it does not own.
PROXY_PREFETCH = 1000
# The node's consumers' prefetch changed: the owner's window for the subscription is now (sub id, window).
# The window is the sum of their prefetch counts (PROXY_PREFETCH at most), so a node serving a worker
# with prefetch 1 holds one message of the queue, not a thousand that workers on other nodes wait for.
CREDIT = 18
# A forwarded batch is cut into frames of about this size (a frame per batch per owner otherwise).
FRAME_TARGET = 64 * 1024 * 1024

_U32, _U64, _I64 = struct.Struct("!I"), struct.Struct("!Q"), struct.Struct("!q")
_MESSAGE = struct.Struct("!IBq")  # index of its queue in the frame, persistent, ttl (-1: none)
_DELIVERY = struct.Struct("!BBI")  # redelivered, persistent, failed deliveries so far (x-delivery-count)

# Who to tell when the owner refuses a forwarded publish: a publisher's confirms and the publish's number.
Origin = tuple[Refusals, int] | None
Item = tuple[str, int, Message, Origin]  # queue key, the owner's epoch, the message, its publisher


# -- the PUBLISH frame --------------------------------------------------------------------------------


def encode_publish(seq: int, items: list[Item]) -> bytes:
    keys: dict[str, int] = {}
    epochs: list[int] = []
    body: list[bytes] = []
    for key, epoch, message, _ in items:
        index = keys.get(key)
        if index is None:
            index = keys[key] = len(epochs)
            epochs.append(epoch)
        body.append(_MESSAGE.pack(index, message.persistent, -1 if message.ttl is None else message.ttl))
        for part in (message.exchange.encode(), message.routing_key.encode(), message.properties, message.body,
                     message.codec.name.encode()):
            body.append(_U32.pack(len(part)))
            body.append(part)
    head = [_U64.pack(seq), _U32.pack(len(keys))]
    for key, index in keys.items():
        raw = key.encode()
        head += [_U32.pack(len(raw)), raw, _I64.pack(epochs[index])]
    head.append(_U32.pack(len(items)))
    return b"".join(head + body)


class _Reader:
    """Reads a peer's payload, refusing anything that runs past its end."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = memoryview(data), 0

    def take(self, size: int) -> memoryview:
        if self.at + size > len(self.data):
            raise link.LinkError("a PUBLISH frame ends early")
        chunk = self.data[self.at:self.at + size]
        self.at += size
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size))

    def blob(self) -> bytes:
        (size,) = self.unpack(_U32)
        return bytes(self.take(size))


def decode_publish(payload: bytes) -> tuple[int, list[tuple[str, int]], list[tuple[int, bool, int, list[bytes]]]]:
    """(seq, [(queue key, epoch)], [(queue index, persistent, ttl, [exchange, rk, properties, body, codec])])."""
    r = _Reader(payload)
    (seq,) = r.unpack(_U64)
    (count,) = r.unpack(_U32)
    queues = []
    for _ in range(count):
        key = r.blob().decode()
        (epoch,) = r.unpack(_I64)
        queues.append((key, epoch))
    (count,) = r.unpack(_U32)
    messages = []
    for _ in range(count):
        index, persistent, ttl = r.unpack(_MESSAGE)
        if index >= len(queues):
            raise link.LinkError("a PUBLISH frame names a queue it does not list")
        messages.append((index, bool(persistent), ttl, [r.blob() for _ in range(5)]))
    return seq, queues, messages


def encode_deliver(sub_id: int, first_tag: int, entries: list[Any]) -> bytes:
    return b"".join([_U64.pack(sub_id), _U64.pack(first_tag), _U32.pack(len(entries)), encode_entries(entries)])


def encode_entries(entries: list[Any]) -> bytes:
    """Delivered entries as they travel (DELIVER frames, answers to a get: requests.py)."""
    parts = []
    for entry in entries:
        message = entry.message
        parts.append(_DELIVERY.pack(entry.redelivered, message.persistent, entry.requeues))
        for part in (message.exchange.encode(), message.routing_key.encode(), message.properties, message.body,
                     message.codec.name.encode()):
            parts.append(_U32.pack(len(part)))
            parts.append(part)
    return b"".join(parts)


def decode_deliver(payload: bytes) -> tuple[int, int, list[tuple[bool, bool, int, list[bytes]]]]:
    """(subscription, first delivery tag, [(redelivered, persistent, requeues, [exchange, rk, properties, body,
    codec])])."""
    r = _Reader(payload)
    (sub_id,) = r.unpack(_U64)
    (first_tag,) = r.unpack(_U64)
    (count,) = r.unpack(_U32)
    return sub_id, first_tag, decode_entries(r, count)


def decode_entries(r: _Reader, count: int) -> list[tuple[bool, bool, int, list[bytes]]]:
    out = []
    for _ in range(count):
        redelivered, persistent, requeues = r.unpack(_DELIVERY)
        out.append((bool(redelivered), bool(persistent), requeues, [r.blob() for _ in range(5)]))
    return out


def encode_tags(sub_id: int, mode: int, tags: list[int]) -> bytes:
    return b"".join([_U64.pack(sub_id), bytes((mode,)), _U32.pack(len(tags)), *map(_U64.pack, tags)])


def decode_tags(payload: bytes) -> tuple[int, int, list[int]]:
    """(subscription, ACK / REQUEUE / REJECT, the owner's delivery tags)."""
    r = _Reader(payload)
    (sub_id,) = r.unpack(_U64)
    mode = r.take(1)[0]
    if mode not in (ACK, REQUEUE, REJECT):
        raise link.LinkError(f"a SETTLE frame with an unknown mode {mode}")
    (count,) = r.unpack(_U32)
    return sub_id, mode, [r.unpack(_U64)[0] for _ in range(count)]


def encode_refused(seq: int, indexes: list[int]) -> bytes:
    return b"".join([_U64.pack(seq), _U32.pack(len(indexes)), *map(_U32.pack, indexes)])


def decode_refused(payload: bytes) -> tuple[int, list[int]]:
    r = _Reader(payload)
    (seq,) = r.unpack(_U64)
    (count,) = r.unpack(_U32)
    return seq, [r.unpack(_U32)[0] for _ in range(count)]


def _message(codecs: Any, persistent: bool, fields: list[bytes], ttl: int | None = None) -> Message:
    exchange, routing_key, properties, body, codec = fields
    return Message(exchange.decode(), routing_key.decode(), properties, body, persistent, codecs[codec.decode()], ttl)


# -- the sender ---------------------------------------------------------------------------------------


class Forwarder:
    """``Queue.remote`` of the queues other nodes own: forwards their publishes (see the rules)."""

    def __init__(
        self,
        node_name: str,
        secret: bytes,
        owners: Callable[[], dict[str, Lease]],
        links: Callable[[], dict[str, str]],
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        tls: link.LinkTLS | None = None,
    ) -> None:
        self.node_name, self.secret, self.loop, self.timeout, self.tls = node_name, secret, loop, timeout, tls
        self._owners, self._links = owners, links
        self._pending: dict[str, list[Item]] = {}
        self._peers: dict[str, _Peer] = {}
        self.core: Broker | None = None  # set by the node: consumers here are served through it
        self._subs: dict[str, _Subscription] = {}  # queue key -> its subscription at the owner
        # Settles of deliveries taken in, sent at the broker's cut: one SETTLE frame per subscription and
        # mode per batch, whether the consumers ack one by one or many at once.
        self._settling: dict[tuple[str, int], dict[int, list[int]]] = {}  # (owner, subscription) -> mode -> tags
        # basic.get here of a queue another node owns, unacked: (queue key, local seq) -> (owner, its tag).
        self._gets: dict[tuple[str, int], tuple[str, int]] = {}
        self._sub_ids = itertools.count(1)
        self.forwarded = 0  # messages handed to another node (metrics, tests)
        self.frames = 0  # PUBLISH frames sent: one per batch per owner (larger batches split)

    def enqueue(self, queue: Queue, message: Message) -> bool:
        lease = self._owners().get(queue.key)
        if lease is None or lease.owner == self.node_name or lease.expired:
            return False  # no live owner known (a takeover is under way): nacked, the publisher retries
        pending = self._pending.get(lease.owner)
        if pending is None:
            pending = self._pending[lease.owner] = []
        core = self.core
        publisher = core.publishing if core is not None else None
        pending.append((queue.key, lease.epoch, message, (publisher, publisher.published) if publisher else None))
        return True

    def hold_confirms(self) -> Hold | None:
        """At the cut: one frame per owner with what is pending for it; the hold releases the batch's
        confirms once every frame is answered."""
        if self._settling:
            self._send_settles()
        if not self._pending:
            return None
        pending, self._pending = self._pending, {}
        answers: list[asyncio.Future[bool]] = []
        for owner, items in pending.items():
            self.forwarded += len(items)
            peer = self._peers.get(owner)
            if peer is None:
                peer = self._peers[owner] = _Peer(self, owner)
            answers.append(peer.send(items))

        def hold(release: Callable[[bool], None]) -> None:
            remaining = [len(answers)]
            failed = [False]

            def answered(answer: asyncio.Future[bool]) -> None:
                failed[0] |= not answer.result()
                remaining[0] -= 1
                if remaining[0] == 0:
                    release(not failed[0])

            for answer in answers:
                answer.add_done_callback(answered)

        return hold

    def _peer(self, owner: str) -> _Peer:
        peer = self._peers.get(owner)
        if peer is None:
            peer = self._peers[owner] = _Peer(self, owner)
        return peer

    # -- consumers here of queues another node owns ---------------------------------------------------
    def consumers_changed(self, queue: Queue) -> None:
        """The first consumer here subscribes at the owner; when the last one goes, the subscription is
        cancelled and what was buffered for it is dropped (the owner requeues what it had delivered)."""
        sub = self._subs.get(queue.key)
        if queue.consumers and sub is None:
            lease = self._owners().get(queue.key)
            if lease is None or lease.owner == self.node_name or lease.expired:
                return  # retried at the next poll (ClusterNode.poll)
            sub = _Subscription(next(self._sub_ids), queue, lease.owner)
            sub.window = _window(queue)
            self._subs[queue.key] = sub
            self._peer(lease.owner).subscribe(sub, lease.epoch)
        elif not queue.consumers and sub is not None:
            self.forget(queue)
        elif sub is not None and sub.window != (window := _window(queue)):
            sub.window = window
            self._peer(sub.owner).control(CREDIT, _U64.pack(sub.sub_id) + _U32.pack(window))

    def forget(self, queue: Queue) -> None:
        """Stop being served for ``queue`` (no consumer left, or this node owns it now)."""
        sub = self._subs.pop(queue.key, None)
        if sub is not None:
            if (sub.owner, sub.sub_id) in self._settling:
                self._send_settles((sub.owner, sub.sub_id))  # before the CANCEL: settled ones are not requeued
            self._peer(sub.owner).control(CANCEL, _U64.pack(sub.sub_id))
            sub.tags.clear()
            queue.forget_ready()

    def settled(self, queue: Queue, entries: list[Any]) -> None:
        self._settle(queue, entries, ACK)

    def returned(self, queue: Queue, entries: list[Any], requeue: bool) -> None:
        """Nacked or rejected here: the owner requeues them at their place (redelivered, one delivery more
        towards x-delivery-limit) for any consumer on any node, or dead-letters them (reason rejected)."""
        self._settle(queue, entries, REQUEUE if requeue else REJECT)

    def _settle(self, queue: Queue, entries: list[Any], mode: int) -> None:
        if self._gets:
            entries = self._settle_gets(queue, entries, mode)
        sub = self._subs.get(queue.key)
        if sub is None:
            return  # the subscription is gone: the owner requeued everything it had delivered here
        tags = [tag for tag in (sub.tags.pop(entry.seq, None) for entry in entries) if tag is not None]
        if tags:
            self._pend(sub.owner, sub.sub_id, mode, tags)

    def _settle_gets(self, queue: Queue, entries: list[Any], mode: int) -> list[Any]:
        """Settle the entries that a basic.get here took from the owner; returns the others."""
        others = []
        for entry in entries:
            got = self._gets.pop((queue.key, entry.seq), None)
            if got is None:
                others.append(entry)
            else:
                self._pend(got[0], requests.GET_SESSION, mode, [got[1]])
        return others

    def _pend(self, owner: str, sub_id: int, mode: int, tags: list[int]) -> None:
        if not self._settling and self.core is not None:
            self.core.request_flush()  # they go at the next cut
        modes = self._settling.get((owner, sub_id))
        if modes is None:
            modes = self._settling[owner, sub_id] = {}
        pending = modes.get(mode)
        if pending is None:
            modes[mode] = tags
        else:
            pending += tags

    def _send_settles(self, only: tuple[str, int] | None = None) -> None:
        """The settles gathered since the last cut (or those of ``only``, cancelled next)."""
        for key in [only] if only is not None else list(self._settling):
            modes = self._settling.pop(key, None) or {}
            peer = self._peer(key[0])
            for mode, tags in modes.items():
                peer.control(SETTLE, encode_tags(key[1], mode, tags))

    # -- basic.get, purge and counts of queues another node owns (requests.py) -----------------------
    def get(self, queue: Queue, count: int, settle: str) -> asyncio.Future[list[tuple[Entry, int]]]:
        """Up to ``count`` messages from the owner, with the count left after each; ``settle``: "keep"
        (unacked, settled through this node), "take" (no-ack), "requeue" or "reject" (given back at once)."""
        mode = {"keep": requests.KEEP, "take": requests.TAKE, "requeue": requests.REQUEUE_AFTER,
                "reject": requests.REJECT_AFTER}[settle]
        owner, asked = self._ask(queue, requests.GET, mode, count, "basic.get")

        def taken(answer: tuple[int, int, list[tuple[int, int]], list[Any]]) -> list[tuple[Entry, int]]:
            _, _, got, deliveries = answer
            codecs = self.core.codecs if self.core is not None else None
            entries = queue.take_in([(_message(codecs, persistent, fields), redelivered, requeues)
                                     for redelivered, persistent, requeues, fields in deliveries], ready=False)
            if mode == requests.KEEP:
                for (tag, _), entry in zip(got, entries, strict=True):
                    self._gets[queue.key, entry.seq] = (owner, tag)
            return [(entry, remaining) for entry, (_, remaining) in zip(entries, got, strict=True)]

        return self._then(queue, "basic.get", asked, taken)

    def purge(self, queue: Queue) -> asyncio.Future[int]:
        """Purge the queue on its owner; the number of messages purged."""
        return self._then(queue, "queue.purge", self._ask(queue, requests.PURGE, 0, 0, "queue.purge")[1],
                          lambda answer: answer[1])

    def count(self, queue: Queue) -> asyncio.Future[int]:
        """The owner's message count of the queue."""
        return self._then(queue, "a message count", self._ask(queue, requests.COUNT, 0, 0, "a message count")[1],
                          lambda answer: answer[1])

    def _ask(self, queue: Queue, op: int, mode: int, count: int, action: str) -> tuple[str, asyncio.Future[Any]]:
        lease = self._owners().get(queue.key)
        if lease is None or lease.owner == self.node_name or lease.expired:
            raise requests.refused(queue, action, "no live owner known: a takeover is under way")
        peer = self._peer(lease.owner)
        request_id, asked = peer.asked.new(self.timeout)
        peer.control(requests.REQUEST, requests.encode_request(request_id, op, mode, count, lease.epoch, queue.key))
        return lease.owner, asked

    def _then(self, queue: Queue, action: str, asked: asyncio.Future[Any], make: Callable[[Any], Any]) -> Any:
        result = self.loop.create_future()

        def done(answer: asyncio.Future[Any]) -> None:
            error = answer.exception()
            if error is None and answer.result()[0] != requests.OK:
                error = LookupError("it moved to another node meanwhile")
            if error is None:
                try:
                    result.set_result(make(answer.result()))
                    return
                except (LookupError, ValueError) as bad:  # a codec this node lacks, a malformed name
                    error = bad
            result.set_exception(requests.refused(queue, action, str(error)))

        asked.add_done_callback(done)
        return result

    def _delivered(self, owner: str, payload: bytes) -> None:
        sub_id, first_tag, deliveries = decode_deliver(payload)
        sub = next((s for s in self._subs.values() if s.sub_id == sub_id and s.owner == owner), None)
        core = self.core
        if sub is None or core is None or sub.queue.remote is not self or sub.queue.deleted:
            return  # cancelled meanwhile: the owner requeues them when it reads the CANCEL
        codecs = core.codecs
        entries = sub.queue.take_in([(_message(codecs, persistent, fields), redelivered, requeues)
                                     for redelivered, persistent, requeues, fields in deliveries])
        for tag, entry in enumerate(entries, first_tag):
            sub.tags[entry.seq] = tag
        core.mark_dirty(sub.queue)
        core.request_flush()

    def _cancelled(self, owner: str, sub_id: int | None = None) -> None:
        """The owner cancelled a subscription (the queue moved, or was deleted), or the link to it broke
        (``sub_id`` None: all of its subscriptions). Subscribed again at the next poll if consumers remain."""
        for key, sub in list(self._subs.items()):
            if sub.owner == owner and sub_id in (None, sub.sub_id):
                del self._subs[key]
                self._settling.pop((owner, sub.sub_id), None)  # the owner requeued them all
                sub.tags.clear()
                sub.queue.forget_ready()

    def _link_broke(self, owner: str) -> None:
        """The owner requeued what it had handed out here: forget it (a later ack of it goes nowhere)."""
        self._cancelled(owner)
        self._settling.pop((owner, requests.GET_SESSION), None)
        for key, got in list(self._gets.items()):
            if got[0] == owner:
                del self._gets[key]

    def refresh(self, queues: list[Queue]) -> None:
        """Each poll: queues with consumers here and no subscription (the owner was unknown, or changed)."""
        for queue in queues:
            if queue.remote is self and queue.consumers and queue.key not in self._subs:
                self.consumers_changed(queue)

    def close(self) -> None:
        for peer in self._peers.values():
            peer.close()


class _Subscription:
    __slots__ = ("owner", "queue", "sub_id", "tags", "window")

    def __init__(self, sub_id: int, queue: Queue, owner: str) -> None:
        self.sub_id, self.queue, self.owner = sub_id, queue, owner
        self.tags: dict[int, int] = {}  # the local entry's seq -> the owner's delivery tag
        self.window = PROXY_PREFETCH  # deliveries the owner may have outstanding here (CREDIT)


def _window(queue: Queue) -> int:
    """What this node's consumers of ``queue`` can hold: the sum of their prefetch windows (a no-ack
    consumer, or one without a limit, counts as PROXY_PREFETCH), PROXY_PREFETCH at most."""
    total = 0
    for consumer in queue.consumers:
        limit = 0 if consumer.no_ack else consumer.prefetch or consumer.session.channel_prefetch
        total += limit or PROXY_PREFETCH
    return max(1, min(total, PROXY_PREFETCH))


def _chunks(items: list[Item]) -> list[list[Item]]:
    chunks: list[list[Item]] = [[]]
    size = 0
    for item in items:
        weight = len(item[2].body) + len(item[2].properties) + 64
        if chunks[-1] and size + weight > FRAME_TARGET:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += weight
    return chunks


class _Peer:
    """The link to one owner: frames numbered from 1, answers matched to them, reconnected on demand.

    One frame in flight at a time: what the batches cut meanwhile waits and goes as ONE frame once the
    owner answered, so under load a frame carries everything of one round trip (batch-shaped even when
    the broker cuts a batch per event-loop turn)."""

    def __init__(self, forwarder: Forwarder, owner: str) -> None:
        self.forwarder, self.owner = forwarder, owner
        self._seq = 0
        self._waiting: dict[int, asyncio.Future[bool]] = {}
        self._sent: dict[int, list[Item]] = {}  # unanswered frames' items: a REFUSED answer names them
        self._queued: list[Item] = []
        self._queued_answer: asyncio.Future[bool] | None = None
        self._outbox: list[bytes] = []
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._down = False  # the last attempt failed: further failures are logged at debug level only
        self.asked = requests.Asked(forwarder.loop)  # gets, purges, counts sent to the owner (requests.py)

    def send(self, items: list[Item]) -> asyncio.Future[bool]:
        """Forward ``items``; the answer is True once the owner committed them."""
        self._queued += items
        if self._queued_answer is None:
            self._queued_answer = self.forwarder.loop.create_future()
        answer = self._queued_answer
        self._pump()
        return answer

    def _pump(self) -> None:
        if self._waiting or not self._queued:
            return
        items, answer = self._queued, self._queued_answer
        self._queued, self._queued_answer = [], None
        assert answer is not None
        frames = [self._frame(chunk) for chunk in _chunks(items)]
        remaining = [len(frames)]
        ok = [True]

        def answered(frame: asyncio.Future[bool]) -> None:
            ok[0] &= frame.result()
            remaining[0] -= 1
            if remaining[0] == 0 and not answer.done():
                answer.set_result(ok[0])

        for frame in frames:
            frame.add_done_callback(answered)

    def _frame(self, items: list[Item]) -> asyncio.Future[bool]:
        loop = self.forwarder.loop
        self.forwarder.frames += 1
        self._seq += 1
        seq = self._seq
        answer: asyncio.Future[bool] = loop.create_future()
        self._waiting[seq] = answer
        self._sent[seq] = items
        self._send(link.encode_frame(PUBLISH, encode_publish(seq, items)))
        loop.call_later(self.forwarder.timeout, self._expire, seq)
        return answer

    def subscribe(self, sub: _Subscription, epoch: int) -> None:
        key = sub.queue.key.encode()
        self.control(SUBSCRIBE, b"".join([_U64.pack(sub.sub_id), _I64.pack(epoch), _U32.pack(sub.window),
                                          _U32.pack(len(key)), key]))

    def control(self, kind: int, payload: bytes) -> None:
        self._send(link.encode_frame(kind, payload))

    def _send(self, frame: bytes) -> None:
        """Write ``frame`` on the link, or queue it for the link being (re)connected. A link that just broke
        is closing before its reader notices: what is queued then goes with the broken link (its
        publishes are nacked, the owner requeues what it had delivered), never an error in the batch cut."""
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(frame)
            return
        self._outbox.append(frame)
        if self._task is None:
            self._task = self.forwarder.loop.create_task(self._run(), name=f"mailslot-link-to-{self.owner}")

    def _expire(self, seq: int) -> None:
        if seq in self._waiting:
            log.warning("node '%s' did not answer a forwarded batch in time: its publishers are nacked", self.owner)
            self._resolve(seq, False)

    async def _run(self) -> None:
        forwarder = self.forwarder
        try:
            address = forwarder._links().get(self.owner, "")
            if not address:
                raise link.LinkError(f"node '{self.owner}' has no cluster link (--cluster-link)")
            reader, writer = await link.connect(link.parse_address(address), forwarder.secret, forwarder.node_name,
                                                forwarder.tls, self.owner)
            self._writer = writer
            if self._down:
                self._down = False
                log.info("cluster link to node '%s' is up again", self.owner)
            for frame in self._outbox:
                writer.write(frame)
            self._outbox = []
            while True:
                kind, payload = await link.read_frame(reader)
                if kind == DELIVER:
                    forwarder._delivered(self.owner, payload)
                    continue
                if kind == requests.ANSWER:
                    self.asked.answered(payload)
                    continue
                (seq,) = _U64.unpack(payload[:8])
                if kind == CANCELLED:
                    forwarder._cancelled(self.owner, seq)
                elif kind == CONFIRM:
                    for waiting in sorted(s for s in self._waiting if s <= seq):
                        self._resolve(waiting, True)
                elif kind == NACK:
                    self._resolve(seq, False)
                elif kind == REFUSED:
                    self._refused(payload)
        except (OSError, asyncio.IncompleteReadError, link.LinkError, ValueError, struct.error) as exc:
            # While a node is down every forwarded batch dials it again (and fails at once): one warning
            # per outage, not one per batch.
            log.log(logging.DEBUG if self._down else logging.WARNING, "cluster link to node '%s' failed: %s",
                    self.owner, exc)
            self._down = True
        finally:
            writer_, self._writer = self._writer, None
            if writer_ is not None:
                writer_.close()
            self._task = None
            for seq in list(self._waiting):
                self._resolve(seq, False)
            self._outbox = []
            self.asked.fail_all("the link to the owner broke")
            forwarder._link_broke(self.owner)  # the owner requeues what it had delivered here

    def _refused(self, payload: bytes) -> None:
        """The owner refused some messages of a frame (full queues): nack those publishes only; the frame's
        CONFIRM (which follows) releases the rest."""
        seq, indexes = decode_refused(payload)
        items = self._sent.get(seq)
        if items is None:
            return  # answered already (timed out): its publishes were nacked
        for index in indexes:
            origin = items[index][3] if index < len(items) else None
            if origin is not None:
                origin[0].refuse(origin[1])

    def _resolve(self, seq: int, ok: bool) -> None:
        self._sent.pop(seq, None)
        answer = self._waiting.pop(seq, None)
        if answer is not None and not answer.done():
            answer.set_result(ok)
        if not self._waiting:
            self.forwarder.loop.call_soon(self._pump)  # what queued meanwhile goes as one frame

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


# -- the owner ----------------------------------------------------------------------------------------


class ForwardReceiver:
    """The owner's side: authenticates peers and enqueues the frames they forward (see the rules)."""

    def __init__(self, core: Broker, leases: LeaseTable, secret: bytes) -> None:
        self.core, self.leases, self.secret = core, leases, secret
        self.received = 0  # messages enqueued for other nodes (metrics, tests)
        self.hosts_of: Callable[[str], list[str]] = lambda node: []  # TLS: hosts a node may be (link.accept)
        self.queries: Callable[[bytes, asyncio.StreamWriter], None] | None = None  # proxy.QueryServer
        self._connections: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        peer = "?"
        sessions: dict[int, Session] = {}  # this link's subscriptions: one session each
        try:
            peer = await link.accept(reader, writer, self.secret, self.hosts_of)
            while True:
                kind, payload = await link.read_frame(reader)
                if kind == PUBLISH:
                    self._publish(payload, writer)
                elif kind == SUBSCRIBE:
                    self._subscribe(payload, writer, sessions, peer)
                elif kind == SETTLE:
                    self._settle(payload, sessions)
                elif kind == requests.REQUEST:
                    requests.serve(self.core, self.leases.held, payload, writer, sessions,
                                   _LinkSink(writer, requests.GET_SESSION))
                elif kind == CREDIT:
                    self._credit(payload, sessions)
                elif kind == CANCEL:
                    (sub_id,) = _U64.unpack(payload[:8])
                    session = sessions.pop(sub_id, None)
                    if session is not None:
                        session.close()  # what it had delivered and is unsettled is requeued
                        self.core.request_flush()
                elif kind == link.QUERY and self.queries is not None:
                    self.queries(payload, writer)  # a management request about a queue here (proxy.py)
                else:
                    raise link.LinkError(f"unexpected frame type {kind}")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the peer went away
        except (TimeoutError, link.LinkError, ValueError, struct.error) as exc:
            log.warning("cluster link from %s closed: %s", peer if peer != "?" else "a peer", exc)
        finally:
            for session in sessions.values():
                session.close()
            if sessions:
                self.core.request_flush()
            self._connections.discard(writer)
            writer.close()

    def _subscribe(self, payload: bytes, writer: asyncio.StreamWriter, sessions: dict[int, Session], peer: str) -> None:
        r = _Reader(payload)
        (sub_id,) = r.unpack(_U64)
        (epoch,) = r.unpack(_I64)
        (prefetch,) = r.unpack(_U32)
        key = r.blob().decode()
        queue = _local_queue(self.core, key)
        if queue is None or self.leases.held.get(key) != epoch:
            writer.write(link.encode_frame(CANCELLED, _U64.pack(sub_id)))
            return
        core = self.core
        session = core.open_session(core.vhosts[queue.vhost], object(), _LinkSink(writer, sub_id), Gate())
        session.consumer_prefetch = min(prefetch, PROXY_PREFETCH)
        try:
            session.consume(queue.name, f"amq.ctag-link-{peer}-{sub_id}", no_ack=False, exclusive=False,
                            arguments={})
        except BrokerError as error:  # exclusive use, single active consumer taken...
            log.info("node '%s' cannot consume from queue '%s': %s", peer, queue.name, error)
            session.close()
            writer.write(link.encode_frame(CANCELLED, _U64.pack(sub_id)))
            return
        sessions[sub_id] = session
        core.request_flush()

    def _credit(self, payload: bytes, sessions: dict[int, Session]) -> None:
        r = _Reader(payload)
        (sub_id,) = r.unpack(_U64)
        (window,) = r.unpack(_U32)
        session = sessions.get(sub_id)
        if session is None:
            return  # cancelled meanwhile
        for consumer in session.consumers.values():
            consumer.prefetch = max(1, min(window, PROXY_PREFETCH))
            self.core.mark_dirty(consumer.queue)  # a wider window: deliver what now fits
        self.core.request_flush()

    def _settle(self, payload: bytes, sessions: dict[int, Session]) -> None:
        sub_id, mode, tags = decode_tags(payload)
        session = sessions.get(sub_id)
        if session is None:
            return
        if mode != ACK:  # nacked or rejected on the consumer's node: as a consumer here would
            for tag in tags:
                with contextlib.suppress(BrokerError):  # requeued meanwhile (a consumer timeout)
                    session.nack(tag, False, mode == REQUEUE)
            self.core.request_flush()
            return
        top = max(tags, default=0)
        if set(tags) == {t for t in session.unacked if t <= top}:
            tags = [top]  # every delivery up to top: one multiple ack (the usual case: acks in order)
            multiple = True
        else:
            multiple = False
        for tag in tags:
            try:
                session.ack(tag, multiple)
            except BrokerError:
                pass  # requeued meanwhile (a consumer timeout): nothing to settle
        self.core.request_flush()

    def _publish(self, payload: bytes, writer: asyncio.StreamWriter) -> None:
        seq, queues, messages = decode_publish(payload)
        core = self.core
        held = self.leases.held
        targets: list[Callable[[Message], bool]] = []
        for key, epoch in queues:
            target = _local_target(core, key)
            if target is None or held.get(key) != epoch:  # the queue moved (or the sender read an old lease)
                writer.write(link.encode_frame(NACK, _U64.pack(seq)))
                return
            targets.append(target)
        refused: list[int] = []
        codecs = core.codecs
        for position, (index, persistent, ttl, fields) in enumerate(messages):
            exchange, routing_key, properties, body, codec = fields
            message = Message(exchange.decode(), routing_key.decode(), properties, body, persistent,
                              codecs[codec.decode()], None if ttl < 0 else ttl)
            if not targets[index](message):
                refused.append(position)
        self.received += len(messages)
        if refused:  # those publishes only are nacked; the CONFIRM after the commit releases the others
            writer.write(link.encode_frame(REFUSED, encode_refused(seq, refused)))

        def committed(ok: bool) -> None:
            if not writer.is_closing():
                writer.write(link.encode_frame(CONFIRM if ok else NACK, _U64.pack(seq)))

        core.after_write(committed)  # not after_commit: see Broker.after_write
        core.request_flush()

    def close(self) -> None:
        for writer in list(self._connections):
            with contextlib.suppress(Exception):
                writer.close()


class _LinkSink:
    """The session of a subscription: its deliveries go over the link as one DELIVER frame per batch."""

    def __init__(self, writer: asyncio.StreamWriter, sub_id: int) -> None:
        self.writer, self.sub_id = writer, sub_id

    def deliver_many(self, consumer_tag: str, first_tag: int, entries: list[Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(link.encode_frame(DELIVER, encode_deliver(self.sub_id, first_tag, entries)))

    def consumer_cancelled(self, consumer_tag: str) -> None:
        if not self.writer.is_closing():
            self.writer.write(link.encode_frame(CANCELLED, _U64.pack(self.sub_id)))

    def acknowledgement_timed_out(self, timeout_ms: int) -> None:
        self.consumer_cancelled("")


def _local_target(core: Broker, key: str) -> Callable[[Message], bool] | None:
    """What enqueues a forwarded message for ``key`` here: its queue, or a deduplicating exchange this node
    owns (shared_exchanges.py: routed through its window here)."""
    queue = _local_queue(core, key)
    if queue is None:
        return exchange_target(core, key)
    vhost = core.vhosts[queue.vhost]
    return lambda message: vhost.enqueue(queue, message)


def _local_queue(core: Broker, key: str) -> Queue | None:
    parsed = storekeys.decode(key)
    vhost = core.vhosts.get(parsed.vhost)
    queue = vhost.queues.get(parsed.name) if vhost is not None else None
    if queue is None or queue.key != key or queue.remote is not None:
        return None
    return queue


def is_link_consumer(consumer: Any) -> bool:
    """Whether a consumer of a queue here is another node's subscription (it stands for that node's
    consumers), not a client's."""
    return isinstance(consumer.session.sink, _LinkSink)
