"""The access control of a fresh broker, for tests that build a front end by hand."""

from __future__ import annotations

from mailslot.core.access.admin import seed_defaults
from mailslot.core.access.control import InternalAccessControl
from mailslot.storage.api import MetadataStore
from mailslot.storage.memory import MemoryMetadataStore


def default_access(
    metadata: MetadataStore | None = None, user: str = "guest", password: str = "guest", vhost: str = "/"
) -> InternalAccessControl:
    """Access control over ``metadata`` (a memory store by default) seeded as a fresh data directory is:
    ``user`` / ``password``, administrator with every permission on ``vhost`` (guest: loopback only)."""
    access = InternalAccessControl(metadata if metadata is not None else MemoryMetadataStore())
    seed_defaults(access, user, password, vhost)
    return access
