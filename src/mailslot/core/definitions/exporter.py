"""Exporting the broker's definitions in RabbitMQ's JSON shape (what ``rabbitmqctl export_definitions``
writes), so that the file loads into RabbitMQ or back into mailslot.

As RabbitMQ 3.10 (rabbit_definitions:list_*): users with their hashes and algorithm, vhosts with
``limits`` and ``metadata``, permissions, topic permissions, vhost limits as ``vhost-limits`` parameters,
policies (from the policy engine, when plugged in), every non-exclusive queue, every exchange but the
default and ``amq.*`` ones, every binding but the default exchange's. One difference, on purpose: RabbitMQ
leaves internal exchanges out (and then cannot load its own export when something is bound to one);
mailslot exports them with ``"internal": true``, which RabbitMQ's import reads.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ... import __version__
from ..access.control import InternalAccessControl
from ..broker import Broker
from .importer import VHOST_LIMITS_COMPONENT, PolicySink


def export_definitions(
    access: InternalAccessControl, core: Broker, policies: PolicySink | None = None, *, vhost: str | None = None
) -> dict[str, Any]:
    """The definitions document; ``vhost``: only that vhost's topology, policies and parameters (the
    HTTP API's ``GET /api/definitions/{vhost}``), without users, vhosts and permissions."""
    vhost_names = [vhost] if vhost is not None else [record.name for record in access.vhosts]
    body: dict[str, Any] = {"rabbit_version": __version__, "rabbitmq_version": __version__,
                            "product_name": "mailslot", "product_version": __version__}
    if vhost is None:
        body["users"] = [
            {"name": user.name, "password_hash": user.password_hash, "hashing_algorithm": user.hashing_algorithm,
             "tags": list(user.tags), "limits": access.limits.of_user(user.name)}
            for user in access.users
        ]
        body["vhosts"] = [
            {"name": record.name, "limits": [[k, v] for k, v in access.limits.of_vhost(record.name).items()],
             "metadata": {"description": record.description, "tags": list(record.tags),
                          **({"default_queue_type": record.default_queue_type} if record.default_queue_type else {})}}
            for record in access.vhosts
        ]
        body["permissions"] = [
            {"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read}
            for p in access.permissions.records()
        ]
        body["topic_permissions"] = [
            {"user": t.user, "vhost": t.vhost, "exchange": t.exchange, "write": t.write, "read": t.read}
            for t in access.topic_permissions.records()
        ]
        body["global_parameters"] = []
    body["parameters"] = [
        {"vhost": name, "component": VHOST_LIMITS_COMPONENT, "name": "limits", "value": access.limits.of_vhost(name)}
        for name in vhost_names if access.limits.of_vhost(name)
    ]
    all_policies = policies.list_policies() if policies is not None else []
    body["policies"] = [p for p in all_policies if vhost is None or p.get("vhost") == vhost]
    queues, exchanges, bindings = [], [], []
    for name in vhost_names:
        topology = core.vhosts.get(name)
        if topology is None:
            continue
        where = {"vhost": name} if vhost is None else {}  # a scoped export names no vhost, as RabbitMQ's
        for queue in topology.queues.values():
            if queue.exclusive_owner is None:
                queues.append({"name": queue.name, **where, "durable": queue.durable, "auto_delete": queue.auto_delete,
                               "arguments": jsonable(queue.arguments), "type": _queue_type(queue.arguments)})
        for exchange in topology.exchanges.values():
            if exchange.name and not exchange.name.startswith("amq."):
                item = {"name": exchange.name, **where, "type": exchange.type, "durable": exchange.durable,
                        "auto_delete": exchange.auto_delete, "internal": exchange.internal,
                        "arguments": jsonable(exchange.arguments)}
                exchanges.append(item)
            for (destination, routing_key, _args_key), arguments in exchange.bindings.items():
                if exchange.name:
                    bindings.append({"source": exchange.name, **where, "destination": destination[1],
                                     "destination_type": destination[0], "routing_key": routing_key,
                                     "arguments": jsonable(arguments)})
    body["queues"], body["exchanges"], body["bindings"] = queues, exchanges, bindings
    return body


def _queue_type(arguments: dict[str, Any]) -> str:
    value = arguments.get("x-queue-type", "classic")
    return value.decode() if isinstance(value, bytes) else str(value)


def jsonable(value: Any) -> Any:
    """An AMQP table value as JSON: byte strings as text, decimals as numbers, tables and arrays deep."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode(errors="replace")
    if isinstance(value, Decimal):
        return float(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # timestamps and anything else: their text
