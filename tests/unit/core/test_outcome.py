"""One outcome enum for the core (issue 15): a queue's enqueue and a session's publish used to return
integers of their own, each with its own ``REJECTED = 2``."""

from __future__ import annotations

from mailslot.core import queue, session
from mailslot.core.outcome import Outcome
from mailslot.testing.core import CoreHarness


def test_queue_and_session_outcomes_are_one_enum() -> None:
    assert queue.REJECTED is session.REJECTED is Outcome.REJECTED
    assert queue.ACCEPTED is session.ROUTED is Outcome.ROUTED is Outcome.ACCEPTED
    assert (queue.DUPLICATE, session.UNROUTED) == (Outcome.DUPLICATE, Outcome.UNROUTED)
    assert len({o.value for o in Outcome}) == len(Outcome) == 4  # ROUTED is ACCEPTED's alias, nothing else


def test_publish_reports_the_enum(harness: CoreHarness) -> None:
    harness.declare("capped", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    outcomes = [harness.publish(key, b"m") for key in ("capped", "capped", "nowhere")]
    assert outcomes == [Outcome.ROUTED, Outcome.REJECTED, Outcome.UNROUTED]
    assert all(type(o) is Outcome for o in outcomes)
