"""Exchanges, queues, bindings and runtime-configuration records in PostgreSQL.

Each call is one autocommit statement (its own transaction, durable when it returns), on its own
connection so it never waits for a message batch. Every write is an upsert or a delete, so a call
whose connection broke is safely run again once on a new connection; if that fails too, it raises
:class:`~mailslot.storage.postgres.StoreUnavailable`. ``load()`` reads the three tables in one
REPEATABLE READ snapshot. Order is first-save order (the identity column; an upsert keeps its row).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from mailslot.storage.api import BindingDefinition, Definitions, ExchangeDefinition, QueueDefinition
from mailslot.storage.sqlite._codec import decode_table, encode_table

from ._connect import Link, PostgresSettings
from ._queries import Q

T = TypeVar("T")
Conn = psycopg.Connection[Any]


class PostgresMetadataStore:
    """:class:`~mailslot.storage.api.MetadataStore` in an install's schema."""

    def __init__(self, settings: PostgresSettings) -> None:
        self._link = Link(settings, "metadata")

    def save_exchange(self, exchange: ExchangeDefinition) -> None:
        self._execute("save_exchange", {
            "vhost": _b(exchange.vhost), "name": _b(exchange.name), "type": exchange.type,
            "durable": exchange.durable, "auto_delete": exchange.auto_delete, "internal": exchange.internal,
            "arguments": encode_table(exchange.arguments),
        })

    def delete_exchange(self, vhost: str, name: str) -> None:
        self._execute("delete_exchange", {"vhost": _b(vhost), "name": _b(name)})

    def save_queue(self, queue: QueueDefinition) -> None:
        self._execute("save_queue", {
            "vhost": _b(queue.vhost), "name": _b(queue.name), "durable": queue.durable,
            "exclusive": queue.exclusive, "auto_delete": queue.auto_delete,
            "arguments": encode_table(queue.arguments),
        })

    def delete_queue(self, vhost: str, name: str) -> None:
        self._execute("delete_queue", {"vhost": _b(vhost), "name": _b(name)})

    def save_binding(self, binding: BindingDefinition, arguments: dict[str, Any]) -> None:
        self._execute("save_binding", {**_binding_key(binding), "arguments": encode_table(arguments)})

    def delete_binding(self, binding: BindingDefinition) -> None:
        self._execute("delete_binding", _binding_key(binding))

    def save_record(self, kind: str, key: str, value: Any) -> None:
        self._execute("save_record", {"kind": kind, "key": _b(key), "value": json.dumps(value)})

    def delete_record(self, kind: str, key: str) -> None:
        self._execute("delete_record", {"kind": kind, "key": _b(key)})

    def load_records(self, kind: str) -> dict[str, Any]:
        rows = self._run(lambda conn: conn.execute(Q["load_records"], {"kind": kind}).fetchall())
        return {bytes(key).decode(): json.loads(value) for key, value in rows}

    def load(self) -> Definitions:
        def read(conn: Conn) -> tuple[list[Any], list[Any], list[Any]]:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # one snapshot for all three
                return (
                    conn.execute(Q["load_exchanges"]).fetchall(),
                    conn.execute(Q["load_queues"]).fetchall(),
                    conn.execute(Q["load_bindings"]).fetchall(),
                )

        exchanges, queues, bindings = self._run(read)
        binding_arguments: dict[BindingDefinition, dict[str, Any]] = {}
        for vhost, source, dest, kind, rk, key, arguments in bindings:
            b = BindingDefinition(_s(source), _s(dest), kind, _s(rk), _s(vhost), _s(key))
            binding_arguments[b] = decode_table(arguments)
        return Definitions(
            [
                ExchangeDefinition(_s(name), type_, _s(vhost), durable, auto_delete, internal, decode_table(args))
                for vhost, name, type_, durable, auto_delete, internal, args in exchanges
            ],
            [
                QueueDefinition(_s(name), _s(vhost), durable, exclusive, auto_delete, decode_table(args))
                for vhost, name, durable, exclusive, auto_delete, args in queues
            ],
            list(binding_arguments),
            binding_arguments,
        )

    def close(self) -> None:
        self._link.close()

    def _execute(self, query: str, params: dict[str, Any]) -> None:
        self._run(lambda conn: conn.execute(Q[query], params))

    def _run(self, call: Callable[[Conn], T]) -> T:
        return self._link.run(call)


def _binding_key(b: BindingDefinition) -> dict[str, Any]:
    return {
        "vhost": _b(b.vhost), "source": _b(b.source), "destination": _b(b.destination),
        "destination_kind": b.destination_kind, "routing_key": _b(b.routing_key),
        "arguments_key": _b(b.arguments_key),
    }


def _b(text: str) -> bytes:
    return text.encode()


def _s(raw: bytes) -> str:
    return bytes(raw).decode()
