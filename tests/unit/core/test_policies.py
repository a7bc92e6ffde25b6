"""The policy engine: matching, precedence, merging with operator policies and arguments, validation,
durability (core/policies.py)."""

from __future__ import annotations

from typing import Any

import pytest

from mailslot.core.policies import (
    EXCHANGE,
    OPERATOR_POLICY,
    POLICY,
    QUEUE,
    InvalidPolicy,
    PolicyEngine,
    erlang_term,
)
from mailslot.storage.memory import MemoryMetadataStore


class Recorder:
    def __init__(self) -> None:
        self.changed: list[str] = []

    def arguments_changed(self, vhost: str) -> None:
        self.changed.append(vhost)


@pytest.fixture
def store() -> MemoryMetadataStore:
    return MemoryMetadataStore()


@pytest.fixture
def engine(store: MemoryMetadataStore) -> PolicyEngine:
    return PolicyEngine(store)


def names(engine: PolicyEngine, name: str, vhost: str = "/", declared: dict[str, Any] | None = None,
          kind: str = QUEUE) -> tuple[str | None, str | None]:
    applied = engine.applied(vhost, kind, name, declared)
    return (applied.policy.name if applied.policy else None,
            applied.operator_policy.name if applied.operator_policy else None)


def test_pattern_is_searched_not_anchored(engine: PolicyEngine) -> None:
    engine.set(POLICY, "/", "p", "ord", {"max-length": 5})
    assert names(engine, "orders")[0] == "p"
    assert names(engine, "big-orders")[0] == "p"
    assert names(engine, "invoices")[0] is None
    engine.set(POLICY, "/", "p", "^ord$", {"max-length": 5})
    assert names(engine, "orders")[0] is None


def test_empty_pattern_matches_every_name(engine: PolicyEngine) -> None:
    engine.set(POLICY, "/", "all", "", {"max-length": 5})
    assert names(engine, "anything")[0] == "all"


def test_policies_are_per_vhost(engine: PolicyEngine) -> None:
    engine.set(POLICY, "a", "p", ".*", {"max-length": 5})
    assert names(engine, "q", vhost="a")[0] == "p"
    assert names(engine, "q", vhost="b")[0] is None


def test_highest_priority_wins_then_greatest_name(engine: PolicyEngine) -> None:
    engine.set(POLICY, "/", "low", ".*", {"max-length": 1}, priority=1)
    engine.set(POLICY, "/", "high", "^q", {"max-length": 2}, priority=5)
    engine.set(POLICY, "/", "negative", ".*", {"max-length": 3}, priority=-3)
    assert names(engine, "q1")[0] == "high"
    assert names(engine, "x")[0] == "low"
    engine.set(POLICY, "/", "tie-b", ".*", {"max-length": 4}, priority=5)
    engine.set(POLICY, "/", "tie-a", ".*", {"max-length": 4}, priority=5)
    assert names(engine, "q1")[0] == "tie-b"  # ties: the greatest name, whatever the order of creation


def test_only_one_policy_applies_no_merging_between_policies(engine: PolicyEngine) -> None:
    engine.set(POLICY, "/", "a", ".*", {"max-length": 1}, priority=1)
    engine.set(POLICY, "/", "b", ".*", {"message-ttl": 1000}, priority=2)
    assert engine.queue_arguments("/", "q", {}) == {"x-message-ttl": 1000}


@pytest.mark.parametrize(
    ("apply_to", "queue", "quorum", "exchange"),
    [
        ("all", True, True, True),
        ("queues", True, True, False),
        ("classic_queues", True, False, False),
        ("quorum_queues", False, True, False),
        ("exchanges", False, False, True),
    ],
)
def test_apply_to(engine: PolicyEngine, apply_to: str, queue: bool, quorum: bool, exchange: bool) -> None:
    engine.set(POLICY, "/", "p", ".*", {"alternate-exchange": "ae"}, apply_to=apply_to)
    assert (names(engine, "x")[0] == "p") is queue
    assert (names(engine, "x", declared={"x-queue-type": "quorum"})[0] == "p") is quorum
    assert (names(engine, "x", kind=EXCHANGE)[0] == "p") is exchange


