"""The store's SQL, loaded by name from ``queries.sql`` (``-- name: xxx`` starts a statement)."""

from __future__ import annotations

from importlib import resources
from typing import LiteralString, cast


def load_queries(package: str, filename: str) -> dict[str, LiteralString]:
    """The named statements of ``filename`` in ``package`` (mailslot.cluster keeps its own file)."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    queries: dict[str, list[str]] = {}
    lines: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("-- name: "):
            lines = queries.setdefault(line.removeprefix("-- name: ").strip(), [])
        elif lines is not None and not line.startswith("--"):
            lines.append(line)
    # The file is part of the package, never user input: a LiteralString for psycopg's typing.
    return {name: cast(LiteralString, "\n".join(body).strip().rstrip(";")) for name, body in queries.items()}


Q = load_queries("mailslot.storage.postgres", "queries.sql")
