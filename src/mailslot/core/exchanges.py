"""Exchanges and routing: direct, fanout, topic and headers, as RabbitMQ routes.

An exchange maps (routing key, message) to a set of *destinations*: queues or, for
exchange-to-exchange bindings, other exchanges (the vhost follows those, guarding cycles).
Routing is the publish hot path, so each type keeps the index that answers its question in one
lookup: a dict for direct, a set for fanout, a word trie plus a per-key cache for topic.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .dedup import EXCHANGE_TYPE as DEDUP_EXCHANGE_TYPE
from .dedup import DedupWindow
from .errors import PreconditionFailed

# A destination is ("queue" | "exchange", name); bindings are (destination, routing key, arguments key).
Destination = tuple[str, str]
BindingKey = tuple[Destination, str, str]

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")


class Exchange:
    """Base: keeps the bindings; subclasses keep their own routing index."""

    type = ""

    def __init__(
        self,
        name: str,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = arguments or {}
        # As declared, combined with policies (core/argument_source.py); the vhost keeps it current.
        # Setting it also sets ``alternate``, so routing reads one attribute (core/routing.py).
        self.effective_arguments = self.arguments
        self.bindings: dict[BindingKey, dict[str, Any]] = {}
        # Publishes into this exchange and the queue deliveries they made (RabbitMQ's publish_in and
        # publish_out), for the management API; the default exchange's fast path does not count them.
        self.stats_in = 0
        self.stats_out = 0
        # Set when another node decides where this exchange's publishes go (mailslot.cluster: the owner of
        # a deduplicating exchange's window): ``remote.publish(exchange, message) -> bool`` hands them over.
        self.remote: Any = None

    @property
    def effective_arguments(self) -> dict[str, Any]:
        return self._effective_arguments

    @effective_arguments.setter
    def effective_arguments(self, arguments: dict[str, Any]) -> None:
        self._effective_arguments = arguments
        alternate = arguments.get("alternate-exchange")
        if isinstance(alternate, bytes):
            alternate = alternate.decode(errors="replace")
        # The alternate exchange (https://www.rabbitmq.com/docs/ae): the exchange argument or the policy
        # key, as core/policies.py merged them. A value that is no string is ignored, as RabbitMQ does.
        self.alternate: str | None = alternate if isinstance(alternate, str) else None

    def kept(self, message: Any) -> bool:
        """Did the last ``route`` of ``message`` find no destination because this exchange kept it (a
        delayed message scheduled, a duplicate dropped)? Then it is not unroutable: no alternate exchange."""
        return False

    def bind(self, destination: Destination, routing_key: str, arguments: dict[str, Any], args_key: str) -> bool:
        key = (destination, routing_key, args_key)
        if key in self.bindings:
            return False
        self.bindings[key] = arguments
        self._index_add(destination, routing_key, arguments)
        return True

    def unbind(self, destination: Destination, routing_key: str, args_key: str) -> bool:
        key = (destination, routing_key, args_key)
        arguments = self.bindings.pop(key, None)
        if arguments is None:
            return False
        self._index_remove(destination, routing_key, arguments)
        return True

    def unbind_destination(self, destination: Destination) -> list[BindingKey]:
        """Drop every binding to ``destination`` (it was deleted); returns what was removed."""
        removed = [key for key in self.bindings if key[0] == destination]
        for dest, routing_key, args_key in removed:
            self.unbind(dest, routing_key, args_key)
        return removed

    def route(self, routing_key: str, message: Any) -> Iterable[Destination]:
        raise NotImplementedError

    def route_keys(self, routing_keys: tuple[str, ...], message: Any) -> Iterable[Destination]:
        """Destinations for several routing keys at once (sender-selected distribution, CC/BCC): the
        union, each destination once."""
        found: dict[Destination, None] = {}
        for routing_key in routing_keys:
            found.update(dict.fromkeys(self.route(routing_key, message)))
        return found

    def _index_add(self, destination: Destination, routing_key: str, arguments: dict[str, Any]) -> None:
        raise NotImplementedError

    def _index_remove(self, destination: Destination, routing_key: str, arguments: dict[str, Any]) -> None:
        raise NotImplementedError


class DirectExchange(Exchange):
    type = "direct"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._by_key: dict[str, dict[Destination, int]] = {}

    def route(self, routing_key: str, message: Any) -> Iterable[Destination]:
        return self._by_key.get(routing_key, ())

    def _index_add(self, destination: Destination, routing_key: str, arguments: dict[str, Any]) -> None:
        counts = self._by_key.setdefault(routing_key, {})
        counts[destination] = counts.get(destination, 0) + 1  # same key bound with other arguments

    def _index_remove(self, destination: Destination, routing_key: str, arguments: dict[str, Any]) -> None:
        counts = self._by_key[routing_key]
        counts[destination] -= 1
        if not counts[destination]:
            del counts[destination]
            if not counts:
                del self._by_key[routing_key]


class FanoutExchange(Exchange):
    type = "fanout"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._destinations: dict[Destination, int] = {}

    def route(self, routing_key: str, message: Any) -> Iterable[Destination]:
        return self._destinations

    def _index_add(self, destination: Destination, routing_key: str, arguments: dict[str, Any]) -> None:
        self._destinations[destination] = self._destinations.get(destination, 0) + 1

    def _index_remove(self, destination: Destination, routing_key: str, arguments: dict[str, Any]) -> None:
        self._destinations[destination] -= 1
        if not self._destinations[destination]:
            del self._destinations[destination]


class _TrieNode:
    __slots__ = ("children", "destinations")

    def __init__(self) -> None:
        self.children: dict[str, _TrieNode] = {}
        self.destinations: dict[Destination, int] = {}


class TopicExchange(Exchange):
    """Binding keys are dot-separated words; ``*`` matches one word, ``#`` zero or more
    (AMQP 0-9-1 spec, exchange type "topic"). Results are cached per routing key and the cache is
    dropped whenever a binding changes, so steady-state routing is one dict lookup."""

    type = "topic"
    CACHE_LIMIT = 4096  # distinct routing keys remembered; bounds memory against key churn

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._root = _TrieNode()
        self._cache: dict[str, tuple[Destination, ...]] = {}

    def route(self, routing_key: str, message: Any) -> Iterable[Destination]:
        found = self._cache.get(routing_key)
        if found is None:
            matches: set[Destination] = set()
            self._match(self._root, _words(routing_key), 0, matches)
            found = tuple(matches)
            if len(self._cache) >= self.CACHE_LIMIT:
                self._cache.clear()
            self._cache[routing_key] = found
        return found

    def _match(self, node: _TrieNode, words: list[str], i: int, out: set[Destination]) -> None:
        if i == len(words):
            out.update(node.destinations)
        else:
            child = node.children.get(words[i])
            if child is not None:
                self._match(child, words, i + 1, out)
            star = node.children.get("*")
            if star is not None:
                self._match(star, words, i + 1, out)
        hash_node = node.children.get("#")
        if hash_node is not None:
            # '#' swallows zero or more words: try every remaining suffix.
            for j in range(i, len(words) + 1):
                self._match(hash_node, words, j, out)

    def _index_add(self, destination: Destination, routing_key: str, arguments: dict[str, Any]) -> None:
        node = self._root
        for word in _words(routing_key):
            node = node.children.setdefault(word, _TrieNode())
        node.destinations[destination] = node.destinations.get(destination, 0) + 1
        self._cache.clear()

    def _index_remove(self, destination: Destination, routing_key: str, arguments: dict[str, Any]) -> None:
        path = [self._root]
        words = _words(routing_key)
        for word in words:
            path.append(path[-1].children[word])
        node = path[-1]
        node.destinations[destination] -= 1
        if not node.destinations[destination]:
            del node.destinations[destination]
        for depth in range(len(words), 0, -1):  # prune empty branches
            child = path[depth]
            if child.children or child.destinations:
                break
            del path[depth - 1].children[words[depth - 1]]
        self._cache.clear()


def _words(key: str) -> list[str]:
    """The empty key has no words (so ``*`` does not match it, as in RabbitMQ); ``a..c`` has an empty one."""
    return key.split(".") if key else []


class HeadersExchange(Exchange):
    """Routes on message headers; ``x-match`` is ``all`` (default), ``any``, ``all-with-x`` or
    ``any-with-x`` (RabbitMQ 3.10). Binding arguments starting with ``x-`` are not matched unless a
    ``-with-x`` mode is used. A binding argument of void type matches on presence alone."""

    type = "headers"
    MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._matchers: list[tuple[Destination, str, dict[str, Any]]] = []

    @classmethod
    def validate_binding(cls, arguments: dict[str, Any]) -> None:
        mode = arguments.get("x-match", "all")
        if isinstance(mode, bytes):
            mode = mode.decode()
        if mode not in cls.MATCH_MODES:
            raise PreconditionFailed(
                f'Invalid x-match field value <<"{mode}">>; expected all, any, all-with-x, or any-with-x'
            )

    def route(self, routing_key: str, message: Any) -> Iterable[Destination]:
        headers = message.headers
        return {dest for dest, mode, wanted in self._matchers if _headers_match(mode, wanted, headers)}

    def _index_add(self, destination: Destination, routing_key: str, arguments: dict[str, Any]) -> None:
        mode = arguments.get("x-match", "all")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        with_x = mode.endswith("-with-x")
        wanted = {k: v for k, v in arguments.items() if k != "x-match" and (with_x or not k.startswith("x-"))}
        self._matchers.append((destination, mode, wanted))

    def _index_remove(self, destination: Destination, routing_key: str, arguments: dict[str, Any]) -> None:
        for i, (dest, _mode, _wanted) in enumerate(self._matchers):
            if dest == destination:
                del self._matchers[i]
                return


def _headers_match(mode: str, wanted: dict[str, Any], headers: dict[str, Any]) -> bool:
    if mode.startswith("all"):
        return all(k in headers and (v is None or headers[k] == v) for k, v in wanted.items())
    return any(k in headers and (v is None or headers[k] == v) for k, v in wanted.items())


class DeduplicationExchange(FanoutExchange):
    """``x-message-deduplication`` (RabbitMQ's message-deduplication plugin): routes as fanout, except
    that a message whose key its window holds goes nowhere (core.dedup keeps the window)."""

    type = DEDUP_EXCHANGE_TYPE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.window: DedupWindow | None = None  # attached by the vhost (core.dedup.attach_to_exchange)
        self.dropped: Any = None  # the last message dropped as a duplicate (see dedup.dropped_as_duplicate)

    def route(self, routing_key: str, message: Any) -> Iterable[Destination]:
        window = self.window
        if window is not None and not window.admit(message):
            self.dropped = message
            return ()
        return self._destinations

    def route_keys(self, routing_keys: tuple[str, ...], message: Any) -> Iterable[Destination]:
        return self.route(routing_keys[0], message)  # fanout: keys do not matter, and the window admits once

    def kept(self, message: Any) -> bool:
        return self.dropped is message


_TYPES: dict[str, type[Exchange]] = {
    cls.type: cls for cls in (DirectExchange, FanoutExchange, TopicExchange, HeadersExchange, DeduplicationExchange)
}


def register_type(cls: type[Exchange]) -> None:
    """Add an exchange type defined outside this module (core/delayed.py: x-delayed-message)."""
    _TYPES[cls.type] = cls


def make_exchange(type_: str, name: str, **kwargs: Any) -> Exchange:
    return _TYPES[type_](name, **kwargs)


def is_known_type(type_: str) -> bool:
    return type_ in _TYPES
