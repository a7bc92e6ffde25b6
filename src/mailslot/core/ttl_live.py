"""A message-ttl set or lowered on a live queue applies to the messages already queued (issue 10).

RabbitMQ 3.10 fixes a message's expiry when it is enqueued, so a policy's new ``message-ttl`` reaches
only new messages; mailslot applies it to the queued ones too, deliberately (docs/policies.md):

* When a queue's effective TTL is set, or lowered, every message it holds expires no later than the
  moment of the change + the new TTL. A queue keeps no arrival times (an entry has only its deadline;
  the ``timestamp`` property is the publisher's and optional), so the count starts at the change.
  Raising or removing the TTL extends no deadline already given, as RabbitMQ's per-message expiry.
* The change costs O(messages in memory), not O(backlog): entries in memory (window, requeued,
  overflow, held for a retry delay) get the new deadline now; paged-out ones get it when read back,
  from a *cap*, ``(upto, deadline)``: every entry with seq <= ``upto`` expires by ``deadline``. Entries
  delivered and unacked then requeued get it on requeue. A queue with no caps pays nothing.
* Caps are durable (a metadata record per queue, written when one is added), so they hold after a
  restart as the policy does; at recovery the queue's next seq is moved past them so new messages are
  never capped, and a queue that came back empty drops them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .message import Entry

if TYPE_CHECKING:
    from ..storage.api import MetadataStore
    from .queue import Queue
    from .vhost import VirtualHost

RECORD_KIND = "queue-ttl-cap"  # metadata records: queue key -> [[upto, deadline], ...]

Cap = tuple[int, int]  # (highest entry seq it covers, deadline in ms since the epoch)


def cap_entries(entries: Iterable[Entry], deadline: int) -> None:
    """Each entry expires by ``deadline`` at the latest (0, never, becomes ``deadline``)."""
    for entry in entries:
        if not entry.deadline or entry.deadline > deadline:
            entry.deadline = deadline


def apply_caps(entries: Iterable[Entry], caps: list[Cap]) -> None:
    """The caps covering each entry (read back from the log, or requeued after the change)."""
    for entry in entries:
        seq = entry.seq
        for upto, deadline in caps:
            if seq <= upto and (not entry.deadline or entry.deadline > deadline):
                entry.deadline = deadline


def added(caps: list[Cap], cap: Cap) -> list[Cap]:
    """A new list with ``cap``; older caps it makes redundant (fewer entries, later deadline) go."""
    upto, deadline = cap
    return [old for old in caps if not (old[0] <= upto and old[1] >= deadline)] + [cap]


def ttl_changed(queue: Queue, old_ttl: int | None, new_ttl: int | None) -> bool:
    """Queue.reconfigure: the effective message-ttl went from ``old_ttl`` to ``new_ttl``. When it was
    set or lowered, the queued messages are capped at now + ``new_ttl``; True when a cap was added."""
    expiry = queue.expiry
    if expiry is None or new_ttl is None or (old_ttl is not None and new_ttl >= old_ttl):
        return False
    if queue.next_seq <= 1:
        return False  # nothing ever entered it
    deadline = int(expiry.clock() * 1000) + new_ttl
    upto = (queue.next_seq << queue.store.seq_shift) - 1  # every seq handed out so far
    queue.ttl_caps = added(queue.ttl_caps, (upto, deadline))
    queue.store.cap_deadlines(queue.ttl_caps)
    queue.cap_held(deadline)
    queue.expiring = True
    return True


# ---- durability (the vhost and the broker call these) ----------------------------------------------


def save(metadata: MetadataStore, queue: Queue) -> None:
    if queue.durable and queue.exclusive_owner is None:
        metadata.save_record(RECORD_KIND, queue.key, [list(cap) for cap in queue.ttl_caps])


def forget(metadata: MetadataStore, queue: Queue) -> None:
    if queue.durable and queue.exclusive_owner is None and queue.ttl_caps:
        metadata.delete_record(RECORD_KIND, queue.key)


def recover(metadata: MetadataStore, vhosts: Iterable[VirtualHost]) -> None:
    """At start-up, after the queues' rows are restored: each durable queue takes back its caps."""
    records = metadata.load_records(RECORD_KIND)
    if not records:
        return
    queues = {queue.key: queue for vhost in vhosts for queue in vhost.queues.values()}
    for key, value in records.items():
        queue = queues.get(key)
        if queue is None or not queue.message_count:
            metadata.delete_record(RECORD_KIND, key)  # its queue is gone, or nothing it covers is left
            continue
        caps = [(int(upto), int(deadline)) for upto, deadline in value]
        queue.ttl_caps = caps
        queue.store.cap_deadlines(caps)
        # New arrivals must never fall under a cap, even where the log no longer holds the newest seqs.
        queue.next_seq = max(queue.next_seq, (max(upto for upto, _ in caps) >> queue.store.seq_shift) + 1)
        queue.expiring = True