def test_policy_keys_become_arguments(engine: PolicyEngine) -> None:
    engine.set(POLICY, "/", "p", ".*", {
        "max-length": 10, "max-length-bytes": 1000, "overflow": "reject-publish", "message-ttl": 60000,
        "expires": 120000, "dead-letter-exchange": "dlx", "dead-letter-routing-key": "dead",
        "delivery-limit": 3, "consumer-timeout": 5000, "queue-mode": "lazy", "retry-delays": [100, 1000],
    })
    assert engine.queue_arguments("/", "q", {"x-custom": 1}) == {
        "x-custom": 1, "x-max-length": 10, "x-max-length-bytes": 1000, "x-overflow": "reject-publish",
        "x-message-ttl": 60000, "x-expires": 120000, "x-dead-letter-exchange": "dlx",
        "x-dead-letter-routing-key": "dead", "x-delivery-limit": 3, "x-consumer-timeout": 5000,
        "x-retry-delays": [100, 1000],
    }


def test_arguments_and_policy_numeric_lower_wins_else_argument(engine: PolicyEngine) -> None:
    engine.set(POLICY, "/", "p", ".*", {"max-length": 10, "message-ttl": 5000, "overflow": "reject-publish",
                                        "dead-letter-exchange": "policy-dlx"})
    declared = {"x-max-length": 100, "x-message-ttl": 1000, "x-overflow": "drop-head",
                "x-dead-letter-exchange": "arg-dlx"}
    assert engine.queue_arguments("/", "q", declared) == {
        "x-max-length": 10, "x-message-ttl": 1000, "x-overflow": "drop-head", "x-dead-letter-exchange": "arg-dlx"}


def test_operator_policy_lower_limit_wins_and_adds(engine: PolicyEngine) -> None:
    engine.set(POLICY, "/", "p", ".*", {"max-length": 10, "message-ttl": 1000, "overflow": "reject-publish"})
    engine.set(OPERATOR_POLICY, "/", "op", ".*", {"max-length": 5, "message-ttl": 9000, "expires": 60000})
    applied = engine.applied("/", QUEUE, "q")
    assert applied.definition == {"expires": 60000, "max-length": 5, "message-ttl": 1000,
                                  "overflow": "reject-publish"}
    assert engine.queue_arguments("/", "q", {"x-max-length": 2}) == {
        "x-max-length": 2, "x-message-ttl": 1000, "x-overflow": "reject-publish", "x-expires": 60000}


def test_operator_policy_alone(engine: PolicyEngine) -> None:
    engine.set(OPERATOR_POLICY, "/", "op", "^cap", {"max-length-bytes": 1 << 20}, apply_to="queues")
    assert names(engine, "capped") == (None, "op")
    assert engine.queue_arguments("/", "capped", {}) == {"x-max-length-bytes": 1 << 20}


def test_alternate_exchange_for_exchanges_argument_wins(engine: PolicyEngine) -> None:
    engine.set(POLICY, "/", "p", "^x", {"alternate-exchange": "ae"}, apply_to="exchanges")
    assert engine.exchange_arguments("/", "x1", {}) == {"alternate-exchange": "ae"}
    assert engine.exchange_arguments("/", "x1", {"alternate-exchange": "mine"}) == {"alternate-exchange": "mine"}
    assert engine.exchange_arguments("/", "y", {}) == {}
    assert "alternate-exchange" not in engine.queue_arguments("/", "x1", {})


def test_dedup_window_only_on_deduplicating_queues(engine: PolicyEngine) -> None:
    engine.set(POLICY, "/", "p", ".*", {"cache-ttl": 60000, "cache-size": 10})
    assert engine.queue_arguments("/", "plain", {}) == {}
    assert engine.queue_arguments("/", "d", {"x-message-deduplication": True}) == {
        "x-message-deduplication": True, "x-cache-ttl": 60000, "x-cache-size": 10}


