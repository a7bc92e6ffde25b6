"""A channel: declarations, confirmed publishing, consumers, basic.get, transactions."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Self

from pamqp import commands

from mailslot.protocols.amqp091.client import ClientConnection
from mailslot.protocols.amqp091.events import ContentReceived, Delivery

from .confirms import ConfirmTracker
from .consumer import Consumer
from .errors import ChannelClosed, ClientError, ConnectionClosed, ConnectionLost
from .message import PERSISTENT, TRANSIENT, Message, build_properties

if TYPE_CHECKING:
    import datetime

    from .connection import Connection

log = logging.getLogger("mailslot.client")

#: One send + expected reply, replayable after a reconnect: ``send(client_connection, channel_number)``.
Send = Callable[[ClientConnection, int], None]

_tags = itertools.count(1)


class Channel:
    """An AMQP channel. Get one from :meth:`Connection.channel`.

    Calls that wait for a reply (declare, get, tx_commit, ...) may be issued concurrently; replies are
    matched in order (the server answers a channel's synchronous methods in the order it got them).
    """

    def __init__(self, connection: Connection, number: int) -> None:
        self._conn = connection
        self.number = number
        self._rpc: deque[tuple[tuple[type, ...], asyncio.Future[Any]]] = deque()
        self._confirms = ConfirmTracker()
        self._confirm_mode = False
        self._tx_mode = False
        self._tx_dirty = False  # publishes/acks since the last tx.commit / tx.rollback
        self._tx_lost = False  # a reconnect dropped an open transaction
        self._prefetch: tuple[int, bool] | None = None
        self._consumers: dict[str, Consumer] = {}
        self._error: ClientError | None = None  # set while the channel is unusable
        self._generation = 0  # bumped on every (re)open: delivery tags of older generations are dead
        # channel.open-ok received on the current connection: its deliveries can be settled, even while
        # other channels are still being reopened after a reconnect (the connection is not ready yet).
        self._live = False

    # ------------------------------------------------------------------ state
    @property
    def is_open(self) -> bool:
        return self._error is None and self._conn._ready

    async def _usable(self) -> None:
        if self._error is not None:
            raise self._error
        if not self._conn._ready:
            await self._conn._wait_ready()
            if self._error is not None:
                raise self._error

    async def _call(self, send: Send, *reply: type, usable: bool = True) -> Any:
        if usable:
            await self._usable()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._rpc.append((reply, fut))
        send(self._conn._cc, self.number)
        self._conn._flush()
        return await fut

    async def _open(self) -> None:
        """channel.open, then restore the modes the channel had (confirm/tx/qos) and its consumers."""
        self._generation += 1
        self._confirms = ConfirmTracker()
        self._error = None
        await self._call(lambda cc, n: cc.open_channel(n), commands.Channel.OpenOk, usable=False)
        self._live = True
        if self._confirm_mode:
            await self._call(lambda cc, n: cc.confirm_select(n), commands.Confirm.SelectOk, usable=False)
        if self._tx_mode:
            await self._call(_send(commands.Tx.Select()), commands.Tx.SelectOk, usable=False)
            if self._tx_dirty:
                self._tx_lost = True
        if self._prefetch is not None:
            count, global_ = self._prefetch
            await self._call(lambda cc, n: cc.basic_qos(n, count, global_), commands.Basic.QosOk, usable=False)
        for consumer in list(self._consumers.values()):
            await self._call(consumer._consume_send(), commands.Basic.ConsumeOk, usable=False)

    async def reopen(self) -> None:
        """Open the channel again after the server closed it (:class:`ChannelClosed`). Confirm mode,
        transaction mode and prefetch are restored; consumers ended with the close and are not."""
        if self._error is None:
            return
        await self._conn._wait_ready()
        self._consumers.clear()
        self._conn._channels[self.number] = self
        await self._open()

    async def close(self) -> None:
        if self._error is not None:
            return
        if self._conn._ready:
            await self._call(_send(commands.Channel.Close(reply_code=200, reply_text="Goodbye", class_id=0,
                                                          method_id=0)), commands.Channel.CloseOk)
        self._closed(ClientError("channel closed by the client"), reconnecting=False)
        self._conn._channels.pop(self.number, None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ events (called by Connection)
    def _on_method(self, method: Any) -> None:
        t = type(method)
        if t is commands.Basic.Cancel:  # consumer_cancel_notify: the queue went away
            consumer = self._consumers.pop(method.consumer_tag, None)
            if consumer is not None:
                consumer._end(ClientError(f"consumer {method.consumer_tag} cancelled by the broker"))
            return
        if t is commands.Channel.Flow:
            self._conn._cc.send_method(self.number, commands.Channel.FlowOk(active=method.active))
            return
        rpc = self._rpc
        if rpc and isinstance(method, rpc[0][0]):
            _, fut = rpc.popleft()
            if not fut.done():
                fut.set_result(method)
            return
        log.debug("channel %d: unexpected %s", self.number, method)

    def _on_content(self, ev: ContentReceived) -> None:
        rpc = self._rpc
        if type(ev.method) is commands.Basic.GetOk and rpc and commands.Basic.GetOk in rpc[0][0]:
            _, fut = rpc.popleft()
            if not fut.done():
                fut.set_result(ev)
            return
        log.debug("channel %d: ignored %s (mandatory publish returned?)", self.number, ev.method)

    def _on_delivery(self, ev: Delivery) -> None:
        consumer = self._consumers.get(ev.consumer_tag)
        if consumer is None:  # arrived after our basic.cancel: give it back
            self._conn._cc.basic_nack(self.number, ev.delivery_tag, False, True)
            return
        consumer._push(Message(self, self._generation, ev.delivery_tag, ev.redelivered, ev.exchange,
                               ev.routing_key, ev.properties, ev.body, ev.consumer_tag))

    def _on_server_close(self, code: int, text: str) -> None:
        self._closed(ChannelClosed(code, text), reconnecting=False)

    def _closed(self, error: ClientError, reconnecting: bool) -> None:
        """The channel (or its connection) is gone; with ``reconnecting`` it will be reopened."""
        self._live = False
        while self._rpc:
            _, fut = self._rpc.popleft()
            if not fut.done():
                fut.set_exception(error)
        self._confirms.fail(error)
        if reconnecting:
            for consumer in self._consumers.values():
                consumer._lost()
            return
        self._error = error
        for consumer in self._consumers.values():
            consumer._end(error)
        self._consumers.clear()

    # ------------------------------------------------------------------ declarations
    async def declare_queue(self, name: str = "", *, durable: bool = True, exclusive: bool = False,
                            auto_delete: bool = False, passive: bool = False,
                            arguments: dict[str, Any] | None = None) -> tuple[str, int, int]:
        """queue.declare -> (queue name, message count, consumer count). Durable by default (mailslot
        is a durable broker); a named, non-passive declaration is repeated after a reconnect."""
        def send(cc: ClientConnection, n: int) -> None:
            cc.queue_declare(n, name, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
                             passive=passive, arguments=arguments)
        ok = await self._call(send, commands.Queue.DeclareOk)
        if name and not passive:
            self._conn._remember(("queue", name), send, commands.Queue.DeclareOk)
        return ok.queue, ok.message_count, ok.consumer_count

    async def declare_exchange(self, name: str, type: str = "direct", *, durable: bool = True,
                               auto_delete: bool = False, internal: bool = False, passive: bool = False,
                               arguments: dict[str, Any] | None = None) -> None:
        send = _send(commands.Exchange.Declare(exchange=name, exchange_type=type, durable=durable,
                                               auto_delete=auto_delete, internal=internal, passive=passive,
                                               arguments=arguments))
        await self._call(send, commands.Exchange.DeclareOk)
        if not passive:
            self._conn._remember(("exchange", name), send, commands.Exchange.DeclareOk)

    async def bind_queue(self, queue: str, exchange: str, routing_key: str = "",
                         arguments: dict[str, Any] | None = None) -> None:
        send = _send(commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=routing_key,
                                         arguments=arguments))
        await self._call(send, commands.Queue.BindOk)
        self._conn._remember(("bind", queue, exchange, routing_key, repr(arguments)), send, commands.Queue.BindOk)

    async def unbind_queue(self, queue: str, exchange: str, routing_key: str = "",
                           arguments: dict[str, Any] | None = None) -> None:
        await self._call(_send(commands.Queue.Unbind(queue=queue, exchange=exchange, routing_key=routing_key,
                                                     arguments=arguments)), commands.Queue.UnbindOk)
        self._conn._forget(("bind", queue, exchange, routing_key, repr(arguments)))

    async def delete_queue(self, name: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """queue.delete -> the number of messages deleted with it."""
        ok = await self._call(_send(commands.Queue.Delete(queue=name, if_unused=if_unused, if_empty=if_empty)),
                              commands.Queue.DeleteOk)
        self._conn._forget(("queue", name))
        return int(ok.message_count)

    async def purge_queue(self, name: str) -> int:
        ok = await self._call(_send(commands.Queue.Purge(queue=name)), commands.Queue.PurgeOk)
        return int(ok.message_count)

    async def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        await self._call(_send(commands.Exchange.Delete(exchange=name, if_unused=if_unused)),
                         commands.Exchange.DeleteOk)
        self._conn._forget(("exchange", name))

    # ------------------------------------------------------------------ modes
    async def confirm_select(self) -> None:
        """Publisher confirms: from now on :meth:`publish` returns once the broker confirmed."""
        if self._tx_mode:
            raise ClientError("a transactional channel cannot use publisher confirms")
        if not self._confirm_mode:
            await self._call(lambda cc, n: cc.confirm_select(n), commands.Confirm.SelectOk)
            self._confirm_mode = True

    async def qos(self, prefetch_count: int, global_: bool = False) -> None:
        await self._call(lambda cc, n: cc.basic_qos(n, prefetch_count, global_), commands.Basic.QosOk)
        self._prefetch = (prefetch_count, global_)

    async def tx_select(self) -> None:
        if self._confirm_mode:
            raise ClientError("a channel in confirm mode cannot be transactional")
        if not self._tx_mode:
            await self._call(_send(commands.Tx.Select()), commands.Tx.SelectOk)
            self._tx_mode = True

    async def tx_commit(self) -> None:
        """Commit the publishes and acks since the last commit/rollback. Raises :class:`ConnectionLost`
        when a reconnect dropped them (nothing of the transaction happened: run it again)."""
        if self._tx_lost:
            self._tx_lost = self._tx_dirty = False
            raise ConnectionLost("the transaction was rolled back by a reconnect; nothing of it was applied")
        await self._call(_send(commands.Tx.Commit()), commands.Tx.CommitOk)
        self._tx_dirty = False

    async def tx_rollback(self) -> None:
        self._tx_lost = False
        await self._call(_send(commands.Tx.Rollback()), commands.Tx.RollbackOk)
        self._tx_dirty = False

    # ------------------------------------------------------------------ publishing
    async def publish(self, exchange: str, routing_key: str, body: bytes, *, persistent: bool = True,
                      mandatory: bool = False, headers: dict[str, Any] | None = None,
                      message_id: str | None = None, content_type: str | None = None,
                      correlation_id: str | None = None, reply_to: str | None = None,
                      expiration: str | None = None, priority: int | None = None,
                      timestamp: datetime.datetime | None = None, type: str | None = None,
                      app_id: str | None = None) -> None:
        """basic.publish. In confirm mode returns when the broker confirmed it (basic.nack raises
        :class:`PublishNacked`; a connection drop raises :class:`ConnectionLost`: the message may or may
        not have been enqueued). Otherwise returns once it is handed to the socket buffer."""
        if self._error is not None or not self._conn._ready:
            await self._usable()
        raw = build_properties(persistent, headers, message_id, content_type, correlation_id, reply_to,
                               expiration, priority, timestamp, type, app_id)
        conn = self._conn
        seq = conn._cc.publish_raw(self.number, exchange, routing_key, raw, body, mandatory)
        conn._schedule_flush()
        if self._confirm_mode:
            tracker = self._confirms
            tracker.seq = seq
            await tracker.add_waiter(seq, seq)
            return
        if self._tx_mode:
            self._tx_dirty = True
        if conn._paused():
            await conn._drain()

    async def publish_many(self, messages: Sequence[tuple[str, str, bytes]], *, window: int = 1000,
                           persistent: bool = True, mandatory: bool = False) -> int:
        """Publish ``(exchange, routing_key, body)`` messages in order, keeping at most ``window``
        unconfirmed; returns ``len(messages)`` once every one is confirmed.

        Turns confirm mode on unless the channel is transactional (then the messages are only written;
        :meth:`tx_commit` makes them happen). Raises :class:`PublishNacked` (``indexes``: the refused
        ones; all others were confirmed) or :class:`ConnectionLost` (``confirmed``: messages[:confirmed]
        are confirmed, the rest are unknown: retrying them can duplicate some).
        """
        if window < 1:
            raise ValueError("window must be >= 1")
        await self._usable()
        if not self._tx_mode:
            await self.confirm_select()
        raw = PERSISTENT if persistent else TRANSIENT
        conn = self._conn
        n = len(messages)
        number = self.number
        if self._tx_mode:
            for i in range(0, n, window):
                await self._usable()
                conn._cc.publish_batch(number, messages[i:i + window], raw, mandatory)
                conn._flush()
                self._tx_dirty = True
                if conn._paused():
                    await conn._drain()
            return n
        tracker = self._confirms
        start = tracker.seq + 1
        tracker.holds.append(start)
        try:
            i = 0
            while i < n:
                if tracker.error is not None:
                    raise _with_confirmed(tracker.error, max(0, tracker.low - start + 1))
                room = window - (tracker.seq - tracker.low)
                if room <= 0:
                    await tracker.wait_progress()
                    continue
                if conn._paused():
                    await conn._drain()
                    continue
                chunk = messages[i:i + room]
                tracker.seq = conn._cc.publish_batch(number, chunk, raw, mandatory)
                conn._flush()
                i += len(chunk)
            fut = tracker.add_waiter(start, tracker.seq)
        finally:
            tracker.holds.remove(start)
        try:
            await fut
        except ConnectionLost as exc:
            raise _with_confirmed(exc, max(0, tracker.low - start + 1)) from None
        return n

    # ------------------------------------------------------------------ consuming
    def consume(self, queue: str, *, prefetch: int | None = 1000, no_ack: bool = False, exclusive: bool = False,
                arguments: dict[str, Any] | None = None) -> Consumer:
        """``async with ch.consume("q") as messages: async for m in messages: ...``

        ``prefetch`` sets basic.qos on the channel (None leaves it as it is). On exit the consumer is
        cancelled and messages it received but did not hand out are requeued.
        """
        return Consumer(self, queue, f"mailslot.ctag-{next(_tags)}", prefetch, no_ack, exclusive, arguments)

    async def _start_consumer(self, consumer: Consumer) -> None:
        if consumer.prefetch is not None and self._prefetch != (consumer.prefetch, False):
            await self.qos(consumer.prefetch)
        self._consumers[consumer.tag] = consumer  # before consume-ok: deliveries may follow it at once
        try:
            await self._call(consumer._consume_send(), commands.Basic.ConsumeOk)
        except BaseException:
            self._consumers.pop(consumer.tag, None)
            raise

    async def _cancel_consumer(self, consumer: Consumer) -> None:
        if self._consumers.get(consumer.tag) is consumer and self.is_open:
            try:
                await self._call(_send(commands.Basic.Cancel(consumer_tag=consumer.tag)), commands.Basic.CancelOk)
            except (ConnectionLost, ChannelClosed):
                pass
        self._consumers.pop(consumer.tag, None)
        if not consumer.no_ack:
            for m in consumer._take_buffer():
                self._settle(m._generation, m.delivery_tag, 1, False, True)
        consumer._end(None)

    async def get(self, queue: str, *, no_ack: bool = False) -> Message | None:
        """basic.get: one message or None when the queue is empty."""
        reply = await self._call(_send(commands.Basic.Get(queue=queue, no_ack=no_ack)),
                                 commands.Basic.GetOk, commands.Basic.GetEmpty)
        if not isinstance(reply, ContentReceived):
            return None
        m: Any = reply.method  # Basic.GetOk
        return Message(self, self._generation, m.delivery_tag, m.redelivered, m.exchange, m.routing_key,
                       reply.properties, reply.body, message_count=m.message_count)

    async def ack(self, delivery: Message | int, multiple: bool = False) -> bool:
        """basic.ack by message or delivery tag (``multiple=True``: this one and all before it)."""
        if isinstance(delivery, Message):
            return self._settle(delivery._generation, delivery.delivery_tag, 0, multiple, False)
        return self._settle(self._generation, delivery, 0, multiple, False)

    async def nack(self, delivery: Message | int, multiple: bool = False, requeue: bool = True) -> bool:
        if isinstance(delivery, Message):
            return self._settle(delivery._generation, delivery.delivery_tag, 1, multiple, requeue)
        return self._settle(self._generation, delivery, 1, multiple, requeue)

    def _settle(self, generation: int, tag: int, kind: int, multiple: bool, requeue: bool) -> bool:
        """0 ack, 1 nack, 2 reject. False (nothing sent) when the delivery belongs to an older channel
        or connection: its tag is dead and the broker will redeliver the message."""
        conn = self._conn
        if generation != self._generation or self._error is not None or not self._live:
            return False
        cc = conn._cc
        if kind == 0:
            cc.basic_ack(self.number, tag, multiple)
        elif kind == 1:
            cc.basic_nack(self.number, tag, multiple, requeue)
        else:
            cc.send_method(self.number, commands.Basic.Reject(delivery_tag=tag, requeue=requeue))
        if self._tx_mode:
            self._tx_dirty = True
        conn._schedule_flush()
        return True


def _send(method: Any) -> Send:
    def send(cc: ClientConnection, n: int) -> None:
        cc.send_method(n, method)
    return send


def _with_confirmed(error: BaseException, confirmed: int) -> BaseException:
    if isinstance(error, ConnectionClosed):
        return ConnectionClosed(error.code, error.text, confirmed)
    if isinstance(error, ConnectionLost):
        return ConnectionLost(str(error), confirmed)
    return error
