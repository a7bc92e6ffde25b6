"""The PostgreSQL store: messages and metadata in one schema of a PostgreSQL database (psycopg 3).

``open_postgres_store(settings)`` creates the schema if needed, applies the migrations it lacks
and opens both stores (docs/postgres.md, docs/decisions/0003-postgres-store.md).
"""

from __future__ import annotations

import psycopg

from ._connect import DEFAULT_SCHEMA, SCHEMA_NAME, PostgresSettings, StoreUnavailable, default_node_name
from ._migrate import StoreFormatError, migrate, schema_version
from .log import DEFAULT_COMMIT_TIMEOUT, FencedError, PostgresMessageLog
from .metadata import PostgresMetadataStore

__all__ = [
    "DEFAULT_COMMIT_TIMEOUT",
    "DEFAULT_SCHEMA",
    "SCHEMA_NAME",
    "FencedError",
    "PostgresMessageLog",
    "PostgresMetadataStore",
    "PostgresSettings",
    "StoreFormatError",
    "StoreUnavailable",
    "default_node_name",
    "open_postgres_store",
    "schema_version",
]


def open_postgres_store(
    settings: PostgresSettings, commit_timeout: float = DEFAULT_COMMIT_TIMEOUT
) -> tuple[PostgresMessageLog, PostgresMetadataStore]:
    """Migrate the schema, then open the message log (which registers the node) and the metadata.

    Raises :class:`StoreUnavailable` (an ``OSError``) with one line saying why when the server
    cannot be reached or refuses the connection."""
    try:
        migrate(settings)
        log = PostgresMessageLog(settings, commit_timeout)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"cannot use PostgreSQL at {_safe(settings.dsn)}: {' '.join(str(exc).split())}") from exc
    return log, PostgresMetadataStore(settings)


def _safe(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the configured DSN"
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})
