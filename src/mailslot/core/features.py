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
  is the enqueue outcome (``queue.DUPLICATE``) and the message is not stored.
* ``enqueued(queue, message, outcome)``: after the queue stored it (``ACCEPTED``) or refused it
  (``REJECTED``, over a limit with a reject-publish overflow).
* ``settle(queue, entries)``: entries left the queue for good (acked, dropped, dead-lettered, expired).
* ``purge(queue)``: every ready message went (queue.purge, and the queue's deletion).
* ``close(queue)``: the feature leaves the queue (deleted, or a reconfigure no longer asks for it).

Timer work and the rows a feature keeps in the message log are not queue hooks: the feature registers
a store owner (core/featureset.py ``StoreOwner``: ``restore`` and ``tick``) in ``VirtualHost.owners``
under its own store key, which recovery finds by the key's kind and the broker's feature timer ticks
(DedupFeature's window). So a timer never walks every queue to find the few with features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .message import Entry, Message
    from .queue import Queue


class QueueFeature:
    """Base class: every hook does nothing. A subclass overrides what it needs; ``Hooks`` finds out which."""

    name: ClassVar[str] = ""

    def admit(self, queue: Queue, message: Message) -> int:
        return 0

    def enqueued(self, queue: Queue, message: Message, outcome: int) -> None:
        pass

    def settle(self, queue: Queue, entries: list[Entry]) -> None:
        pass

    def purge(self, queue: Queue) -> None:
        pass

    def close(self, queue: Queue) -> None:
        pass

    def same_as(self, arguments: dict[str, Any]) -> bool:
        """Would the feature built from ``arguments`` be this one? Then a reconfigure keeps it (and its state)."""
        return False


def _overrides(feature: QueueFeature, hook: str) -> bool:
    return getattr(type(feature), hook) is not getattr(QueueFeature, hook)


class Hooks:
    """A queue's features, one tuple per hook of those that override it (empty: the hook is skipped)."""

    __slots__ = ("admit", "all", "enqueued", "purge", "settle")

    def __init__(self, features: tuple[QueueFeature, ...] = ()) -> None:
        self.all = features
        self.admit = tuple(f for f in features if _overrides(f, "admit"))
        self.enqueued = tuple(f for f in features if _overrides(f, "enqueued"))
        self.settle = tuple(f for f in features if _overrides(f, "settle"))
        self.purge = tuple(f for f in features if _overrides(f, "purge"))

    def find(self, name: str) -> QueueFeature | None:
        for feature in self.all:
            if feature.name == name:
                return feature
        return None


NO_HOOKS = Hooks()
