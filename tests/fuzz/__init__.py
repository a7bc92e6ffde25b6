"""Fuzz and property tests: malformed AMQP input never crashes the broker or disturbs other connections."""
