"""The protocol-neutral message container and its per-queue entry.

Modelled on RabbitMQ 3.13's ``mc`` (message container, one ``mc_*`` module per protocol): a
:class:`Message` keeps the properties as the publishing protocol encoded them (``properties``, opaque
bytes) together with the :class:`PropertiesCodec` that can read them (``codec``). The core never parses
property bytes itself; it asks the message (``message.headers``, ``message.priority``, ...), which asks
its codec, and only on the paths that need it (headers exchanges, priority queues, dead-lettering,
deduplication, delays).

A front end that delivers a message asks for the properties in its own encoding with
:meth:`Message.properties_for`: when the message was published in that encoding (AMQP 0-9-1 to AMQP
0-9-1) the bytes are returned as they are, with no decode; otherwise they are converted once through the
neutral :class:`Properties`. An SQS or MQTT front end reads what it needs through the same container API
(headers, content type, message id, correlation id, expiration, persistent, ...).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..storage.api import DEFAULT_CODEC


@dataclass(slots=True)
class Properties:
    """The message properties every protocol can be asked for: the pivot of a conversion between two
    codecs. ``None`` is "absent". Persistence is the message's own (``Message.persistent``)."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None  # per-message TTL in ms, as text (AMQP 0-9-1's form)
    message_id: str | None = None
    timestamp: datetime.datetime | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None


class PropertiesCodec(Protocol):
    """Reads and rewrites one protocol's encoded message properties (RabbitMQ's ``mc_amqpl`` and
    friends). A front end provides one; the broker is given every front end's codec (see :class:`Codecs`).

    Readers never raise on malformed bytes (they are the peer's): they read as absent. The rewriting
    methods raise ValueError when ``raw`` does not parse.
    """

    @property
    def name(self) -> str:
        """Stable name, stored with each durable message (``StoredMessage.codec``): never change it."""

    def headers(self, raw: bytes) -> dict[str, Any] | None:
        """The application headers, or None when absent or unreadable."""

    def header(self, raw: bytes, name: str) -> Any:
        """One header's value, None when absent or unreadable (without decoding the whole table)."""

    def priority(self, raw: bytes) -> int:
        """The message priority (0 when absent): read only for queues with x-max-priority."""

    def expiration(self, raw: bytes) -> str | None:
        """The per-message TTL as the publisher wrote it, or None."""

    def message_id(self, raw: bytes) -> str | None:
        """The message id (deduplication by message id); None when absent or unreadable."""

    def decode(self, raw: bytes) -> Properties:
        """Every property (a conversion to another codec, management); unreadable ones are absent."""

    def encode(self, properties: Properties, persistent: bool) -> bytes:
        """The encoded form of ``properties`` (a message converted from another codec)."""

    def with_headers(self, raw: bytes, headers: dict[str, Any]) -> bytes:
        """The same properties with these headers and no ``expiration`` (a dead-lettered copy
        must not expire again on the way, as in RabbitMQ)."""

    def with_int_header(self, raw: bytes, name: str, value: int) -> bytes:
        """The same properties with one integer header set and nothing else changed (x-delay,
        x-delivery-count); ValueError when ``raw`` does not parse."""


class UnknownCodec(LookupError):
    """A stored message names a codec no configured front end provides (it cannot be read)."""


class Codecs:
    """The codecs the broker knows, by name: how messages read back from the store are rebuilt."""

    __slots__ = ("_by_name",)

    def __init__(self, codecs: Iterable[PropertiesCodec]) -> None:
        self._by_name: dict[str, PropertiesCodec] = {}
        for codec in codecs:
            if codec.name in self._by_name:
                raise ValueError(f"two codecs are named {codec.name!r}")
            self._by_name[codec.name] = codec
        if not self._by_name:
            raise ValueError("the broker needs at least one properties codec")

    @property
    def default(self) -> PropertiesCodec | None:
        """The codec a stored message names when it names none (storage.api.DEFAULT_CODEC), if known."""
        return self._by_name.get(DEFAULT_CODEC)

    def __getitem__(self, name: str) -> PropertiesCodec:
        codec = self._by_name.get(name)
        if codec is None:
            raise UnknownCodec(f"stored message properties are encoded by {name!r}, which no front end provides "
                               f"(known: {', '.join(self._by_name)})")
        return codec

    def __iter__(self) -> Any:
        return iter(self._by_name.values())


