"""Fixtures for the management API and metrics tests: one API per broker, mailslot's (a broker in a thread)
and the reference RabbitMQ's (127.0.0.1:15672 and :15692, guest/guest)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import _service_missing
from helpers import rabbitmq_management_reachable

from .client import RABBITMQ_API, RABBITMQ_PROMETHEUS, ManagementApi


@pytest.fixture
def rabbitmq_api() -> Iterator[ManagementApi]:
    if not rabbitmq_management_reachable():
        _service_missing("RabbitMQ's management API is not reachable on 127.0.0.1:15672")
    api = ManagementApi(RABBITMQ_API, name="rabbitmq", prometheus=RABBITMQ_PROMETHEUS)
    yield api
    api.cleanup()


@pytest.fixture
def mailslot_api() -> Iterator[ManagementApi]:
    from mailslot.testing import broker_in_thread

    with broker_in_thread() as broker:
        api = ManagementApi(broker.http_url, name="mailslot", prometheus=broker.prometheus_url)
        api.amqp_url = broker.amqp_url  # type: ignore[attr-defined]
        api.broker = broker  # type: ignore[attr-defined]
        yield api


@pytest.fixture
def apis(rabbitmq_api: ManagementApi, mailslot_api: ManagementApi) -> dict[str, ManagementApi]:
    """Both APIs, for tests that make the same calls on each and compare."""
    return {"rabbitmq": rabbitmq_api, "mailslot": mailslot_api}
