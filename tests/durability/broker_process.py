"""The durability tests' broker process: see ``mailslot.bench.broker_process``."""

from mailslot.bench.broker_process import BrokerProcess

__all__ = ["BrokerProcess"]
