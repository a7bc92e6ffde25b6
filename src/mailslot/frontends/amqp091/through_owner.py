"""basic.get, queue.purge and queue.delete on a queue another node of the cluster owns (``Queue.remote``):
the owner is asked (mailslot.cluster), and the reply goes out when it answered.

The client waits for these replies (they are synchronous methods), so the channel goes on with the methods
after it meanwhile as it always does. If the channel closed before the answer came, a message the owner
handed out for it is given back (requeued at the owner). An owner that cannot be asked closes the channel
with 406, naming the reason, as the node did before it could ask.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands as spec

from ...core import errors as core_errors
from ...core.message import Entry
from ...core.queue import Queue
from ...core.vhost import VirtualHost
from ...protocols.amqp091 import ReplyCode

if TYPE_CHECKING:
    from .channel import Channel


def get(channel: Channel, queue: Queue, no_ack: bool) -> None:
    assert queue.remote is not None
    asked = queue.remote.get(queue, 1, "take" if no_ack else "keep")

    def answered(got: list[tuple[Entry, int]]) -> None:
        session = channel.session
        if not got:
            session.got_nothing(queue)
            channel.reply(spec.Basic.GetEmpty())
            return
        entry, remaining = got[0]
        channel.send_get_ok(session.got(queue, entry, no_ack), entry, remaining)

    def give_back(got: list[tuple[Entry, int]]) -> None:
        if got and not no_ack and queue.remote is not None:
            queue.remote.returned(queue, [entry for entry, _ in got], True)

    _when_answered(channel, asked, answered, give_back)


def purge(channel: Channel, queue: Queue, nowait: bool) -> None:
    assert queue.remote is not None
    asked = queue.remote.purge(queue)
    _when_answered(channel, asked, lambda count: None if nowait else channel.reply(
        spec.Queue.PurgeOk(message_count=count)))


def delete(channel: Channel, vhost: VirtualHost, queue: Queue, if_empty: bool, nowait: bool) -> None:
    """The owner's message count first (the reply's, and if-empty's), then the deletion (here; the owner
    applies it from the metadata). If the owner cannot be asked (no link, a takeover under way), this
    node's own view answers, as before nodes could ask: the count of what it holds for its consumers."""
    assert queue.remote is not None
    if nowait and not if_empty:
        channel.connection.broker.delete_queue(vhost, queue)
        return
    try:
        asked = queue.remote.count(queue)
    except core_errors.BrokerError:
        asked = asyncio.get_running_loop().create_future()
        asked.set_exception(LookupError("the owner cannot be asked"))

    def answered(count: int) -> None:
        if if_empty and count:
            _fail(channel, core_errors.PreconditionFailed(f"queue '{queue.name}' in vhost '{vhost.name}' not empty"))
            return
        if not queue.deleted:
            channel.connection.broker.delete_queue(vhost, queue)
        if not nowait:
            channel.reply(spec.Queue.DeleteOk(message_count=count))

    def unanswered(error: BaseException) -> None:
        answered(queue.message_count)

    _when_answered(channel, asked, answered, failed=unanswered)


def _when_answered(channel: Channel, asked: asyncio.Future[Any], answered: Callable[[Any], None],
                   give_back: Callable[[Any], None] = lambda _: None,
                   failed: Callable[[BaseException], None] | None = None) -> None:
    def done(answer: asyncio.Future[Any]) -> None:
        connection = channel.connection
        error = answer.exception()
        if connection.closed or connection.channels.get(channel.number) is not channel or channel.session.closed:
            if error is None:
                give_back(answer.result())
            return
        if error is not None:
            (failed or (lambda e: _fail(channel, e)))(error)
        else:
            answered(answer.result())
        connection.broker.request_flush()  # the reply goes out with the next flush

    asked.add_done_callback(done)


def _fail(channel: Channel, error: BaseException) -> None:
    code = ReplyCode.PRECONDITION_FAILED
    text = error.text if isinstance(error, core_errors.BrokerError) else str(error)
    channel.connection.fail_channel(channel, code, code.text(text))
