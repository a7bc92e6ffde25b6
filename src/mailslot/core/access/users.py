"""The internal user database (RabbitMQ's rabbit_auth_backend_internal): names, hashes, tags.

Every change is written through to the metadata store before it returns (``save_record`` is durable);
reads come from memory. Nothing here logs a password or a hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ...storage.api import MetadataStore
from ..errors import PreconditionFailed
from .passwords import DEFAULT_ALGORITHM, algorithm_for, check_hash, hash_password, verify_password
from .records import USER, AlreadyExists, NoSuchUser, UserRecord

#: Longest user name: RabbitMQ stores any binary, but a name travels in AMQP short strings and log lines;
#: 255 bytes is the short-string bound every AMQP client obeys.
MAX_NAME_BYTES = 255


def normalise_tags(tags: Iterable[str] | str) -> tuple[str, ...]:
    """RabbitMQ accepts a list or a comma-separated string (rabbit_auth_backend_internal:tag_list_from);
    blanks are dropped, order and duplicates are not kept."""
    items = tags.split(",") if isinstance(tags, str) else list(tags)
    return tuple(sorted({str(t).strip() for t in items if str(t).strip()}))


def check_name(kind: str, name: str) -> None:
    if not name:
        raise PreconditionFailed(f"{kind} name must not be empty")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise PreconditionFailed(f"{kind} name is longer than {MAX_NAME_BYTES} bytes")


class Users:
    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata
        self._users: dict[str, UserRecord] = {
            name: UserRecord.from_value(name, value) for name, value in metadata.load_records(USER).items()
        }

    def __contains__(self, name: object) -> bool:
        return name in self._users

    def __iter__(self) -> Iterator[UserRecord]:
        return iter(list(self._users.values()))

    def __len__(self) -> int:
        return len(self._users)

    def get(self, name: str) -> UserRecord | None:
        return self._users.get(name)

    def require(self, name: str) -> UserRecord:
        user = self._users.get(name)
        if user is None:
            raise NoSuchUser(name)
        return user

    def add(self, name: str, password: str | None, tags: Iterable[str] | str = ()) -> UserRecord:
        check_name("user", name)
        if name in self._users:
            raise AlreadyExists(f"user '{name}' already exists")
        return self._save(UserRecord(name, hash_password(password) if password else "", DEFAULT_ALGORITHM,
                                     normalise_tags(tags)))

    def put(self, name: str, *, password: str | None = None, password_hash: str | None = None,
            hashing_algorithm: str | None = None, tags: Iterable[str] | str = (),
            rabbitmq_version: str | None = None) -> UserRecord:
        """Create or replace, as ``PUT /api/users/NAME`` and a definitions import do: a cleartext password
        is hashed with the default algorithm; a hash keeps its own (MD5, SHA-256, SHA-512); neither clears it."""
        check_name("user", name)
        if password is not None and password_hash is not None:
            raise PreconditionFailed("both password and password_hash are provided")  # RabbitMQ refuses it too
        if password is not None:
            record = UserRecord(name, hash_password(password) if password else "", DEFAULT_ALGORITHM,
                                normalise_tags(tags))
        else:
            algorithm = algorithm_for(hashing_algorithm, rabbitmq_version)
            check_hash(password_hash or "", algorithm)
            record = UserRecord(name, password_hash or "", algorithm, normalise_tags(tags))
        return self._save(record)

    def change_password(self, name: str, password: str | None) -> UserRecord:
        """A new hash (None or "": no password, EXTERNAL logins only, as ``rabbitmqctl clear_password``)."""
        user = self.require(name)
        return self._save(UserRecord(name, hash_password(password) if password else "", DEFAULT_ALGORITHM,
                                     user.tags))

    def set_tags(self, name: str, tags: Iterable[str] | str) -> UserRecord:
        user = self.require(name)
        return self._save(UserRecord(name, user.password_hash, user.hashing_algorithm, normalise_tags(tags)))

    def delete(self, name: str) -> UserRecord:
        user = self.require(name)
        del self._users[name]
        self._metadata.delete_record(USER, name)
        return user

    def verify(self, name: str, password: str) -> UserRecord | None:
        """The user when ``password`` is its password; the same work is done for an unknown user."""
        user = self._users.get(name)
        if user is None:
            verify_password(password, None)
            return None
        return user if verify_password(password, user.password_hash, user.hashing_algorithm) else None

    def _save(self, user: UserRecord) -> UserRecord:
        self._metadata.save_record(USER, user.name, user.value())
        self._users[user.name] = user
        return user