def test_no_policies_returns_declared_unchanged(engine: PolicyEngine) -> None:
    declared = {"x-max-length": 1}
    assert engine.queue_arguments("/", "q", declared) is declared


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"pattern": "("}, "pattern should be regular expression but is invalid"),
        ({"pattern": 1}, "pattern should be a binary but was 1"),
        ({"definition": {"max-priority": 10}}, '[{<<"max-priority">>,10}] are not recognised policy settings'),
        ({"definition": {"bogus": 1, "max-length": 1}}, '[{<<"bogus">>,1}] are not recognised policy settings'),
        ({"definition": {"max-length": -1}}, "-1 is not a valid maximum length"),
        ({"definition": {"max-length": "x"}}, '<<"x">> is not a valid maximum length'),
        ({"definition": {"max-length": 1.5}}, "1.5 is not a valid maximum length"),
        ({"definition": {"message-ttl": -1}}, "-1 is not a valid message TTL"),
        ({"definition": {"expires": 0}}, "0 is not a valid queue expiry"),
        ({"definition": {"overflow": "nope"}}, '<<"nope">> is not a valid overflow value'),
        ({"definition": {"delivery-limit": -1}}, "-1 is not a valid delivery limit"),
        ({"definition": {"dead-letter-exchange": 1}}, "1 is not a valid dead letter exchange name"),
        ({"definition": {"queue-mode": "x"}}, '<<"x">> is not a valid queue-mode value'),
        ({"definition": {"retry-delays": []}}, "[] is not a valid list of retry delays"),
        ({"definition": {}}, "no policy provided"),
        ({"definition": [1]}, "definition must be a dictionary: [1]"),
        ({"apply_to": "bogus"}, "apply-to 'bogus' unrecognised"),
        ({"priority": "x"}, 'priority should be a number, actually was <<"x">>'),
    ],
)
def test_refusals_name_the_problem_and_change_nothing(
    engine: PolicyEngine, store: MemoryMetadataStore, kwargs: dict[str, Any], text: str
) -> None:
    engine.set(POLICY, "/", "p", ".*", {"max-length": 7})
    recorder = Recorder()
    engine.attach(recorder.arguments_changed)
    args: dict[str, Any] = {"pattern": ".*", "definition": {"max-length": 1}, "priority": 0, "apply_to": "all"}
    args.update(kwargs)
    with pytest.raises(InvalidPolicy) as refused:
        engine.set(POLICY, "/", "p", **args)
    assert text in refused.value.text
    policy = engine.get(POLICY, "/", "p")
    assert policy is not None and policy.definition == {"max-length": 7}
    assert PolicyEngine(store).get(POLICY, "/", "p") == policy
    assert recorder.changed == []


@pytest.mark.parametrize("key", ["overflow", "dead-letter-exchange", "queue-mode", "alternate-exchange"])
def test_operator_policies_take_only_limits(engine: PolicyEngine, key: str) -> None:
    with pytest.raises(InvalidPolicy, match="are not recognised policy settings"):
        engine.set(OPERATOR_POLICY, "/", "op", ".*", {key: "drop-head"})
    assert engine.listed(OPERATOR_POLICY) == []


def test_changes_notify_the_broker(engine: PolicyEngine) -> None:
    recorder = Recorder()
    engine.attach(recorder.arguments_changed)
    assert engine.set(POLICY, "v", "p", ".*", {"max-length": 1}) is False
    assert engine.set(POLICY, "v", "p", ".*", {"max-length": 2}) is True
    assert engine.set(OPERATOR_POLICY, "w", "op", ".*", {"max-length": 2}) is False
    assert engine.delete(POLICY, "v", "p") is True
    assert engine.delete(POLICY, "v", "p") is False
    assert recorder.changed == ["v", "v", "w", "v"]


