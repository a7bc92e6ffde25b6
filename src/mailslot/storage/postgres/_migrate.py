"""Numbered migrations (``migrations/NNNN_name.sql``), applied by mailslot at start.

One transaction per start that has something to apply: it takes a transaction-level advisory lock
(keyed by the schema name) first, so two nodes starting at once apply each migration once; the
second waits, then finds nothing left to do. ``schema_migrations`` records what was applied. A
schema migrated by a newer mailslot is refused rather than misread. ``schema.sql`` is the reference
of what all migrations produce; ``describe`` is how the test compares the two.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, LiteralString, cast

import psycopg
from psycopg import sql

from ._connect import PostgresSettings, connect


class StoreFormatError(RuntimeError):
    """The schema was migrated by a newer mailslot (its version is unknown here)."""


def migrations() -> list[tuple[int, str, str]]:
    """``(number, name, sql)`` of every shipped migration, in order."""
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, found {numbers}")
    return found


def schema_version() -> int:
    """The schema version this code writes (the number of the last migration)."""
    return len(migrations())


def reference_schema() -> str:
    """``schema.sql``: the whole schema as the migrations leave it, for people and for the test."""
    return resources.files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def migrate(settings: PostgresSettings) -> int:
    """Create the schema if needed and apply every migration it lacks; returns the version."""
    todo = migrations()
    latest = len(todo)
    with connect(settings, "migrate") as conn, conn.transaction():
        # The lock comes first: CREATE SCHEMA IF NOT EXISTS itself races between two sessions.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('mailslot-migrate:' || %s))", (settings.schema,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(settings.schema)))
        conn.execute(_BOOKKEEPING)
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        version = int(row[0]) if row else 0
        if version > latest:
            raise StoreFormatError(
                f"PostgreSQL schema {settings.schema!r} has version {version}; this mailslot knows up to {latest}"
            )
        for number, name, script in todo:
            if number > version:
                conn.execute(cast(LiteralString, script))  # shipped with the package, never user input
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (number, name))
    return latest


def describe(conn: psycopg.Connection[Any], schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything that defines a schema, with its name stripped, for comparing two schemas."""

    def rows(query: LiteralString) -> list[tuple[Any, ...]]:
        found = conn.execute(query, {"schema": schema}).fetchall()
        return sorted(tuple(str(v).replace(f"{schema}.", "") for v in row) for row in found)

    return {
        "columns": rows(
            "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default,"
            " is_identity, identity_generation FROM information_schema.columns"
            " WHERE table_schema = %(schema)s AND table_name <> 'schema_migrations'"
        ),
        "constraints": rows(
            "SELECT cl.relname, co.conname, pg_get_constraintdef(co.oid) FROM pg_constraint co"
            " JOIN pg_class cl ON cl.oid = co.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace"
            " WHERE n.nspname = %(schema)s AND cl.relname <> 'schema_migrations'"
        ),
        "indexes": rows(
            "SELECT tablename, indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = %(schema)s AND tablename <> 'schema_migrations'"
        ),
        "storage": rows(
            "SELECT cl.relname, cl.relkind, coalesce(cl.reloptions::text, ''), a.attname, a.attstorage"
            " FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace"
            " LEFT JOIN pg_attribute a ON a.attrelid = cl.oid AND a.attnum > 0 AND NOT a.attisdropped"
            " WHERE n.nspname = %(schema)s AND cl.relname NOT LIKE 'schema_migrations%%'"
        ),
        "functions": rows(
            "SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid)"
            " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(schema)s"
        ),
    }
