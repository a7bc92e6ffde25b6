"""Drive mailslot's broker core by hand: no sockets, no event loop, no sleeping.

:class:`CoreHarness` holds one core :class:`~mailslot.core.broker.Broker` on a :class:`FakeClock` and
does what the transport does around it, one explicit call at a time:

* ``flush()``: the end of an event-loop turn (dispatch to consumers, one commit, confirms released);
* ``advance(seconds)``: time passes once, then a timer tick and a flush (TTL, delays, timeouts);
* ``run(seconds)``: time passes in timer ticks (``TICK_SECONDS``), a tick and a flush after each,
  as a running broker sees it;
* ``restart(downtime)``: a graceful stop and a start on the same stores (recovery runs);
* ``crash(downtime)``: a ``kill -9`` and a start: what was staged but not committed is lost.

Deliveries land in a :class:`RecordingSink` per session. The harness is protocol-neutral: it takes
message properties as the codec's encoded bytes (by default the neutral JSON codec,
``mailslot.testing.codec.JSON_CODEC.block(headers=..., priority=...)``) and never parses them itself. See docs/testing.md ("Testing the core").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailslot.testing.clock import FakeClock

if TYPE_CHECKING:
    from mailslot.core.broker import Broker
    from mailslot.core.message import Entry, Message, PropertiesCodec
    from mailslot.core.outcome import Outcome
    from mailslot.core.session import Session
    from mailslot.core.vhost import VirtualHost
    from mailslot.storage.api import MessageLog, MetadataStore

    StoreOpener = Callable[[], tuple[MessageLog, MetadataStore]]

# A realistic wall-clock time (2023-11-14): message deadlines are ms since the epoch and x-death
# carries a timestamp, so a clock starting at 0 would hide what a real clock shows.
START = 1_700_000_000.0

# The default codec's "no properties" (JSON_CODEC reads empty bytes as no property set). Pass a codec's
# own encoding where another codec is used (AMQP 0-9-1: b"\x00\x00").
NO_PROPERTIES = b""

_BROKER_DEFAULT: Any = object()  # sentinel: the broker's own default consumer timeout


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message the core handed to a consumer, as it was at that moment."""

    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    requeues: int  # failed deliveries before this one (x-delivery-count), snapshot at delivery
    entry: Entry

    @property
    def message(self) -> Message:
        return self.entry.message

    @property
    def body(self) -> bytes:
        return self.entry.message.body


