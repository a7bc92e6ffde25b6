"""The message log's key namespace: which queue, lane or feature a row belongs to.

Every key the core hands the message log is a :class:`StoreKey` (kind, vhost, name, sub-key) encoded
by :func:`encode` and read back at start-up by :func:`decode`; recovery dispatches on ``kind`` to the
feature that owns the key (core/featureset.py). Nothing else builds or parses key strings.

Encoding (stable on disk; data directories written before this module read back unchanged):

* When neither the vhost nor the name holds a NUL and the vhost is not empty, the *legacy form*:
  ``vhost NUL name`` for a queue, ``vhost NUL name NUL "p" level`` for a priority lane and
  ``vhost NUL NUL kind NUL name`` for a feature's rows (``dedup-queue``, ``dedup-exchange``,
  ``delayed``).
* Otherwise the *typed form*: ``NUL`` followed by the JSON array ``[kind, vhost, name, sub]``. A
  legacy key never starts with NUL (its vhost is not empty), so the two cannot be confused, and a
  queue named ``"\\x00dedup-queue\\x00x"`` or ``"a\\x00p1"`` gets a typed key instead of colliding
  with a feature's or a lane's key, as it did when keys were concatenated strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

QUEUE = "queue"
LANE = "lane"  # a priority level's rows; sub = the level
DEDUP_QUEUE = "dedup-queue"
DEDUP_EXCHANGE = "dedup-exchange"
DELAYED = "delayed"
UNKNOWN = "unknown"  # a key no kind claims (recovery purges its rows)

_FEATURE_KINDS = frozenset({DEDUP_QUEUE, DEDUP_EXCHANGE, DELAYED})
_TYPED = "\x00"
_LANE_TAG = "p"


@dataclass(frozen=True, slots=True)
class StoreKey:
    kind: str
    vhost: str
    name: str
    sub: str = ""

    def encode(self) -> str:
        return encode(self)


def encode(key: StoreKey) -> str:
    kind, vhost, name, sub = key.kind, key.vhost, key.name, key.sub
    if vhost and "\x00" not in vhost and "\x00" not in name and "\x00" not in sub:
        if kind == QUEUE and not sub:
            return f"{vhost}\x00{name}"
        if kind == LANE and sub.isdigit():
            return f"{vhost}\x00{name}\x00{_LANE_TAG}{sub}"
        if kind in _FEATURE_KINDS and not sub:
            return f"{vhost}\x00\x00{kind}\x00{name}"
    return _TYPED + json.dumps([kind, vhost, name, sub], ensure_ascii=False, separators=(",", ":"))


def decode(text: str) -> StoreKey:
    """The key ``text`` names; kind ``UNKNOWN`` for what no encoder writes."""
    if text.startswith(_TYPED):
        try:
            kind, vhost, name, sub = json.loads(text[1:])
        except (ValueError, TypeError):
            return StoreKey(UNKNOWN, "", text)
        if all(isinstance(part, str) for part in (kind, vhost, name, sub)):
            return StoreKey(kind, vhost, name, sub)
        return StoreKey(UNKNOWN, "", text)
    vhost, separator, rest = text.partition("\x00")
    if not separator:
        return StoreKey(UNKNOWN, "", text)
    if rest.startswith("\x00"):
        kind, separator, name = rest[1:].partition("\x00")
        if separator and kind in _FEATURE_KINDS:
            return StoreKey(kind, vhost, name)
        return StoreKey(UNKNOWN, vhost, text)
    name, separator, tail = rest.partition("\x00")
    if not separator:
        return StoreKey(QUEUE, vhost, name)
    level = tail[len(_LANE_TAG) :]
    if tail.startswith(_LANE_TAG) and level.isdigit():
        return StoreKey(LANE, vhost, name, level)
    return StoreKey(UNKNOWN, vhost, text)


def queue_key(vhost: str, name: str) -> str:
    return encode(StoreKey(QUEUE, vhost, name))


def lane_key(vhost: str, name: str, level: int) -> str:
    return encode(StoreKey(LANE, vhost, name, str(level)))


def feature_key(kind: str, vhost: str, name: str) -> str:
    return encode(StoreKey(kind, vhost, name))