class Message:
    """One published message: routing information, the body, and the properties as their protocol encoded
    them (``properties``, read through ``codec``). Shared by every queue it was routed to: never mutated."""

    # __weakref__: tracing (core/tracing.py) follows a message without keeping it alive. ``cc``: set only on
    # a message published with sender-selected routing keys (CC and BCC): read it with ``routing.sender_keys``.
    __slots__ = (
        "__weakref__", "_headers", "body", "cc", "codec", "exchange", "persistent", "properties", "routing_key", "ttl"
    )
    cc: tuple[str, ...]

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        properties: bytes,
        body: bytes,
        persistent: bool,
        codec: PropertiesCodec,
        ttl: int | None = None,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
        self.persistent = persistent
        self.codec = codec
        self._headers: dict[str, Any] | None = None  # decoded on first use
        self.ttl = ttl  # per-message TTL in ms (AMQP ``expiration``), None when it has none (core/ttl.py)

    @property
    def size(self) -> int:
        return len(self.body)

    # ---- the container API: what a front end of another protocol (or the core) may ask --------------

    @property
    def headers(self) -> dict[str, Any]:
        """Decoded on first use only (headers exchanges are rare on the hot path)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = self.codec.headers(self.properties) or {}
        return headers

    def header(self, name: str) -> Any:
        """One header's value (None when absent), without decoding the whole table."""
        if self._headers is not None:
            return self._headers.get(name)
        return self.codec.header(self.properties, name)

    @property
    def priority(self) -> int:
        return self.codec.priority(self.properties)

    @property
    def expiration(self) -> str | None:
        return self.codec.expiration(self.properties)

    @property
    def message_id(self) -> str | None:
        return self.codec.message_id(self.properties)

    def decoded(self) -> Properties:
        """Every property, decoded (not cached: the slow path of conversions and management)."""
        return self.codec.decode(self.properties)

    @property
    def content_type(self) -> str | None:
        return self.decoded().content_type

    @property
    def correlation_id(self) -> str | None:
        return self.decoded().correlation_id

    @property
    def reply_to(self) -> str | None:
        return self.decoded().reply_to

    def properties_for(self, codec: PropertiesCodec) -> bytes:
        """The properties in ``codec``'s encoding: the stored bytes themselves when the message was
        published in it (no decode), else converted once through :class:`Properties`."""
        if codec is self.codec or codec.name == self.codec.name:
            return self.properties
        return codec.encode(self.codec.decode(self.properties), self.persistent)

    # ---- rewriting (dead-lettering, delays): a new property block in the message's own codec ---------

    def with_headers(self, headers: dict[str, Any]) -> bytes:
        return self.codec.with_headers(self.properties, headers)

    def with_int_header(self, name: str, value: int) -> bytes:
        return self.codec.with_int_header(self.properties, name, value)


class Entry:
    """A message's place in one queue: ``seq`` orders the queue and survives requeues and restarts."""

    __slots__ = ("deadline", "message", "redelivered", "requeues", "seq", "stored")

    def __init__(
        self, seq: int, message: Message, redelivered: bool, stored: bool, deadline: int = 0, requeues: int = 0
    ) -> None:
        self.seq = seq
        self.message = message
        self.redelivered = redelivered
        self.stored = stored  # a row exists in the message log (remove it on ack)
        self.deadline = deadline  # expiry in ms since the epoch, 0: never (core/ttl.py); kept across requeues
        # Failed deliveries so far (nack/reject with requeue, requeued on close): x-delivery-limit and the
        # x-delivery-count header. Kept by the log as StoredMessage.requeues, so it survives a restart.
        self.requeues = requeues

    def __lt__(self, other: Entry) -> bool:  # requeued entries sit in a heap ordered by seq
        return self.seq < other.seq