class RecordingSink:
    """A :class:`~mailslot.core.session.DeliverySink` that records what the core hands its front end."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.cancelled: list[str] = []  # consumer tags the broker cancelled
        self.timed_out: list[int] = []  # consumer timeouts (ms) that closed the session

    def deliver_many(self, consumer_tag: str, first_tag: int, entries: list[Entry]) -> None:
        for i, entry in enumerate(entries):
            self.deliveries.append(
                Delivery(consumer_tag, first_tag + i, entry.redelivered, entry.requeues, entry)
            )

    def consumer_cancelled(self, consumer_tag: str) -> None:
        self.cancelled.append(consumer_tag)

    def acknowledgement_timed_out(self, timeout_ms: int) -> None:
        self.timed_out.append(timeout_ms)

    def bodies(self) -> list[bytes]:
        return [d.body for d in self.deliveries]

    def last_tag(self) -> int:
        """The delivery tag of the latest delivery (AssertionError when there was none)."""
        assert self.deliveries, "nothing was delivered"
        return self.deliveries[-1].delivery_tag


def memory_stores() -> StoreOpener:
    """An opener for one pair of in-memory stores: every call returns the same pair, so a restart
    finds what was committed (the memory store keeps its data through ``close``)."""
    from mailslot.storage.memory import MemoryMessageLog, MemoryMetadataStore

    pair = (MemoryMessageLog(), MemoryMetadataStore())
    return lambda: pair


class CoreHarness:
    """A core broker on a fake clock, one default session, and the transport's duties as methods.

    ``stores`` opens the message log and metadata store (called again by ``restart``/``crash``; a
    durable store reopens its files, e.g. ``lambda: open_segment_store(tmp_path)``); in-memory stores
    by default. ``codec`` reads the encoded properties (the neutral JSON codec by default).
    ``consumer_timeout_ms`` is the broker's unless given (None: no timeout). ``clock`` starts at
    :data:`START` unless given; it is kept through restarts.
    """

    def __init__(
        self,
        stores: StoreOpener | None = None,
        *,
        clock: FakeClock | None = None,
        codec: PropertiesCodec | None = None,
        consumer_timeout_ms: int | None = _BROKER_DEFAULT,
        vhosts: tuple[str, ...] = ("/",),
    ) -> None:
        if codec is None:
            from mailslot.testing.codec import JSON_CODEC

            codec = JSON_CODEC
        self.codec: PropertiesCodec = codec
        self.clock = clock if clock is not None else FakeClock(START)
        self._open_stores = stores if stores is not None else memory_stores()
        self._consumer_timeout_ms = consumer_timeout_ms
        self._vhosts = vhosts
        self.start()

    # ---- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the stores, build the broker, recover what they hold, open the default session."""
        from mailslot.core.broker import Broker

        self.log, self.meta = self._open_stores()
        options: dict[str, Any] = {}
        if self._consumer_timeout_ms is not _BROKER_DEFAULT:
            options["consumer_timeout_ms"] = self._consumer_timeout_ms
        self.broker: Broker = Broker(self.log, self.meta, [self.codec], self._vhosts, self.clock, **options)
        self.broker.recover()
        self.vhost: VirtualHost = self.broker.vhosts[self._vhosts[0]]
        self.session, self.sink = self.open()

    def restart(self, downtime: float = 0.0) -> None:
        """A graceful stop (one last flush, stores closed), ``downtime`` seconds on the clock, and a
        start on the same stores."""
        self.broker.close()
        self.clock.advance(downtime)
        self.start()

    def crash(self, downtime: float = 0.0) -> None:
        """A ``kill -9`` and a start: staged, uncommitted writes are lost, committed ones recovered.

        Only for the default in-memory stores; durable stores are crash-tested for real in
        tests/durability (a broker process killed with SIGKILL)."""
        drop_staged = getattr(self.log, "drop_staged", None)
        if drop_staged is None:
            raise TypeError(
                f"crash() needs a store that can drop its staged writes, not {type(self.log).__name__}"
            )
        drop_staged()
        self.clock.advance(downtime)
        self.start()

    def close(self) -> None:
        self.broker.close()

    # ---- what the transport does ----------------------------------------------------------------

    def flush(self) -> None:
        """The end of a turn: dispatch, one commit, waiters released."""
        self.broker.flush()

    def advance(self, seconds: float) -> None:
        """Time passes at once, then one timer tick and a flush."""
        self.clock.advance(seconds)
        self.broker.tick()
        self.broker.flush()

    def run(self, seconds: float, step: float | None = None) -> None:
        """Time passes as a running broker sees it: a tick and a flush every ``step`` (the broker's
        timer resolution by default)."""
        if step is None:
            from mailslot.core.broker import TICK_SECONDS

            step = TICK_SECONDS
        for _ in range(round(seconds / step)):
            self.advance(step)

    # ---- sessions and definitions ---------------------------------------------------------------

    def open(self, owner: object | None = None) -> tuple[Session, RecordingSink]:
        """Another session (a channel) with its own sink; ``owner`` is its connection (a new one by default)."""
        from mailslot.core.session import Gate

        sink = RecordingSink()
        session = self.broker.open_session(self.vhost, owner if owner is not None else object(), sink, Gate())
        return session, sink

    def declare(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        passive: bool = False,
        owner: object | None = None,
    ) -> str:
        """Declare a queue (durable by default) owned by ``owner`` (the default session's connection
        unless given); returns its name (the generated one for ``""``)."""
        queue = self.vhost.declare_queue(
            name,
            passive=passive,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            arguments=arguments or {},
            owner=self.session.owner if owner is None else owner,
        )
        return queue.name

    def declare_exchange(
        self,
        name: str,
        type_: str,
        arguments: dict[str, Any] | None = None,
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
    ) -> None:
        self.vhost.declare_exchange(
            name,
            type_,
            passive=False,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            arguments=arguments or {},
        )

    def bind(
        self, exchange: str, queue: str, routing_key: str = "", arguments: dict[str, Any] | None = None
    ) -> None:
        """Bind ``queue`` to ``exchange``."""
        self.vhost.bind(exchange, ("queue", queue), routing_key, arguments or {}, self.session.owner)

    # ---- messages ---------------------------------------------------------------------------------

    def message(
        self,
        routing_key: str,
        body: bytes,
        properties: bytes = NO_PROPERTIES,
        *,
        exchange: str = "",
        persistent: bool = True,
        ttl: int | None = None,
    ) -> Message:
        """A message as a front end builds it: ``properties`` encoded, ``persistent`` and ``ttl`` (ms,
        the per-message TTL) given as the front end read them."""
        from mailslot.core.message import Message

        return Message(exchange, routing_key, properties, body, persistent, self.codec, ttl)

    def publish(
        self,
        routing_key: str,
        body: bytes,
        properties: bytes = NO_PROPERTIES,
        *,
        exchange: str = "",
        persistent: bool = True,
        ttl: int | None = None,
        mandatory: bool = False,
        session: Session | None = None,
        flush: bool = False,
    ) -> Outcome:
        """Publish through ``session`` (the default one); the outcome (UNROUTED, ROUTED, REJECTED).
        ``flush``: end the turn afterwards, as the transport would after this one publish."""
        message = self.message(
            routing_key, body, properties, exchange=exchange, persistent=persistent, ttl=ttl
        )
        outcome = (session or self.session).publish(exchange, routing_key, message, mandatory)
        if flush:
            self.broker.flush()
        return outcome

    def get(self, queue: str, session: Session | None = None) -> Message | None:
        """One basic.get with auto-ack (then a flush); None when the queue is empty."""
        found = (session or self.session).get(queue, no_ack=True)
        self.broker.flush()
        return None if found is None else found[1].message

    def drain(self, queue: str, session: Session | None = None) -> list[bytes]:
        """The bodies of every message ``queue`` hands out now (basic.get, auto-ack), then a flush."""
        got = []
        take = (session or self.session).get
        while (found := take(queue, no_ack=True)) is not None:
            got.append(found[1].message.body)
        self.broker.flush()
        return got

    def count(self, queue: str) -> int:
        """Messages waiting in ``queue`` (ready, paged out and held for a retry delay; not the unacknowledged)."""
        return self.vhost.queue(queue).message_count


class ArgumentOverrides:
    """An ArgumentSource standing in for policies in core tests: per queue (or exchange) name, arguments
    laid over the declared ones. ``set_queue`` changes one and lets the broker reconfigure live queues."""

    def __init__(self) -> None:
        self.queues: dict[str, dict[str, Any]] = {}
        self.exchanges: dict[str, dict[str, Any]] = {}
        self.asked: list[str] = []  # queue names in the order the broker asked for them

    def queue_arguments(self, vhost: str, name: str, declared: dict[str, Any]) -> dict[str, Any]:
        self.asked.append(name)
        return {**declared, **self.queues.get(name, {})}

    def exchange_arguments(self, vhost: str, name: str, declared: dict[str, Any]) -> dict[str, Any]:
        return {**declared, **self.exchanges.get(name, {})}

    def set_queue(self, harness: CoreHarness, name: str, arguments: dict[str, Any] | None) -> None:
        """Lay ``arguments`` over queue ``name`` (None: lift them), then apply it as a policy change would."""
        if arguments is None:
            self.queues.pop(name, None)
        else:
            self.queues[name] = arguments
        harness.broker.arguments_changed("/")
        harness.flush()
