"""Publisher confirms of one channel (https://www.rabbitmq.com/docs/confirms#publisher-confirms).

Publishes are numbered from 1 once confirm.select arrived. A publish is confirmed after the store batch
that holds it is committed: the channel hooks one commit waiter per batch, and after the commit one
basic.ack (multiple) covers everything the batch holds, with a basic.nack for each publish a full queue
refused (x-overflow reject-publish) or every publish of a batch the store failed to write.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...protocols.amqp091 import ServerConnection


class PublisherConfirms:
    """The confirm state of one channel in confirm mode."""

    __slots__ = ("acked", "confirmed", "hooked", "published", "rejected")

    def __init__(self) -> None:
        self.acked = 0  # publishes confirmed positively so far (the management API's "confirm" counter)
        self.published = 0  # publish sequence number of the last publish
        self.confirmed = 0  # every sequence number up to this one is acked or nacked
        self.rejected: list[int] = []  # sequence numbers a full queue refused: nacked
        self.hooked = False  # a commit waiter for the current batch is registered

    def refuse(self, seq: int) -> None:
        """Publish ``seq`` was refused where it went (a forwarded publish the owner's full queue refused):
        nacked at its batch's release, which is still to come."""
        rejected = self.rejected
        at = bisect.bisect_left(rejected, seq)
        if seq > self.confirmed and (at == len(rejected) or rejected[at] != seq):  # once, whatever refused it
            rejected.insert(at, seq)

    def release(self, proto: ServerConnection, channel: int, upto: int, ok: bool) -> bool:
        """After the group commit: ack (multiple) everything up to ``upto`` except the rejected ones, which
        are nacked; everything when the commit failed (``ok`` false). False when nothing was due."""
        if upto <= self.confirmed:
            return False
        cursor = self.confirmed
        nacks = [seq for seq in self.rejected if seq <= upto]
        if nacks:
            self.rejected = [seq for seq in self.rejected if seq > upto]
        if not ok:
            proto.send_nack(channel, upto, upto - cursor > 1)
        else:
            for seq in nacks:
                if seq - 1 > cursor:
                    proto.send_ack(channel, seq - 1, seq - 1 - cursor > 1)
                proto.send_nack(channel, seq, False)
                cursor = seq
            if upto > cursor:
                proto.send_ack(channel, upto, upto - cursor > 1)
            self.acked += upto - self.confirmed - len(nacks)
        self.confirmed = upto
        return True


class ConfirmRelease:
    """Commit waiter of one confirm channel for one batch: confirms what was published before the cut."""

    __slots__ = ("confirms", "release", "upto")

    def __init__(self, confirms: PublisherConfirms, release: Callable[[int, bool], None]) -> None:
        self.confirms = confirms
        self.release = release
        self.upto = 0

    def batch_cut(self) -> None:
        self.upto = self.confirms.published
        self.confirms.hooked = False  # later publishes wait for the next batch

    def committed(self, ok: bool) -> None:
        self.release(self.upto, ok)
