"""x-death bookkeeping, as RabbitMQ 3.10 writes it (https://www.rabbitmq.com/docs/dlx)."""

from __future__ import annotations

import pytest

from mailslot.core.arguments import QueuePolicy, validate_queue_arguments
from mailslot.core.deadletter import death_headers, died_in
from mailslot.core.errors import PreconditionFailed


def die(headers, queue, reason, **kw):
    return death_headers(
        headers, queue=queue, reason=reason, exchange=kw.get("exchange", "ex"), routing_keys=["rk"],
        now=1_700_000_000, original_expiration=kw.get("expiration"),
    )


def test_first_death_sets_entry_and_first_death_headers():
    headers = die({"app": 1}, "orders", "rejected", expiration="5000")
    (death,) = headers["x-death"]
    assert (death["queue"], death["reason"], death["count"], death["exchange"], death["routing-keys"]) == (
        "orders", "rejected", 1, "ex", ["rk"])
    assert death["original-expiration"] == "5000"
    assert death["time"].timestamp() == 1_700_000_000
    assert headers["x-first-death-queue"] == "orders"
    assert headers["x-first-death-reason"] == "rejected"
    assert headers["app"] == 1


def test_same_queue_and_reason_counts_up_and_moves_first():
    headers = die(None, "a", "rejected")
    headers = die(headers, "b", "maxlen", exchange="dlx")
    headers = die(headers, "a", "rejected", exchange="dlx")
    assert [(d["queue"], d["reason"], d["count"]) for d in headers["x-death"]] == [
        ("a", "rejected", 2), ("b", "maxlen", 1)]
    assert headers["x-first-death-queue"] == "a"  # set once
    assert died_in(headers, "b") == {"maxlen"}


def test_policy_parsing_and_validation():
    policy = QueuePolicy.from_arguments({"x-max-length": 5, "x-overflow": b"reject-publish",
                                         "x-dead-letter-exchange": "dlx"})
    assert (policy.max_length, policy.overflow, policy.dead_letter_exchange, policy.bounded) == (
        5, "reject-publish", "dlx", True)
    assert not QueuePolicy.from_arguments({}).bounded
    with pytest.raises(PreconditionFailed, match="Routing key but no exchange defined"):
        validate_queue_arguments("q", "/", {"x-dead-letter-routing-key": "k"})
    with pytest.raises(PreconditionFailed, match="value_negative"):
        validate_queue_arguments("q", "/", {"x-max-length-bytes": -5})
