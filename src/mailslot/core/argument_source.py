"""Where a queue's or an exchange's *effective* arguments come from.

A queue is declared with arguments (``x-max-length``, ...); a policy or an operator policy may add to
them or cap them, and can change while the queue lives. The core asks an ``ArgumentSource`` for the
effective arguments when it builds a queue or an exchange and again when the source says they changed
(``Broker.arguments_changed``). The policy engine (core/policies.py) is one; ``DeclaredOnly`` is the
broker without policies. Effective arguments use the ``x-`` argument names, so queue features read one
dictionary whatever set the value.
"""

from __future__ import annotations

from typing import Any, Protocol


class ArgumentSource(Protocol):
    def queue_arguments(self, vhost: str, name: str, declared: dict[str, Any]) -> dict[str, Any]:
        """The arguments queue ``name`` runs with: ``declared`` combined with the policies that apply."""
        ...

    def exchange_arguments(self, vhost: str, name: str, declared: dict[str, Any]) -> dict[str, Any]:
        """The same for an exchange (``alternate-exchange``)."""
        ...


class DeclaredOnly:
    """No policies: what was declared is what runs."""

    def queue_arguments(self, vhost: str, name: str, declared: dict[str, Any]) -> dict[str, Any]:
        return declared

    def exchange_arguments(self, vhost: str, name: str, declared: dict[str, Any]) -> dict[str, Any]:
        return declared
