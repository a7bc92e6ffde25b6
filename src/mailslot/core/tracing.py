"""Message tracing per vhost: RabbitMQ's firehose, and a bounded history of what happened to each message.

Rules of this module:

* Off costs nothing but a flag check: a vhost's ``tracer`` is None unless tracing is on, and the core's
  hooks are one line each, checking it once per operation (a publish) or per batch (a delivery batch, a
  settle batch, a dead-lettering), never per message in a batch.
* The firehose is RabbitMQ's (https://www.rabbitmq.com/docs/firehose, rabbit_trace.erl): while tracing is
  on, every publish is copied to the ``amq.rabbitmq.trace`` topic exchange with routing key
  ``publish.<exchange>`` and every delivery (basic.deliver and basic.get) with ``deliver.<queue>``. A trace
  message carries the original body, and headers ``exchange_name``, ``routing_keys``, ``properties``,
  ``node``, then for a publish ``vhost``, ``connection``, ``channel``, ``user``, ``routed_queues``, for a
  delivery ``redelivered``, ``vhost``, ``connection``, ``channel``, ``user``. Messages published to the
  trace exchange itself are not traced (no trace of a trace).
* On top, the history: per vhost, the last ``capacity`` messages seen published (or first seen delivered)
  with their events (published, delivered, acked, requeued, rejected, expired, dead_lettered), each with
  a timestamp, found by message id or by a header value. Bounded twice: oldest messages go first when it
  is full, and one message keeps at most ``EVENTS_PER_MESSAGE`` events; both say what they dropped.
* A message is followed by its container object (one per publish, shared by the queues it reached), held
  weakly. A dead-lettered copy shares its original's body, by which it is linked to the same history.
  A restart forgets the history (it is kept in memory only); the tracing flag itself is kept.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .message import Entry, Message, Properties
from .routing import sender_keys

if TYPE_CHECKING:
    from .queue import Queue
    from .session import Session
    from .vhost import VirtualHost

TRACE_EXCHANGE = "amq.rabbitmq.trace"
# Messages the history keeps per vhost: at a few hundred bytes of events each, 10,000 is a few MiB.
DEFAULT_CAPACITY = 10_000
# Events kept per message: a message redelivered forever must not grow without bound.
EVENTS_PER_MESSAGE = 64
# Dead-lettered originals remembered to link their copies to the same history (by the shared body, which a
# link keeps alive): at most this many, and at most this many body bytes, so large messages cannot pile up.
_DEAD_LETTER_LINKS = 1_024
_DEAD_LETTER_LINK_BYTES = 16 * 1024 * 1024
_PROPERTY_NAMES = (
    "content_type", "content_encoding", "headers", "priority", "correlation_id", "reply_to", "expiration",
    "message_id", "timestamp", "type", "user_id", "app_id",
)


@dataclass(slots=True)
class TraceEvent:
    at: float
    event: str
    details: dict[str, Any]

    def document(self) -> dict[str, Any]:
        return {"at": self.at, "event": self.event, **self.details}


class MessageHistory:
    """What happened to one published message. Its properties are kept as encoded and decoded only when
    looked at (a lookup is rare, a publish is not)."""

    __slots__ = ("_message_id", "codec", "events", "events_dropped", "exchange", "number", "properties",
                 "routing_key", "tracked")

    def __init__(self, number: int, message: Message) -> None:
        self.number = number
        self.exchange = message.exchange
        self.routing_key = message.routing_key
        self.properties = message.properties
        self.codec = message.codec
        self.events: list[TraceEvent] = []
        self.events_dropped = 0
        self._message_id: Any = _UNREAD
        self.tracked: list[int] = []  # ids of the message objects that point here (History._of)

    @property
    def message_id(self) -> str | None:
        if self._message_id is _UNREAD:
            self._message_id = self.codec.message_id(self.properties)
        return self._message_id  # type: ignore[no-any-return]

    @property
    def headers(self) -> dict[str, Any]:
        return self.codec.headers(self.properties) or {}

    def add(self, event: TraceEvent) -> bool:
        if len(self.events) >= EVENTS_PER_MESSAGE:
            self.events_dropped += 1
            return False
        self.events.append(event)
        return True


_UNREAD = object()


class History:
    """The last ``capacity`` messages' histories of one vhost.

    A message object is found by its ``id`` and a weak reference that must still point at it (an id is
    reused once its object is gone); a dead-lettered copy by the ``id`` of the body it shares with its
    original, kept alive by the link itself."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._records: OrderedDict[int, MessageHistory] = OrderedDict()
        self._of: dict[int, tuple[weakref.ref[Message], MessageHistory]] = {}
        self._links: OrderedDict[int, tuple[bytes, MessageHistory]] = OrderedDict()
        self._link_bytes = 0
        # Called with each message history the capacity pushes out (the HTTP layer keeps them on disk).
        self.forgotten: Callable[[MessageHistory], None] | None = None
        self._numbers = 0
        self.events = 0
        self.dropped_messages = 0
        self.dropped_events = 0

    def __len__(self) -> int:
        return len(self._records)

    def record_for(self, message: Message, create: bool = True) -> MessageHistory | None:
        found = self._of.get(id(message))
        if found is not None and found[0]() is message:
            return found[1]
        link = self._links.get(id(message.body)) if self._links else None
        if link is not None and link[0] is message.body:  # a dead-lettered copy of a traced message
            self._track(message, link[1])
            return link[1]
        if not create:
            return None
        self._numbers += 1
        record = MessageHistory(self._numbers, message)
        self._records[record.number] = record
        self._track(message, record)
        if len(self._records) > self.capacity:
            self._forget_oldest()
        return record

    def _track(self, message: Message, record: MessageHistory) -> None:
        key = id(message)
        self._of[key] = (weakref.ref(message), record)
        record.tracked.append(key)

    def _forget_oldest(self) -> None:
        _number, old = self._records.popitem(last=False)
        self.dropped_messages += 1
        if self.forgotten is not None:
            self.forgotten(old)
        self.events -= len(old.events)
        for key in old.tracked:
            found = self._of.get(key)
            if found is not None and found[1] is old:
                del self._of[key]

    def add(self, record: MessageHistory, event: str, at: float, details: dict[str, Any]) -> None:
        """One event; ``details`` may be shared by the events of a batch (never changed afterwards)."""
        if record.number not in self._records:
            self.dropped_events += 1  # its message was forgotten already (the history is full of newer ones)
            return
        if record.add(TraceEvent(at, event, details)):
            self.events += 1
        else:
            self.dropped_events += 1

    def link(self, message: Message, record: MessageHistory) -> None:
        body = message.body
        if len(body) > _DEAD_LETTER_LINK_BYTES or id(body) in self._links:
            return
        links = self._links
        links[id(body)] = (body, record)
        self._link_bytes += len(body)
        while len(links) > _DEAD_LETTER_LINKS or self._link_bytes > _DEAD_LETTER_LINK_BYTES:
            _key, (old, _record) = links.popitem(last=False)
            self._link_bytes -= len(old)

    def records(self) -> list[MessageHistory]:
        """Every message history kept, oldest first."""
        return list(self._records.values())

    def by_message_id(self, message_id: str) -> list[MessageHistory]:
        return [record for record in self._records.values() if record.message_id == message_id]

    def by_header(self, name: str, value: str) -> list[MessageHistory]:
        out = []
        for record in self._records.values():
            found = record.headers.get(name)
            if found is not None and _text(found) == value:
                out.append(record)
        return out

    def clear(self) -> None:
        self._records.clear()
        self._of.clear()
        self._links.clear()
        self._link_bytes = 0
        self.events = 0


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _who(session: Session | None) -> tuple[str, int, str]:
    """(connection name, channel number, user) of a session, as far as its front end tells: a front end's
    connection may carry ``connection_info`` (core/connections.py) and its sink a channel ``number``."""
    if session is None:
        return "", 0, ""
    info = getattr(session.owner, "connection_info", None)
    number = getattr(session.sink, "number", 0)
    if info is None:
        return "", number if isinstance(number, int) else 0, ""
    return info.name, number if isinstance(number, int) else 0, info.user


