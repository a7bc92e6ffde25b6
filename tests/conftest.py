"""Shared fixtures for the integration and interop suites.

Every client-level scenario runs against BOTH brokers through the parametrised ``broker_url`` fixture:

* ``mailslot``: an in-process broker on an ephemeral port (``mailslot.testing.broker_in_thread``), one per test;
* ``rabbitmq``: the reference RabbitMQ 3.10 on 127.0.0.1:5672 (guest/guest), marked ``interop``. Skipped when
  unreachable unless ``MAILSLOT_REQUIRE_SERVICES=1`` (then it fails, so CI cannot silently skip it).

Tests share one RabbitMQ, so every queue/exchange name carries a uuid suffix (``unique_name``) and every
non-auto-delete resource is registered with the ``cleanup`` fixture, which deletes it after the test.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The one wait_for lives in helpers.py; re-exported for tests written against ``from conftest import wait_for``.
from helpers import async_wait_for, wait_for  # noqa: F401

# Let the suites import mailslot from the source tree when the package is not installed in the venv.
_SRC = Path(__file__).resolve().parent.parent / "src"
try:  # pragma: no cover - depends on the environment
    import mailslot  # noqa: F401
except ImportError:  # pragma: no cover
    if _SRC.is_dir():
        sys.path.insert(0, str(_SRC))

RABBITMQ_HOST = "127.0.0.1"
RABBITMQ_PORT = 5672
RABBITMQ_URL = f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/%2F"

BROKERS = [
    pytest.param("mailslot", id="mailslot"),
    pytest.param("rabbitmq", id="rabbitmq", marks=pytest.mark.interop),
]


def _require_services() -> bool:
    return os.environ.get("MAILSLOT_REQUIRE_SERVICES", "") == "1"


def rabbitmq_reachable(timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((RABBITMQ_HOST, RABBITMQ_PORT), timeout=timeout):
            return True
    except OSError:
        return False


def _rabbitmq_url_or_skip() -> str:
    if rabbitmq_reachable():
        return RABBITMQ_URL
    _service_missing(f"RabbitMQ not reachable on {RABBITMQ_HOST}:{RABBITMQ_PORT}")


def _service_missing(msg: str) -> Any:
    """Skip, or fail when CI requires the services (so it cannot silently skip)."""
    if _require_services():
        pytest.fail(msg + " and MAILSLOT_REQUIRE_SERVICES=1")
    pytest.skip(msg)


POSTGRES_DSN = os.environ.get("MAILSLOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_dsn() -> str:
    """The PostgreSQL at 127.0.0.1:5432, database ``test`` (worker inbox and chaos runs)."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_DSN, connect_timeout=2):
            return POSTGRES_DSN
    except Exception as exc:
        return str(_service_missing(f"PostgreSQL not reachable at {POSTGRES_DSN}: {exc}"))


@contextlib.contextmanager
def _mailslot_broker() -> Iterator[Any]:
    # Imported lazily: collection must not depend on the broker being implemented yet.
    from mailslot.testing import broker_in_thread

    with broker_in_thread(store="memory") as broker:
        yield broker


@pytest.fixture(params=BROKERS)
def broker_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def broker_url(broker_name: str) -> Iterator[str]:
    """AMQP URL of the broker under test (``amqp://guest:guest@127.0.0.1:PORT/%2F``)."""
    if broker_name == "rabbitmq":
        yield _rabbitmq_url_or_skip()
        return
    with _mailslot_broker() as broker:
        yield str(broker.amqp_url)


@pytest.fixture
async def async_broker_url(broker_name: str) -> AsyncIterator[str]:
    """Like ``broker_url``, but mailslot runs in the test's own event loop (``running_broker``)."""
    if broker_name == "rabbitmq":
        yield _rabbitmq_url_or_skip()
        return
    from mailslot.testing import running_broker

    async with running_broker(store="memory") as broker:
        yield str(broker.amqp_url)


@pytest.fixture
def broker_addr(broker_url: str) -> tuple[str, int]:
    """(host, port) of the broker under test, for raw-socket tests."""
    from urllib.parse import urlparse

    parsed = urlparse(broker_url)
    return parsed.hostname or "127.0.0.1", parsed.port or 5672


@pytest.fixture
def broker_pair() -> Iterator[dict[str, str]]:
    """Both brokers at once, for differential tests that compare transcripts directly."""
    rabbit = _rabbitmq_url_or_skip()
    with _mailslot_broker() as broker:
        yield {"mailslot": str(broker.amqp_url), "rabbitmq": rabbit}


def unique_name(prefix: str = "t") -> str:
    return f"mailslot-test.{prefix}.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def uname(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``uname("q")`` -> a name unique to this test (shared RabbitMQ isolation)."""
    base = request.node.name.split("[")[0][-30:]

    def make(prefix: str = "q") -> str:
        return unique_name(f"{base}.{prefix}")

    return make


class Cleanup:
    """Registers queues/exchanges to delete after the test, through a fresh pika connection."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, name: str) -> str:
        self.queues.append(name)
        return name

    def exchange(self, name: str) -> str:
        self.exchanges.append(name)
        return name

    def run(self) -> None:
        if self.url is None or not (self.queues or self.exchanges):
            return
        import pika

        try:
            conn = pika.BlockingConnection(pika.URLParameters(self.url))
        except Exception:  # broker already gone (mailslot per-test broker): nothing to clean
            return
        try:
            for kind, names in (("queue", self.queues), ("exchange", self.exchanges)):
                for name in names:
                    try:
                        ch = conn.channel()
                        if kind == "queue":
                            ch.queue_delete(name)
                        else:
                            ch.exchange_delete(name)
                        ch.close()
                    except Exception:
                        pass
        finally:
            with contextlib.suppress(Exception):
                conn.close()


@pytest.fixture
def cleanup(broker_url: str) -> Iterator[Cleanup]:
    c = Cleanup()
    c.url = broker_url
    yield c
    c.run()
