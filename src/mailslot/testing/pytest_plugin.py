"""pytest fixtures for testing code that talks AMQP, loaded automatically when mailslot is
installed (entry point ``pytest11``). Each test gets its own broker on a free port:

    def test_sends_welcome_mail(mailslot_url):
        connection = pika.BlockingConnection(pika.URLParameters(mailslot_url))
        ...

Override ``mailslot_broker_options`` (a dict of :func:`mailslot.testing.broker_in_thread`
keywords) in a conftest.py or a test module to change the broker, e.g.
``{"store": "sqlite", "heartbeat": 5}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mailslot.bootstrap import BrokerServer

# The broker is imported inside the fixtures, not here: pytest loads this plugin in every project
# that has mailslot installed, and it must cost nothing (and risk nothing) where no test uses it.


@pytest.fixture
def mailslot_broker_options() -> dict[str, Any]:
    """Keywords for the ``mailslot_broker`` fixture's broker; override to change them."""
    return {}


@pytest.fixture
def mailslot_broker(mailslot_broker_options: dict[str, Any]) -> Iterator[BrokerServer]:
    """A started mailslot broker (in-memory store by default) serving from a background thread."""
    from mailslot.testing.broker import broker_in_thread

    with broker_in_thread(**mailslot_broker_options) as broker:
        yield broker


@pytest.fixture
def mailslot_url(mailslot_broker: BrokerServer) -> str:
    """``amqp://guest:guest@127.0.0.1:<port>/%2F`` of the ``mailslot_broker`` fixture."""
    return mailslot_broker.amqp_url