class Tracer:
    """Tracing of one vhost (installed as ``vhost.tracer`` while on)."""

    def __init__(self, vhost: VirtualHost, node: str, capacity: int = DEFAULT_CAPACITY) -> None:
        self.vhost = vhost
        self.node = node
        self.history = History(capacity)
        self._publishing = False  # inside our own publish: the session must not trace it again
        self.firehose_published = 0

    # ---- hooks (called by the core when vhost.tracer is set) ----------------------------------------

    def wants(self, session: Session) -> bool:
        """Session.publish asks: trace this publish? (Not inside a transaction: its publishes are traced
        when tx.commit routes them; not our own re-entrant call.)"""
        return not self._publishing and session.tx is None

    def publish(self, session: Session, exchange_name: str, routing_key: str, message: Message,
                mandatory: bool, cc: tuple[str, ...] = ()) -> int:
        """Route and enqueue through the session as usual, then record the publish and copy it to the
        firehose with the queues it reached. ``cc``: the sender-selected routing keys (CC and BCC),
        recorded with the publish's own key."""
        vhost = self.vhost
        exchange = vhost.exchanges.get(exchange_name)
        # Sorted by name, as RabbitMQ's routing result (lists:usort of queue names) is.
        queues = [] if exchange is None else sorted(q.name for q in vhost.route(exchange, routing_key, message, cc))
        # The firehose's routed_queues: through the default exchange RabbitMQ 3.10 names the routing key's
        # queue whether it exists or not (seen differentially); the history says where it really went.
        keys = [routing_key, *cc]
        named = keys if exchange is vhost.default_exchange else queues
        self._publishing = True
        try:
            outcome = session.publish(exchange_name, routing_key, message, mandatory, cc)
        finally:
            self._publishing = False
        if exchange_name == TRACE_EXCHANGE:
            return outcome
        connection, channel, user = _who(session)
        record = self.history.record_for(message)
        now = vhost.clock()
        if record is not None:
            self.history.add(record, "published", now, {
                "connection": connection, "channel": channel, "user": user, "exchange": exchange_name,
                "routing_key": routing_key, "queues": queues, **({"cc": list(cc)} if cc else {})})
        if self._listened():
            self._firehose(message, f"publish.{exchange_name}", [
                ("vhost", vhost.name), ("connection", connection), ("channel", channel), ("user", user),
                ("routed_queues", named),
            ], keys)
        return outcome

    def delivered(self, session: Session, queue: Queue, entries: list[Entry], consumer_tag: str | None,
                  no_ack: bool) -> None:
        connection, channel, user = _who(session)
        now = self.vhost.clock()
        history = self.history
        listened = self._listened()
        details = {"queue": queue.name, "consumer_tag": consumer_tag, "connection": connection, "channel": channel,
                   "user": user, "redelivered": False, "no_ack": no_ack}
        again = {**details, "redelivered": True}  # one pair of details for the whole batch
        for entry in entries:
            message = entry.message
            if message.exchange == TRACE_EXCHANGE:
                continue
            record = history.record_for(message)
            if record is not None:
                history.add(record, "delivered", now, again if entry.redelivered else details)
            if listened:
                self._firehose(message, f"deliver.{queue.name}", [
                    ("redelivered", 1 if entry.redelivered else 0), ("vhost", self.vhost.name),
                    ("connection", connection), ("channel", channel), ("user", user),
                ], [message.routing_key, *sender_keys(message)])

    def settled(self, items: list[tuple[Queue, Entry, Any]], requeue: bool, rejected: bool) -> None:
        event = "requeued" if requeue else "rejected" if rejected else "acked"
        now = self.vhost.clock()
        history = self.history
        details: dict[Queue, dict[str, Any]] = {}
        for queue, entry, _consumer in items:
            record = history.record_for(entry.message, create=False)
            if record is not None:
                shared = details.get(queue)
                if shared is None:
                    shared = details[queue] = {"queue": queue.name}
                history.add(record, event, now, shared)

    def dead_lettered(self, queue: Queue, entries: list[Entry], reason: str) -> None:
        exchange = queue.policy.dead_letter_exchange
        now = self.vhost.clock()
        for entry in entries:
            record = self.history.record_for(entry.message, create=False)
            if record is None:
                continue
            if reason == "expired":
                self.history.add(record, "expired", now, {"queue": queue.name})
            if exchange is not None:
                self.history.link(entry.message, record)
                self.history.add(record, "dead_lettered", now, {
                    "queue": queue.name, "reason": reason, "dead_letter_exchange": exchange})
            elif reason != "expired":
                self.history.add(record, "dropped", now, {"queue": queue.name, "reason": reason})

    # ---- the firehose ---------------------------------------------------------------------------------

    def _listened(self) -> bool:
        """Something is bound to the firehose (with nothing bound, no trace message is built)."""
        exchange = self.vhost.exchanges.get(TRACE_EXCHANGE)
        return exchange is not None and bool(exchange.bindings)

    def _firehose(
        self, message: Message, routing_key: str, extra: list[tuple[str, Any]], keys: list[str] | None = None
    ) -> None:
        """One trace message; ``keys``: the publish's routing keys, CC and BCC included, as rabbit_trace
        names them (default: the message's own key)."""
        vhost = self.vhost
        exchange = vhost.exchanges[TRACE_EXCHANGE]
        codec = vhost.codecs.default or message.codec
        headers: dict[str, Any] = {
            "exchange_name": message.exchange,
            "routing_keys": keys or [message.routing_key],
            "properties": self._properties_table(message),
            "node": self.node,
        }
        headers.update(extra)
        # A codec may build a headers-only block (AMQP 0-9-1's does: RabbitMQ sets no delivery mode on trace
        # messages); any other gets the neutral encoding.
        headers_only = getattr(codec, "headers_only", None)
        raw = headers_only(headers) if headers_only is not None else codec.encode(Properties(headers=headers), False)
        copy = Message(TRACE_EXCHANGE, routing_key, raw, message.body, False, codec)
        for queue in vhost.route(exchange, routing_key, copy):
            vhost.enqueue(queue, copy)
        self.firehose_published += 1

    @staticmethod
    def _properties_table(message: Message) -> dict[str, Any]:
        """The message's set properties as a table, as rabbit_trace:msg_to_table writes them."""
        decoded = message.decoded()
        table: dict[str, Any] = {}
        for name in _PROPERTY_NAMES:
            value = getattr(decoded, name)
            if value is not None and not (name == "headers" and not value):
                table[name] = value
        if message.persistent:
            table["delivery_mode"] = 2
        return table

    # ---- reading ----------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        history = self.history
        return {
            "capacity": history.capacity,
            "messages": len(history),
            "events": history.events,
            "dropped_messages": history.dropped_messages,
            "dropped_events": history.dropped_events,
        }


def enable(vhost: VirtualHost, node: str, capacity: int = DEFAULT_CAPACITY) -> Tracer:
    tracer = vhost.tracer
    if tracer is None:
        tracer = vhost.tracer = Tracer(vhost, node, capacity)
    return tracer


def disable(vhost: VirtualHost) -> None:
    vhost.tracer = None
