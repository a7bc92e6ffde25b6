"""Transcripts of differential scenarios and the two ways of comparing them (see test_differential.py)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "golden"

Transcript = list[Any]  # (event, values...) entries, in the order the scenario saw them
Scenario = Callable[[str], Transcript]  # broker URL -> transcript


def uid() -> str:
    """A short unique suffix: RabbitMQ is shared, so every name a scenario creates carries one."""
    return uuid.uuid4().hex[:10]


def normalise(transcript: Transcript) -> Transcript:
    """As JSON would give it back: tuples become lists, so a transcript compares equal to its golden file."""
    return json.loads(json.dumps(transcript))  # type: ignore[no-any-return]


def assert_matches_golden(scenario: Scenario, golden_name: str, broker_name: str, broker_url: str) -> None:
    """The transcript equals ``golden/<golden_name>.json``, recorded from RabbitMQ 3.10 (with
    ``MAILSLOT_RECORD_GOLDEN=1`` a RabbitMQ run records it instead)."""
    got = normalise(scenario(broker_url))
    path = GOLDEN / f"{golden_name}.json"
    if os.environ.get("MAILSLOT_RECORD_GOLDEN") == "1" and broker_name == "rabbitmq":
        path.write_text(json.dumps(got, indent=1) + "\n")
    assert path.exists(), f"no golden transcript {path}; record it from RabbitMQ (see test_differential.py)"
    assert got == json.loads(path.read_text())


def assert_same_on_both(scenario: Scenario, broker_pair: dict[str, str]) -> None:
    """The scenario run on both brokers in the same test gives the same transcript."""
    transcripts = {name: normalise(scenario(url)) for name, url in broker_pair.items()}
    assert transcripts["mailslot"] == transcripts["rabbitmq"]
