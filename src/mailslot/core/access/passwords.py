"""Password hashes as RabbitMQ makes and checks them, so users move between the two unchanged.

RabbitMQ's format (rabbit_password.erl): a 4-byte random salt, then ``H(salt + password)``, the whole
base64-encoded; the hash function is named by ``hashing_algorithm`` next to the hash in a definitions
export. ``rabbit_password_hashing_sha256`` is RabbitMQ's default since 3.6 and ours; SHA-512 and MD5
(RabbitMQ before 3.6, and a user record without an algorithm) are accepted so that old exports load.

Rules of this module: a comparison is constant-time (``hmac.compare_digest``) and costs the same whether
or not the user exists (:func:`verify_password` with ``None`` hashes a dummy); passwords are never logged
or kept, only their hashes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable

from ..errors import PreconditionFailed

SHA256 = "rabbit_password_hashing_sha256"
SHA512 = "rabbit_password_hashing_sha512"
MD5 = "rabbit_password_hashing_md5"
DEFAULT_ALGORITHM = SHA256  # RabbitMQ's password_hashing_module default

_DIGESTS: dict[str, Callable[[bytes], bytes]] = {
    SHA256: lambda data: hashlib.sha256(data).digest(),
    SHA512: lambda data: hashlib.sha512(data).digest(),
    MD5: lambda data: hashlib.md5(data, usedforsecurity=False).digest(),  # legacy imports only
}
SALT_SIZE = 4  # rabbit_password:generate_salt/0: a 32-bit salt

# Verifying against this when the user does not exist costs what a real check costs (timing tells nothing).
_DUMMY_SALT = b"\0\0\0\0"


class InvalidPasswordHash(PreconditionFailed):
    """A hash that is not base64 of salt + digest, or an unknown hashing algorithm."""


def algorithm_for(name: str | None, rabbitmq_version: str | None = None) -> str:
    """The algorithm of a user record: its ``hashing_algorithm``, or when absent what RabbitMQ assumes for
    an export of ``rabbitmq_version`` (rabbit_auth_backend_internal:hashing_algorithm/2: MD5 before 3.6)."""
    if name:
        if name not in _DIGESTS:
            raise InvalidPasswordHash(f"unknown hashing algorithm '{name}'")
        return name
    if rabbitmq_version and rabbitmq_version.startswith(("3.0.", "3.1.", "3.2.", "3.3.", "3.4.", "3.5.")):
        return MD5
    return DEFAULT_ALGORITHM


def hash_password(password: str, algorithm: str = DEFAULT_ALGORITHM) -> str:
    """A new salted hash of ``password``, base64 as RabbitMQ exports it."""
    salt = os.urandom(SALT_SIZE)
    return base64.b64encode(salt + _DIGESTS[algorithm](salt + password.encode())).decode()


def check_hash(password_hash: str, algorithm: str) -> None:
    """Raise :class:`InvalidPasswordHash` unless ``password_hash`` can be a hash made by ``algorithm``
    (the empty hash is a user without a password: it can log in only with EXTERNAL)."""
    if not password_hash:
        return
    raw = _decode(password_hash)
    digest_size = len(_DIGESTS[algorithm](b""))
    if raw is None or len(raw) != SALT_SIZE + digest_size:
        raise InvalidPasswordHash(f"password hash is not base64 of a {algorithm} salted hash")


def verify_password(password: str, password_hash: str | None, algorithm: str = DEFAULT_ALGORITHM) -> bool:
    """True when ``password`` matches. ``password_hash`` None (no such user) or empty (no password) never
    matches but costs a full comparison. A blank password is refused as RabbitMQ's internal backend does."""
    raw = _decode(password_hash) if password_hash else None
    digest = _DIGESTS.get(algorithm, _DIGESTS[DEFAULT_ALGORITHM])
    if raw is None or len(raw) <= SALT_SIZE:
        hmac.compare_digest(digest(_DUMMY_SALT + password.encode()), digest(b""))
        return False
    salt, expected = raw[:SALT_SIZE], raw[SALT_SIZE:]
    return hmac.compare_digest(digest(salt + password.encode()), expected) and password != ""


def _decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