def test_durable_and_reloaded(store: MemoryMetadataStore) -> None:
    first = PolicyEngine(store)
    first.set(POLICY, "/", "p", "^q", {"max-length": 3}, priority=2, apply_to="queues")
    first.set(OPERATOR_POLICY, "/", "op", ".*", {"message-ttl": 10})
    first.set(POLICY, "/", "gone", ".*", {"max-length": 9})
    first.delete(POLICY, "/", "gone")
    again = PolicyEngine(store)
    assert [p.document() for p in again.listed(POLICY)] == [
        {"vhost": "/", "name": "p", "pattern": "^q", "apply-to": "queues", "definition": {"max-length": 3},
         "priority": 2}]
    assert again.queue_arguments("/", "q", {}) == {"x-max-length": 3, "x-message-ttl": 10}


def test_forget_vhost_removes_its_policies_durably(store: MemoryMetadataStore, engine: PolicyEngine) -> None:
    engine.set(POLICY, "gone", "p", ".*", {"max-length": 3})
    engine.set(OPERATOR_POLICY, "gone", "op", ".*", {"max-length": 3})
    engine.set(POLICY, "kept", "p", ".*", {"max-length": 3})
    engine.forget_vhost("gone")
    for each in (engine, PolicyEngine(store)):
        assert [(p.vhost, p.name) for p in each.listed(POLICY)] == [("kept", "p")]
        assert each.listed(OPERATOR_POLICY) == []


def test_listing_order_and_export_shape(engine: PolicyEngine) -> None:
    engine.set(POLICY, "b", "x", ".*", {"max-length": 1}, priority=3)
    engine.set(POLICY, "a", "y", ".*", {"max-length": 1}, priority=1)
    assert [p["name"] for p in engine.list_policies()] == ["y", "x"]
    engine.set_policy("a", "z", "^z", {"expires": 1000}, 0, "queues")  # the definitions importer's way
    policy = engine.get(POLICY, "a", "z")
    assert policy is not None and policy.apply_to == "queues"


def test_erlang_term() -> None:
    assert erlang_term("a\"b") == '<<"a\\"b">>'
    assert erlang_term([1, True, None, 2.5]) == "[1,true,null,2.5]"


def test_matching_without_the_pattern_set_gives_the_same_answers(engine: PolicyEngine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Patterns are matched as one RE2 set; when one cannot be built, one by one, with the same result."""
    engine.set(POLICY, "/", "a", "^a", {"max-length": 1}, priority=1)
    engine.set(POLICY, "/", "b", "b$", {"max-length": 2}, priority=2)
    engine.set(POLICY, "/", "e", "", {"max-length": 3})
    queues = ["ab", "a", "b", "x", ""]
    with_set = [names(engine, q)[0] for q in queues]
    import re2

    class Broken:
        @staticmethod
        def SearchSet(options: Any) -> Any:  # noqa: N802 -- re2's name
            raise re2.error("too big")

    monkeypatch.setattr(re2, "Set", Broken)
    engine.set(POLICY, "/", "z", "^never-matches$", {"max-length": 4})  # rebuilds the index
    assert [names(engine, q)[0] for q in queues] == with_set == ["b", "a", "b", "e", "e"]


def test_ttls_beyond_ten_years_are_accepted_and_run_as_ten_years(engine: PolicyEngine) -> None:
    from mailslot.core.arguments import MAX_TTL

    engine.set(POLICY, "/", "long", ".*", {"message-ttl": MAX_TTL * 2, "expires": MAX_TTL + 1})  # RabbitMQ takes these
    assert engine.queue_arguments("/", "q", {}) == {"x-message-ttl": MAX_TTL, "x-expires": MAX_TTL}
    assert engine.applied("/", QUEUE, "q").definition == {"expires": MAX_TTL + 1, "message-ttl": MAX_TTL * 2}
