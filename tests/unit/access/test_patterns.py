"""Permission patterns: RabbitMQ's regex meaning, linear-time matching, refused backtracking features."""

from __future__ import annotations

import time

import pytest

from mailslot.core.access.patterns import MAX_PATTERN_LENGTH, InvalidPattern, Pattern, expand_variables


@pytest.mark.parametrize(
    "source, name, matches",
    [
        (".*", "anything", True),
        ("", "", True),  # empty pattern means ^$ (rabbit_auth_backend_internal)
        ("", "q", False),
        ("^amq\\.gen-", "amq.gen-abc", True),
        ("^amq\\.gen-", "x.amq.gen-abc", False),
        ("gen", "amq.gen-abc", True),  # searched anywhere, as re:run
        ("^(orders|billing)\\..*$", "billing.eu", True),
        ("^(orders|billing)\\..*$", "shipping.eu", False),
        ("(?i)^ORDERS$", "orders", True),
        ("^q[0-9]{2,3}$", "q123", True),
        ("^q[0-9]{2,3}$", "q1234", False),
    ],
)
def test_pcre_meaning(source: str, name: str, matches: bool) -> None:
    assert Pattern(source).matches(name) is matches


def test_catastrophic_pattern_runs_in_linear_time() -> None:
    # On a backtracking engine (PCRE, Python's re) this takes longer than the universe has left.
    pattern = Pattern("^(a+)+$")
    start = time.perf_counter()
    for _ in range(100):
        assert not pattern.matches("a" * 250 + "!")
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("source", ["^(?!amq\\.).*", "(?=x)", "(?<=a)b", "(?<!a)b", "(a)\\1"])
def test_backtracking_features_are_refused_with_the_reason(source: str) -> None:
    with pytest.raises(InvalidPattern, match="backreferences and lookaround"):
        Pattern(source)


def test_malformed_and_huge_patterns_are_refused() -> None:
    with pytest.raises(InvalidPattern, match="invalid pattern '\\(unclosed'"):
        Pattern("(unclosed")
    with pytest.raises(InvalidPattern, match="longer than"):
        Pattern("a" * (MAX_PATTERN_LENGTH + 1))
    with pytest.raises(InvalidPattern):
        Pattern("((a{1000}){1000}){1000}")  # a program far over the memory bound


def test_variables_are_escaped_before_they_reach_the_regex() -> None:
    source = expand_variables("^{username}\\.{vhost}\\.", {"username": "a.*", "vhost": "v|w"})
    pattern = Pattern(source)
    assert pattern.matches("a.*.v|w.x")
    assert not pattern.matches("abc.v.x")  # unescaped, "a.*" would have matched "abc"
    assert not pattern.matches("a.*.w.x")
