"""Test helpers shipped with mailslot, so that you can test *your* code against a real AMQP
0-9-1 broker with no Docker and no RabbitMQ. See docs/testing.md.

- ``async with running_broker() as broker:`` a broker in the current event loop (aio-pika).
- ``with broker_in_thread() as broker:`` a broker in a background thread (pika, kombu, Celery).
- pytest fixtures ``mailslot_broker`` and ``mailslot_url``, registered automatically.
- :class:`FakeClock` for code that takes time as an input.
"""

from mailslot.testing.broker import broker_in_thread, make_config, running_broker
from mailslot.testing.clock import FakeClock

__all__ = ["FakeClock", "broker_in_thread", "make_config", "running_broker"]
