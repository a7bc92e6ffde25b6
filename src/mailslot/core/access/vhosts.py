"""Virtual host records: which vhosts exist and what RabbitMQ keeps about each (description, tags,
default queue type). The vhosts' contents (exchanges, queues, messages) live in the broker core; the
access control keeps the two in step (control.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ...storage.api import MetadataStore
from .records import VHOST, AlreadyExists, NoSuchVhost, VhostRecord
from .users import check_name, normalise_tags


class Vhosts:
    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata
        self._vhosts: dict[str, VhostRecord] = {
            name: VhostRecord.from_value(name, value) for name, value in metadata.load_records(VHOST).items()
        }

    def __contains__(self, name: object) -> bool:
        return name in self._vhosts

    def __iter__(self) -> Iterator[VhostRecord]:
        return iter(list(self._vhosts.values()))

    def __len__(self) -> int:
        return len(self._vhosts)

    def get(self, name: str) -> VhostRecord | None:
        return self._vhosts.get(name)

    def require(self, name: str) -> VhostRecord:
        vhost = self._vhosts.get(name)
        if vhost is None:
            raise NoSuchVhost(name)
        return vhost

    def add(self, name: str, description: str = "", tags: Iterable[str] | str = (),
            default_queue_type: str | None = None, *, exist_ok: bool = False) -> VhostRecord:
        """A new vhost record (``exist_ok``: update the description and tags of an existing one, as
        ``PUT /api/vhosts/NAME`` and a definitions import do)."""
        check_name("vhost", name)
        if name in self._vhosts and not exist_ok:
            raise AlreadyExists(f"vhost '{name}' already exists")
        record = VhostRecord(name, description, normalise_tags(tags), default_queue_type)
        self._metadata.save_record(VHOST, name, record.value())
        self._vhosts[name] = record
        return record

    def delete(self, name: str) -> VhostRecord:
        record = self.require(name)
        del self._vhosts[name]
        self._metadata.delete_record(VHOST, name)
        return record
