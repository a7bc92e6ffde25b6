"""What became of a message handed to the core: one enum for a queue's ``enqueue`` and a session's
``publish`` (they used to be two sets of integers, each with its own ``REJECTED = 2``).

A front end maps it onto its protocol: AMQP 0-9-1 confirms ``ROUTED`` (``ACCEPTED``) and ``DUPLICATE``
with basic.ack, nacks ``REJECTED`` and returns a mandatory ``UNROUTED`` message (basic.return 312).
"""

from __future__ import annotations

from enum import IntEnum


class Outcome(IntEnum):
    UNROUTED = 0  # publish: no queue was bound to take it
    ACCEPTED = 1  # enqueue: the queue stored it
    ROUTED = 1  # publish: every queue it was routed to stored it (ACCEPTED, seen from the session)
    REJECTED = 2  # over x-max-length / x-max-length-bytes with x-overflow reject-publish(-dlx)
    DUPLICATE = 3  # its deduplication key is in the queue's window (core.dedup): confirmed, not stored
