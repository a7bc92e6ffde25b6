"""The one way a queue feature plugs into a queue.

A queue feature (deduplication, ...) is a :class:`QueueFeature`: an object built for one queue from
the queue's *effective* arguments (declared arguments combined with policies, core/argument_source.py)
that overrides the hooks it needs. ``Queue`` composes its features into one :class:`Hooks` per queue:
a tuple per hook holding only the features that override it, so a queue calls a hook only when some
feature of it needs it, and a queue without features runs exactly the code it ran before features
existed (one falsy-tuple test on enqueue, settle and purge). Composition happens when the queue is
built and again on every ``Queue.reconfigure`` (policies change effective arguments on live queues).

Which features exist and which arguments build them is core/featureset.py; recovery of the rows a
feature keeps in the message log goes through the typed store keys of core/storekeys.py.

Hooks, in the order a message meets them:

* ``admit(queue, message) -> int``: before the queue stores a message; 0 lets it in, any other value
  is the enqueue outcome (``Outcome.DUPLICATE``) and the message is not stored.
* ``enqueued(queue, message, outcome)``: after the queue stored it (``ACCEPTED``) or refused it
  (``REJECTED``, over a limit with a reject-publish overflow).
* ``settle(queue, entries)``: entries left the queue for good (acked, dropped, dead-lettered, expired).
* ``purge(queue)``: every ready message went (queue.purge, and the queue's deletion).
* ``close(queue)``: the feature leaves the queue (deleted, or a reconfigure no longer asks for it).
* ``tick(now)``: timer work, called by the broker's feature timer for features that override it.
* ``restore(recovered)``: at start-up, rows under a store key the feature owns (``owned_keys``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..storage.api import QueueRecovery
    from .message import Entry, Message
    from .outcome import Outcome
    from .queue import Queue


class QueueFeature:
    """Base class: every hook does nothing. A subclass overrides what it needs; ``Hooks`` finds out which."""

    name: ClassVar[str] = ""

    def admit(self, queue: Queue, message: Message) -> int:
        return 0

    def enqueued(self, queue: Queue, message: Message, outcome: Outcome) -> None:
        pass

    def settle(self, queue: Queue, entries: list[Entry]) -> None:
        pass

    def purge(self, queue: Queue) -> None:
        pass

    def close(self, queue: Queue) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def owned_keys(self) -> tuple[str, ...]:
        """Store keys whose rows this feature keeps (recovery hands them back through ``restore``)."""
        return ()

    def restore(self, recovered: QueueRecovery) -> None:
        pass

    def same_as(self, arguments: dict[str, Any]) -> bool:
        """Would the feature built from ``arguments`` be this one? Then a reconfigure keeps it (and its state)."""
        return False


def _overrides(feature: QueueFeature, hook: str) -> bool:
    return getattr(type(feature), hook) is not getattr(QueueFeature, hook)


class Hooks:
    """A queue's features, one tuple per hook of those that override it (empty: the hook is skipped)."""

    __slots__ = ("admit", "all", "enqueued", "purge", "settle", "tick")

    def __init__(self, features: tuple[QueueFeature, ...] = ()) -> None:
        self.all = features
        self.admit = tuple(f for f in features if _overrides(f, "admit"))
        self.enqueued = tuple(f for f in features if _overrides(f, "enqueued"))
        self.settle = tuple(f for f in features if _overrides(f, "settle"))
        self.purge = tuple(f for f in features if _overrides(f, "purge"))
        self.tick = tuple(f for f in features if _overrides(f, "tick"))

    def find(self, name: str) -> QueueFeature | None:
        for feature in self.all:
            if feature.name == name:
                return feature
        return None


NO_HOOKS = Hooks()
