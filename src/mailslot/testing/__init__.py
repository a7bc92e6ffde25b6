"""Test helpers shipped with mailslot, so that you can test *your* code against a real AMQP
0-9-1 broker with no Docker and no RabbitMQ. See docs/testing.md.

- ``async with running_broker() as broker:`` a broker in the current event loop (aio-pika).
- ``with broker_in_thread() as broker:`` a broker in a background thread (pika, kombu, Celery).
- pytest fixtures ``mailslot_broker`` and ``mailslot_url``, registered automatically.
- :class:`FakeClock` for code that takes time as an input.
- :class:`CoreHarness` (with :class:`RecordingSink`, :class:`Delivery`): mailslot's broker core driven
  by hand on a fake clock, for tests of the core itself (flush, advance, restart, crash).
- ``BrokerServer``: the type of the broker the helpers and fixtures hand you (for annotations).
- :func:`default_access`: the access control of a fresh broker (guest/guest), for hand-built front ends.

Names are imported on first use (PEP 562): pytest imports this package for its plugin in every
project that has mailslot installed, and that must not load the whole broker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailslot.bootstrap import BrokerServer
    from mailslot.testing.access import default_access
    from mailslot.testing.broker import broker_in_thread, make_config, running_broker
    from mailslot.testing.clock import FakeClock
    from mailslot.testing.core import ArgumentOverrides, CoreHarness, Delivery, RecordingSink

__all__ = [
    "ArgumentOverrides",
    "BrokerServer",
    "CoreHarness",
    "Delivery",
    "FakeClock",
    "RecordingSink",
    "broker_in_thread",
    "default_access",
    "make_config",
    "running_broker",
]

_HOMES = {
    "ArgumentOverrides": "mailslot.testing.core",
    "BrokerServer": "mailslot.bootstrap",
    "CoreHarness": "mailslot.testing.core",
    "Delivery": "mailslot.testing.core",
    "FakeClock": "mailslot.testing.clock",
    "RecordingSink": "mailslot.testing.core",
    "broker_in_thread": "mailslot.testing.broker",
    "default_access": "mailslot.testing.access",
    "make_config": "mailslot.testing.broker",
    "running_broker": "mailslot.testing.broker",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted(__all__)
