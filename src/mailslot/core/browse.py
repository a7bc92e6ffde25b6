"""Browsing a queue: its ready messages in delivery order, looked at and left where they are.

Rules of this module:

* Browsing changes nothing: no message is popped, marked redelivered, counted as delivered or paged into
  the queue's memory window. Messages paged to disk are read from the log's committed rows
  (``Queue.peek``), so a browse of a deep queue costs one bounded read.
* A message is named by its ``id``: its ``seq`` in the queue, which stays the same while it waits there
  (requeues keep it, restarts keep it). A redrive (core/redrive.py) selects messages by these ids.
* Dead-letter filters read the ``x-death`` history RabbitMQ writes (https://www.rabbitmq.com/docs/dlx): the
  newest death is the first entry; ``x-first-death-*`` name the first one.
* A filtered browse looks at no more than ``scan`` messages from the head (``SCAN_LIMIT`` by default): the
  answer says how many it looked at, and whether it stopped short of the queue's end.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .message import Entry, Message
from .queue import Queue
from .vhost import VirtualHost

# Messages one filtered browse (or a redrive's selection) looks at from the head: every one is read into
# memory for the request (a paged one from the log), so the bound is what one request may cost: 100,000
# messages of 1 KiB is 100 MiB read once. A redrive of more runs again on what is left.
SCAN_LIMIT = 100_000
REASONS = ("rejected", "expired", "maxlen", "delivery_limit")


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _seconds(value: Any) -> float | None:
    """A timestamp as seconds since the epoch (AMQP timestamps decode as datetimes, JSON ones as numbers)."""
    if isinstance(value, datetime.datetime):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
        return stamp.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class Death:
    """One entry of ``x-death``: the message died ``count`` times in ``queue`` for ``reason``."""

    queue: str
    reason: str
    count: int
    time: float | None
    exchange: str
    routing_keys: tuple[str, ...]

    def document(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "reason": self.reason,
            "count": self.count,
            "time": self.time,
            "exchange": self.exchange,
            "routing_keys": list(self.routing_keys),
        }


def deaths(headers: Mapping[str, Any] | None) -> list[Death]:
    """The ``x-death`` history, newest first; entries that are not tables are skipped (a peer wrote them)."""
    out: list[Death] = []
    for item in (headers or {}).get("x-death") or []:
        if not isinstance(item, Mapping):
            continue
        keys = item.get("routing-keys") or []
        count = item.get("count", 0)
        out.append(
            Death(
                queue=_text(item.get("queue", "")),
                reason=_text(item.get("reason", "")),
                count=count if isinstance(count, int) and not isinstance(count, bool) else 0,
                time=_seconds(item.get("time")),
                exchange=_text(item.get("exchange", "")),
                routing_keys=tuple(_text(k) for k in keys) if isinstance(keys, (list, tuple)) else (),
            )
        )
    return out


def original_destination(message: Message) -> tuple[str, str] | None:
    """Where a dead-lettered message came from, as (exchange, routing key) that reach that queue again:
    the default exchange and the queue of its newest death (RabbitMQ's shovel "move messages" does the
    same); None when it carries no ``x-death``."""
    history = deaths(message.headers)
    if not history or not history[0].queue:
        return None
    return "", history[0].queue


def message_age(message: Message, now: float) -> float | None:
    """Seconds since it was dead-lettered (newest death), else since its ``timestamp`` property."""
    history = deaths(message.headers)
    stamp = history[0].time if history else None
    if stamp is None:
        stamp = _seconds(message.decoded().timestamp)
    return None if stamp is None else max(0.0, now - stamp)


@dataclass(frozen=True, slots=True)
class Filter:
    """Which messages to show or move; every criterion given must hold (AND). Empty: all messages."""

    reason: str | None = None  # of the newest death
    source_queue: str | None = None  # the queue of any death
    header: tuple[str, str] | None = None  # (name, value): the header's value as text equals value
    min_age: float | None = None  # seconds, see message_age
    max_age: float | None = None
    body: str | None = None  # case-insensitive text in the body (decoded as UTF-8, bad bytes replaced)

    @property
    def empty(self) -> bool:
        return self == Filter()

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> Filter:
        """From query parameters or a JSON object; ValueError with a message for the caller's mistakes."""
        header = values.get("header")
        pair: tuple[str, str] | None = None
        if header is not None:
            if not isinstance(header, str) or "=" not in header:
                raise ValueError("header: expected NAME=VALUE")
            name, _, value = header.partition("=")
            pair = (name, value)
        reason = values.get("reason")
        if reason is not None and reason not in REASONS:
            raise ValueError(f"reason: expected one of {', '.join(REASONS)}, got {reason!r}")
        return cls(
            reason=reason,
            source_queue=_optional_text(values, "source_queue"),
            header=pair,
            min_age=_optional_seconds(values, "min_age"),
            max_age=_optional_seconds(values, "max_age"),
            body=_optional_text(values, "body"),
        )

    def matches(self, message: Message, now: float) -> bool:
        if self.reason is not None or self.source_queue is not None:
            history = deaths(message.headers)
            if self.reason is not None and (not history or history[0].reason != self.reason):
                return False
            if self.source_queue is not None and all(d.queue != self.source_queue for d in history):
                return False
        if self.header is not None:
            name, value = self.header
            found = message.header(name)
            if found is None or _text(found) != value:
                return False
        if self.min_age is not None or self.max_age is not None:
            age = message_age(message, now)
            if age is None:
                return False
            if (self.min_age is not None and age < self.min_age) or (self.max_age is not None and age > self.max_age):
                return False
        return self.body is None or self.body.lower() in _text(message.body).lower()


