"""Runtime parameters (vhost ``parameters`` and ``global-parameters``), in memory and written through to
the metadata store (``MetadataStore.save_record``), so each change is durable when it is answered.

Records: kind ``parameter`` keyed by JSON ``[vhost, component, name]``, kind ``global_parameter`` keyed by
name. Every parameter is kept whether or not mailslot uses it (see resources/parameters.py).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from ..storage.api import MetadataStore

log = logging.getLogger("mailslot.http")

PARAMETER = "parameter"
GLOBAL_PARAMETER = "global_parameter"
# Components mailslot acts on; none yet (federation and shovels are not built), so every vhost parameter
# is kept and reported unused.
USED_COMPONENTS: frozenset[str] = frozenset()
# Global parameters mailslot reads itself.
USED_GLOBALS = frozenset({"cluster_name", "internal_cluster_id"})
CLUSTER_ID = "internal_cluster_id"


class RuntimeParameters:
    """Every runtime parameter, in memory and written through to the metadata store."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata
        self._vhost: dict[tuple[str, str, str], Any] = {}
        for key, value in metadata.load_records(PARAMETER).items():
            vhost, component, name = json.loads(key)
            self._vhost[(vhost, component, name)] = value
        self._global: dict[str, Any] = dict(metadata.load_records(GLOBAL_PARAMETER))
        if CLUSTER_ID not in self._global:  # RabbitMQ makes one on first start; Prometheus labels show it
            self.set_global(CLUSTER_ID, "mailslot-cluster-id-" + os.urandom(16).hex())

    # vhost parameters
    def all(self) -> list[tuple[tuple[str, str, str], Any]]:
        return list(self._vhost.items())

    def get(self, vhost: str, component: str, name: str) -> Any:
        return self._vhost.get((vhost, component, name))

    def set(self, vhost: str, component: str, name: str, value: Any) -> bool:
        """Store it; True when it replaced one."""
        key = (vhost, component, name)
        existed = key in self._vhost
        self._metadata.save_record(PARAMETER, json.dumps(list(key)), value)
        self._vhost[key] = value
        if component not in USED_COMPONENTS:
            log.warning("parameter %s/%s in vhost '%s' is kept but not used by mailslot", component, name, vhost)
        return existed

    def delete(self, vhost: str, component: str, name: str) -> bool:
        key = (vhost, component, name)
        if key not in self._vhost:
            return False
        self._metadata.delete_record(PARAMETER, json.dumps(list(key)))
        del self._vhost[key]
        return True

    # global parameters
    def globals(self) -> list[tuple[str, Any]]:
        return list(self._global.items())

    def global_value(self, name: str) -> Any:
        return self._global.get(name)

    def set_global(self, name: str, value: Any) -> bool:
        existed = name in self._global
        self._metadata.save_record(GLOBAL_PARAMETER, name, value)
        self._global[name] = value
        if name not in USED_GLOBALS:
            log.warning("global parameter %s is kept but not used by mailslot", name)
        return existed

    def delete_global(self, name: str) -> bool:
        if name not in self._global:
            return False
        self._metadata.delete_record(GLOBAL_PARAMETER, name)
        del self._global[name]
        return True
