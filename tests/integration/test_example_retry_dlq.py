"""examples/retry_dlq runs as documented: its producer, worker and dead-letter reader against an in-process
broker, with the delays shortened."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mailslot.testing import broker_in_thread

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "retry_dlq"
FAST = {"retry_delays_ms": [200, 400], "delivery_limit": 2}

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def example() -> Iterator[dict[str, ModuleType]]:
    """The example's modules, imported as its README runs them (from its directory)."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        import dead_letters
        import producer
        import topology
        import worker

        yield {"topology": topology, "producer": producer, "worker": worker, "dead_letters": dead_letters}
    finally:
        sys.path.remove(str(EXAMPLE))
        for name in ("topology", "producer", "worker", "dead_letters"):
            sys.modules.pop(name, None)


def test_flaky_worker_retries_with_backoff_and_dead_letters_the_poison_order(example):
    worker = example["worker"]
    attempts: dict[int, list[float]] = {}

    def handle(order: dict[str, Any]) -> None:
        number = order["order"]
        attempts.setdefault(number, []).append(time.monotonic())
        if number == 3 or (number == 2 and len(attempts[number]) == 1):  # 3: poison; 2: fails once
            raise worker.TemporaryFailure("downstream unavailable")

    lines: list[str] = []
    with broker_in_thread() as broker:
        example["producer"].publish_orders(broker.amqp_url, 4, **FAST)
        worker.run_worker(broker.amqp_url, handle, idle_seconds=1.5, log=lines.append, **FAST)
        dead = example["dead_letters"].dead_letters(broker.amqp_url, **FAST)
    assert dead == [{"order": 3, "reason": "delivery_limit", "queue": "orders"}]
    assert [len(attempts[n]) for n in (1, 2, 3, 4)] == [1, 2, 3, 1]  # limit 2: the poison order gets 3 tries
    gaps = [b - a for a, b in itertools.pairwise(attempts[3])]
    assert gaps[0] >= 0.19 and gaps[1] >= 0.39, gaps  # waited 200 ms, then 400 ms
    assert "order 2: done on attempt 2" in lines
    assert "order 3: attempt 3 failed (downstream unavailable); retried later" in lines


def test_the_programs_take_the_broker_url_from_argv_then_env(example, monkeypatch):
    topology = example["topology"]
    monkeypatch.setattr(sys, "argv", ["worker.py"])
    monkeypatch.delenv("AMQP_URL", raising=False)
    assert topology.broker_url() == "amqp://guest:guest@localhost:5672/%2F"
    monkeypatch.setenv("AMQP_URL", "amqp://u:p@elsewhere/%2F")
    assert topology.broker_url() == "amqp://u:p@elsewhere/%2F"
    monkeypatch.setattr(sys, "argv", ["worker.py", "amqp://first/%2F"])
    assert topology.broker_url() == "amqp://first/%2F"
