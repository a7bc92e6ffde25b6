"""Where a publish goes: the queues a message reaches from the exchange it was published to.

Rules of this module (RabbitMQ 3.10's rabbit_exchange:route/2 is the model):

* Each exchange on the way routes the message on all its routing keys: the publish's key and the
  sender-selected ones (``CC``/``BCC``, https://www.rabbitmq.com/docs/sender-selected), each destination
  once. Exchange-to-exchange bindings are followed; every exchange is visited at most once, so cycles
  are cut, and never deeper than ``MAX_ROUTE_DEPTH``.
* An exchange that routes the message nowhere passes it to its alternate exchange
  (https://www.rabbitmq.com/docs/ae), read from ``Exchange.alternate`` (the ``alternate-exchange``
  argument or policy key), and so on down a chain; a chain that comes back to an exchange already
  visited ends there. An alternate exchange that does not exist is skipped. An exchange that kept the
  message (a delayed message scheduled, a duplicate dropped: ``Exchange.kept``) did not fail to route it.
* A publish is unroutable (a mandatory one is returned) only when the whole walk reaches no queue.
* The default exchange has no alternate exchange and no bindings: each routing key names a queue (also
  when it is another exchange's alternate exchange).
* The hot path (one exchange, queues only, one routing key) is one ``route`` call and a loop, as before
  alternate exchanges existed; the walk starts only for exchange-to-exchange bindings, an unroutable
  message on an exchange with an alternate one, or several routing keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .exchanges import Destination, Exchange

if TYPE_CHECKING:
    from .message import Message
    from .queue import Queue
    from .vhost import VirtualHost

MAX_ROUTE_DEPTH = 32  # exchange hops (bindings and alternate exchanges); cycles are cut by the visited set anyway


def route(
    vhost: VirtualHost, exchange: Exchange, routing_key: str, message: Message, cc: tuple[str, ...] = ()
) -> list[Queue]:
    """The queues ``message``, published to ``exchange`` with ``routing_key`` (and the sender-selected
    keys ``cc``), reaches. Bound as ``VirtualHost.route``."""
    queues = vhost.queues
    if exchange is vhost.default_exchange:
        if cc:
            return list(dict.fromkeys(q for q in map(queues.get, (routing_key, *cc)) if q is not None))
        queue = queues.get(routing_key)
        return [queue] if queue is not None else []
    if cc:
        keys = (routing_key, *cc)
        return _walk(vhost, exchange, keys, message, exchange.route_keys(keys, message))
    destinations = exchange.route(routing_key, message)
    if not destinations:
        if exchange.alternate is None:
            return []
        return _walk(vhost, exchange, (routing_key,), message, destinations)
    found: list[Queue] = []
    for kind, name in destinations:
        if kind != "queue":
            return _walk(vhost, exchange, (routing_key,), message, destinations)
        queue = queues.get(name)
        if queue is not None:
            found.append(queue)
    return found


def _walk(
    vhost: VirtualHost,
    start: Exchange,
    keys: tuple[str, ...],
    message: Message,
    first: Iterable[Destination],
) -> list[Queue]:
    """The general case: follow exchange destinations and alternate exchanges. ``first`` is what ``start``
    routed to already (routing twice would schedule or deduplicate twice)."""
    queues, exchanges = vhost.queues, vhost.exchanges
    found: dict[Queue, None] = {}  # ordered and each queue once
    visited = {start.name}
    pending: list[tuple[Exchange, Iterable[Destination] | None, int]] = [(start, first, 0)]
    while pending:
        exchange, destinations, depth = pending.pop()
        if destinations is None:
            destinations = exchange.route(keys[0], message) if len(keys) == 1 else exchange.route_keys(keys, message)
        if not destinations:
            alternate = exchange.alternate
            if alternate is None or exchange.kept(message):
                continue
            destinations = (("exchange", alternate),)
        for kind, name in destinations:
            if kind == "queue":
                queue = queues.get(name)
                if queue is not None:
                    found[queue] = None
                continue
            target = exchanges.get(name)
            if target is None or name in visited or depth >= MAX_ROUTE_DEPTH:
                continue
            if target is vhost.default_exchange:  # only an alternate exchange can name it: keys name queues
                found.update(dict.fromkeys(q for q in map(queues.get, keys) if q is not None))
                continue
            visited.add(name)
            pending.append((target, None, depth + 1))
    return list(found)


def sender_keys(message: Message) -> tuple[str, ...]:
    """The sender-selected routing keys ``message`` was published with (CC and BCC; the front end sets
    ``message.cc``). A message read back from the store has lost them: its CC header still names CC's."""
    keys: tuple[str, ...] | None = getattr(message, "cc", None)
    if keys is not None:
        return keys
    return _strings(message.header("CC"))  # walks the table; decodes it only when CC is there


def cc_header(headers: dict[str, Any] | None) -> tuple[str, ...]:
    """The routing keys of a CC header (an array of strings; anything else names none)."""
    return _strings((headers or {}).get("CC"))


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(key for key in value if isinstance(key, str))
