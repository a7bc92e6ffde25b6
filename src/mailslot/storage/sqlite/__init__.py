"""Embedded default store: SQLite in WAL mode, one file ``<data_dir>/mailslot.db``."""

from mailslot.storage.sqlite._schema import StoreFormatError, schema_version
from mailslot.storage.sqlite.store import (
    DB_FILENAME,
    SqliteMessageLog,
    SqliteMetadataStore,
    open_sqlite_store,
)

__all__ = [
    "DB_FILENAME",
    "SqliteMessageLog",
    "SqliteMetadataStore",
    "StoreFormatError",
    "open_sqlite_store",
    "schema_version",
]
