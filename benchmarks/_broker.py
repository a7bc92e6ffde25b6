"""The benchmarks' broker process: ``mailslot.bench.broker_process`` (one implementation for the
benchmarks, ``mailslot spike --start`` and the durability tests)."""

from mailslot.bench.broker_process import BrokerProcess as MailslotProcess

__all__ = ["MailslotProcess"]
