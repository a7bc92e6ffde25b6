"""Publisher confirms: a publish refused after routing (a forwarded publish a full queue on the owning node
refused, mailslot.cluster) is nacked alone, once, at its batch's release; a failed batch forgets them."""

from __future__ import annotations

from typing import Any

from mailslot.frontends.amqp091.confirms import PublisherConfirms


class _Proto:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bool]] = []

    def send_ack(self, channel: int, tag: int, multiple: bool) -> None:
        self.sent.append(("ack", tag, multiple))

    def send_nack(self, channel: int, tag: int, multiple: bool) -> None:
        self.sent.append(("nack", tag, multiple))


def _confirms(published: int) -> PublisherConfirms:
    confirms = PublisherConfirms()
    confirms.published = published
    return confirms


def test_refused_publishes_are_nacked_alone_and_once_in_order() -> None:
    confirms, proto = _confirms(8), _Proto()
    confirms.rejected.append(7)  # refused here at publish time (a local full queue)
    for seq in (5, 2, 7, 5):  # refused by owners, answers in any order, twice for a publish sent to two queues
        confirms.refuse(seq)
    proto_any: Any = proto
    assert confirms.release(proto_any, 1, 8, True)
    assert proto.sent == [("ack", 1, False), ("nack", 2, False), ("ack", 4, True), ("nack", 5, False),
                          ("ack", 6, False), ("nack", 7, False), ("ack", 8, False)]
    assert confirms.rejected == [] and confirms.acked == 5
    confirms.refuse(3)  # already confirmed: nothing more is sent for it
    assert confirms.rejected == []


def test_a_failed_batch_nacks_everything_and_forgets_its_refusals() -> None:
    confirms, proto = _confirms(4), _Proto()
    confirms.refuse(2)
    proto_any: Any = proto
    confirms.release(proto_any, 1, 3, False)
    assert proto.sent == [("nack", 3, True)]
    assert confirms.rejected == []
    confirms.release(proto_any, 1, 4, True)
    assert proto.sent[-1] == ("ack", 4, False)
