"""basic.get, queue.purge and a queue's message count on a node that does not own the queue: asked of
the owner over the cluster link (forward.py's link), so a client may use any queue on any node.

Rules of this module:

* One REQUEST frame per operation, one ANSWER frame back; these are management-rate operations, not the
  publish/deliver hot path (that stays batch-shaped in forward.py). A REQUEST carries the owner's lease
  epoch as the asking node last read it; an owner that does not hold that epoch answers NOT_OWNER and
  does nothing (the asking node refuses the operation with 406, as it did before it could ask).
* The owner runs the operation as a local client would, and answers after the commit that makes it
  durable (a purge's removal, a get's delivery watermark).
* A get whose messages stay unacknowledged (basic.get without no-ack) is held by one session of the
  link on the owner, subscription number 0 (subscriptions count from 1); the asking node settles it with
  forward.py's SETTLE frames on that number, so ack, nack and reject do what they do on the owner. If the
  link breaks, the owner requeues it (at-least-once, as for a consumer served through the node).
* Nothing a peer sends crashes the owner: a malformed frame closes the link (LinkError), an unknown queue
  or operation is answered NOT_OWNER.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from typing import TYPE_CHECKING, Any

from mailslot.core.broker import Broker, OnCommit
from mailslot.core.errors import BrokerError, PreconditionFailed
from mailslot.core.message import Entry
from mailslot.core.queue import Queue
from mailslot.core.session import Gate, Session

from . import forward, link

if TYPE_CHECKING:
    from .forward import _LinkSink

REQUEST, ANSWER = 21, 22
GET, PURGE, COUNT = 1, 2, 3
# What the owner does with the messages of a GET: keep them unacked for the asking node (basic.get), take
# them (no-ack), or give them back at once, requeued or rejected (the management API's ack modes).
KEEP, TAKE, REQUEUE_AFTER, REJECT_AFTER = 0, 1, 2, 3
OK, NOT_OWNER = 0, 1
GET_SESSION = 0  # the subscription number of the link's get session on the owner

_REQUEST = struct.Struct("!QBBIq")  # id, operation, get mode, count, the owner's epoch; then the queue key
_ANSWER = struct.Struct("!QBII")  # id, status, a count (purged, messages), how many messages follow
_GOT = struct.Struct("!QI")  # the owner's delivery tag, messages left after it


def encode_request(request_id: int, op: int, mode: int, count: int, epoch: int, key: str) -> bytes:
    raw = key.encode()
    return _REQUEST.pack(request_id, op, mode, count, epoch) + struct.pack("!I", len(raw)) + raw


def decode_request(payload: bytes) -> tuple[int, int, int, int, int, str]:
    r = forward._Reader(payload)  # the link's bounds-checked reader
    request_id, op, mode, count, epoch = r.unpack(_REQUEST)
    return request_id, op, mode, count, epoch, r.blob().decode(errors="replace")


def encode_answer(request_id: int, status: int, count: int, got: list[tuple[int, int, Entry]]) -> bytes:
    parts = [_ANSWER.pack(request_id, status, count, len(got))]
    for tag, remaining, _ in got:
        parts.append(_GOT.pack(tag, remaining))
    return b"".join(parts) + forward.encode_entries([entry for _, _, entry in got])


def decode_answer(payload: bytes) -> tuple[int, int, int, list[tuple[int, int]], list[Any]]:
    """(id, status, count, [(tag, remaining)], [decoded deliveries as forward.decode_entries gives them])."""
    r = forward._Reader(payload)
    request_id, status, count, n = r.unpack(_ANSWER)
    if n > len(payload):
        raise link.LinkError("an ANSWER frame lists more messages than it can hold")
    got = [r.unpack(_GOT) for _ in range(n)]
    return request_id, status, count, got, forward.decode_entries(r, n)


# -- the asking node ----------------------------------------------------------------------------------


class Asked:
    """The requests one link has sent and not had answered: futures by request id."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}

    def new(self, timeout: float) -> tuple[int, asyncio.Future[Any]]:
        request_id = next(self._ids)
        answer: asyncio.Future[Any] = self.loop.create_future()
        self._waiting[request_id] = answer
        self.loop.call_later(timeout, self.fail, request_id, "the owner did not answer in time")
        return request_id, answer

    def answered(self, payload: bytes) -> None:
        request_id, status, count, got, deliveries = decode_answer(payload)
        answer = self._waiting.pop(request_id, None)
        if answer is not None and not answer.done():
            answer.set_result((status, count, got, deliveries))

    def fail(self, request_id: int, why: str) -> None:
        answer = self._waiting.pop(request_id, None)
        if answer is not None and not answer.done():
            answer.set_exception(link.LinkError(why))

    def fail_all(self, why: str) -> None:
        for request_id in list(self._waiting):
            self.fail(request_id, why)


def refused(queue: Queue, action: str, why: str) -> PreconditionFailed:
    return PreconditionFailed(
        f"queue '{queue.name}' in vhost '{queue.vhost}' is owned by another node of the cluster and {action} "
        f"could not be served through it ({why}): retry, or connect to its owner (/api/queues shows its node)"
    )


# -- the owner ----------------------------------------------------------------------------------------


def serve(core: Broker, held: dict[str, int], payload: bytes, writer: asyncio.StreamWriter,
          sessions: dict[int, Session], sink: _LinkSink) -> None:
    """Run one REQUEST on this node (the owner) and answer it after the commit."""
    request_id, op, mode, count, epoch, key = decode_request(payload)
    queue = forward._local_queue(core, key)

    def answer(status: int, number: int = 0, got: list[tuple[int, int, Entry]] | None = None) -> None:
        frame = link.encode_frame(ANSWER, encode_answer(request_id, status, number, got or []))

        def committed(ok: bool) -> None:
            if not writer.is_closing():
                writer.write(frame if ok else link.encode_frame(ANSWER, encode_answer(request_id, NOT_OWNER, 0, [])))

        core.after_commit(OnCommit(committed))
        core.request_flush()

    if queue is None or held.get(key) != epoch or op not in (GET, PURGE, COUNT) or mode > REJECT_AFTER:
        answer(NOT_OWNER)
        return
    if op == COUNT:
        answer(OK, queue.message_count)
    elif op == PURGE:
        answer(OK, queue.purge())
        core.mark_dirty(queue)
    else:
        answer(OK, 0, _get(core, queue, sessions, sink, mode, count))


def _get(core: Broker, queue: Queue, sessions: dict[int, Session], sink: _LinkSink, mode: int,
         count: int) -> list[tuple[int, int, Entry]]:
    session = sessions.get(GET_SESSION)
    if session is None:
        session = sessions[GET_SESSION] = core.open_session(core.vhosts[queue.vhost], object(), sink, Gate())
    got: list[tuple[int, int, Entry]] = []
    try:
        for _ in range(count):
            one = session.get(queue.name, no_ack=mode == TAKE)
            if one is None:
                break
            tag, entry, remaining = one
            # As handed out (a requeue below flags the entry itself redelivered, as the next get sees it).
            got.append((tag, remaining, Entry(entry.seq, entry.message, entry.redelivered, False, 0, entry.requeues)))
    except BrokerError:
        pass  # an exclusive queue (never shared): answered with what was got, nothing
    if mode in (REQUEUE_AFTER, REJECT_AFTER):  # after all gets, as the management API does on one node
        for tag, _, _ in got:
            session.nack(tag, False, mode == REQUEUE_AFTER)
    return got
