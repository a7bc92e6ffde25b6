"""Password hashes interchangeable with RabbitMQ's (rabbit_password.erl)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from mailslot.core.access.passwords import (
    MD5,
    SHA256,
    SHA512,
    InvalidPasswordHash,
    algorithm_for,
    check_hash,
    hash_password,
    verify_password,
)

# Made by the reference RabbitMQ 3.10.8 (`rabbitmqctl add_user hashvec 's3cret-pässword'`, then
# `rabbitmqctl export_definitions`): RabbitMQ's own output, not computed by the code under test.
RABBITMQ_HASH = "C5ha8DhEo28P3IeE/z02UHCgnwongurOD5UsDfHUIkXp4AKu"
RABBITMQ_PASSWORD = "s3cret-pässword"


def test_a_hash_made_by_rabbitmq_verifies() -> None:
    assert verify_password(RABBITMQ_PASSWORD, RABBITMQ_HASH, SHA256)
    assert not verify_password("s3cret-passwort", RABBITMQ_HASH, SHA256)
    assert not verify_password(RABBITMQ_PASSWORD, RABBITMQ_HASH, SHA512)  # wrong algorithm: no match


@pytest.mark.parametrize("algorithm, digest", [(SHA256, hashlib.sha256), (SHA512, hashlib.sha512), (MD5, hashlib.md5)])
def test_format_is_salt_then_digest_of_salt_and_password(algorithm: str, digest: object) -> None:
    made = hash_password("pw", algorithm)
    raw = base64.b64decode(made)
    salt, rest = raw[:4], raw[4:]
    assert rest == digest(salt + b"pw").digest()  # type: ignore[operator]
    assert verify_password("pw", made, algorithm)
    assert hash_password("pw", algorithm) != made  # a new salt each time


def test_blank_and_missing_never_match() -> None:
    assert not verify_password("", hash_password(""), SHA256)  # RabbitMQ refuses blank passwords
    assert not verify_password("x", "", SHA256)  # a user without a password (EXTERNAL only)
    assert not verify_password("x", None, SHA256)  # no such user
    assert not verify_password("x", "not base64!", SHA256)


def test_algorithm_for_old_exports_is_md5() -> None:
    assert algorithm_for(None, "3.5.7") == MD5
    assert algorithm_for(None, "3.6.0") == SHA256
    assert algorithm_for(None, None) == SHA256
    assert algorithm_for(SHA512) == SHA512
    with pytest.raises(InvalidPasswordHash, match="unknown hashing algorithm 'rabbit_password_hashing_bcrypt'"):
        algorithm_for("rabbit_password_hashing_bcrypt")


def test_check_hash_refuses_what_cannot_be_a_hash() -> None:
    check_hash(RABBITMQ_HASH, SHA256)
    check_hash("", SHA256)
    with pytest.raises(InvalidPasswordHash):
        check_hash(RABBITMQ_HASH, SHA512)  # 36 bytes is not salt + SHA-512
    with pytest.raises(InvalidPasswordHash):
        check_hash("%%%", SHA256)
