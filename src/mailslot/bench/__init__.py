"""Load generation against any AMQP 0-9-1 broker (mailslot or RabbitMQ): ``mailslot bench``."""

from .runner import BenchConfig, percentiles, run_bench

__all__ = ["BenchConfig", "percentiles", "run_bench"]