def _optional_text(values: Mapping[str, Any], name: str) -> str | None:
    value = values.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name}: expected a string, got {value!r}")
    return value


def _optional_seconds(values: Mapping[str, Any], name: str) -> float | None:
    value = values.get(name)
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number of seconds, got {value!r}") from None
    if not seconds >= 0:  # also refuses NaN
        raise ValueError(f"{name}: expected a number of seconds >= 0, got {value!r}")
    return seconds


@dataclass(slots=True)
class Page:
    """One page of a browse: ``items`` are (position from the head, entry)."""

    items: list[tuple[int, Entry]] = field(default_factory=list)
    scanned: int = 0  # messages looked at from the head
    matched: int = 0  # of those, how many the filter took
    partial: bool = False  # the scan stopped at its limit before the queue's end


def scan(queue: Queue, now: float, limit: int = SCAN_LIMIT) -> list[Entry]:
    """Up to ``limit`` ready entries from the head, in delivery order, left in place."""
    return queue.peek(limit, int(now * 1000) if queue.expiring else 0)


def browse(
    queue: Queue, now: float, *, offset: int = 0, limit: int = 50, where: Filter | None = None,
    scan_limit: int = SCAN_LIMIT,
) -> Page:
    """``limit`` messages from the ``offset``-th match on (without a filter: positions offset...)."""
    where = where if where is not None and not where.empty else None
    page = Page()
    if where is None:
        entries = scan(queue, now, offset + limit)
        page.scanned = page.matched = len(entries)
        page.items = list(enumerate(entries))[offset:]
        return page
    entries = scan(queue, now, scan_limit)
    page.scanned = len(entries)
    page.partial = len(entries) >= scan_limit and queue.message_count > scan_limit
    for position, entry in enumerate(entries):
        if where.matches(entry.message, now):
            if offset <= page.matched < offset + limit:
                page.items.append((position, entry))
            page.matched += 1
    return page


def select(queue: Queue, now: float, *, ids: Iterable[int] | None, where: Filter | None, limit: int | None,
           scan_limit: int = SCAN_LIMIT) -> list[Entry]:
    """The entries a redrive would move: those named by ``ids`` (and matching ``where``, if given), or
    every one matching ``where`` within the scan; at most ``limit``."""
    wanted = None if ids is None else set(ids)
    chosen = []
    for entry in scan(queue, now, scan_limit):
        if wanted is not None and entry.seq not in wanted:
            continue
        if where is not None and not where.matches(entry.message, now):
            continue
        chosen.append(entry)
        if limit is not None and len(chosen) >= limit:
            break
    return chosen


# ---- dead-letter queues ----------------------------------------------------------------------------------


def dead_letter_sources(vhost: VirtualHost) -> dict[str, list[str]]:
    """Dead-letter queues of a vhost: queue name -> the queues whose dead-letter exchange routes there
    (with their x-dead-letter-routing-key, or any key of the exchange's bindings when they have none)."""
    out: dict[str, list[str]] = {}
    for source in vhost.queues.values():
        name = source.policy.dead_letter_exchange
        if name is None or source.deleted:
            continue
        exchange = vhost.exchanges.get(name)
        if exchange is None:
            continue
        key = source.policy.dead_letter_routing_key
        if key is not None or exchange is vhost.default_exchange:
            probe = Message(name, key or "", b"", b"", False, vhost.codecs.default or next(iter(vhost.codecs)))
            targets = [q.name for q in vhost.route(exchange, key or "", probe)]
        else:
            targets = [dest for (kind, dest), _key, _args in exchange.bindings if kind == "queue"]
        for target in targets:
            sources = out.setdefault(target, [])
            if source.name not in sources:
                sources.append(source.name)
    return out


@dataclass(slots=True)
class DeadLetterSummary:
    scanned: int
    by_reason: dict[str, int]
    by_source: dict[str, int]
    oldest_death: float | None
    newest_death: float | None


def summarize(queue: Queue, now: float, scan_limit: int = SCAN_LIMIT) -> DeadLetterSummary:
    """Reasons and source queues of the newest deaths of the first ``scan_limit`` messages."""
    by_reason: dict[str, int] = {}
    by_source: dict[str, int] = {}
    times: list[float] = []
    entries = scan(queue, now, scan_limit)
    for entry in entries:
        history = deaths(entry.message.headers)
        if not history:
            by_reason["none"] = by_reason.get("none", 0) + 1
            continue
        newest = history[0]
        by_reason[newest.reason] = by_reason.get(newest.reason, 0) + 1
        by_source[newest.queue] = by_source.get(newest.queue, 0) + 1
        if newest.time is not None:
            times.append(newest.time)
    return DeadLetterSummary(len(entries), by_reason, by_source, min(times, default=None), max(times, default=None))


def json_body(body: bytes, content_type: str | None) -> Any:
    """The body parsed as JSON when it is JSON (by content type, or by its first byte), else None."""
    head = body.lstrip()[:1]
    if not (content_type and "json" in content_type) and head not in (b"{", b"["):
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
