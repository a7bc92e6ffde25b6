"""Browsing queues without taking messages, dead-letter filters, and redrive (core/browse.py, core/redrive.py)."""

from __future__ import annotations

import pytest

from mailslot.core import queue as queue_module
from mailslot.core.browse import Filter, browse, dead_letter_sources, deaths, summarize
from mailslot.core.redrive import RedriveRequest, Redrives, Target, plan
from mailslot.testing import CoreHarness
from mailslot.testing.codec import JSON_CODEC


def dead_letter_setup(h: CoreHarness, count: int = 6) -> None:
    """work -> (rejected) -> dlx -> dlq, ``count`` messages, bodies m0..m{count-1}, headers kind=even/odd."""
    h.declare_exchange("dlx", "fanout")
    h.declare("dlq")
    h.bind("dlx", "dlq")
    h.declare("work", {"x-dead-letter-exchange": "dlx"})
    for i in range(count):
        h.publish("work", f"m{i}".encode(), JSON_CODEC.block(headers={"kind": "even" if i % 2 == 0 else "odd"}))
    h.flush()
    session = h.session
    for _ in range(count):
        tag, _entry, _left = session.get("work", no_ack=False)
        session.nack(tag, multiple=False, requeue=False)
    h.flush()


def bodies(page) -> list[bytes]:
    return [entry.message.body for _pos, entry in page.items]


def publish(h: CoreHarness):
    return lambda exchange, key, message: h.session.publish(exchange, key, message, False)


def test_browse_leaves_messages_in_place_and_not_redelivered(harness: CoreHarness) -> None:
    harness.declare("q")
    for i in range(5):
        harness.publish("q", f"b{i}".encode())
    harness.flush()
    queue = harness.vhost.queue("q")
    page = browse(queue, harness.clock(), offset=1, limit=2)
    assert bodies(page) == [b"b1", b"b2"]
    assert [pos for pos, _ in page.items] == [1, 2]
    assert harness.count("q") == 5
    found = harness.session.get("q", no_ack=True)
    assert found is not None and found[1].message.body == b"b0" and not found[1].redelivered


def test_browse_reads_paged_messages_without_paging_them_in(harness: CoreHarness, monkeypatch) -> None:
    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 3)
    harness.declare("q")
    for i in range(8):
        harness.publish("q", f"b{i}".encode())
        harness.flush()
    queue = harness.vhost.queue("q")
    assert queue.paged > 0
    paged_before = queue.paged
    page = browse(queue, harness.clock(), offset=0, limit=8)
    assert bodies(page) == [f"b{i}".encode() for i in range(8)]
    assert queue.paged == paged_before
    assert harness.drain("q") == [f"b{i}".encode() for i in range(8)]


def test_dead_letter_filters(harness: CoreHarness) -> None:
    dead_letter_setup(harness)
    queue = harness.vhost.queue("dlq")
    now = harness.clock()
    (death,) = deaths(queue.peek(1)[0].message.headers)
    assert (death.queue, death.reason, death.count) == ("work", "rejected", 1)
    assert bodies(browse(queue, now, where=Filter(header=("kind", "odd")))) == [b"m1", b"m3", b"m5"]
    assert bodies(browse(queue, now, where=Filter(body="M4"))) == [b"m4"]
    assert len(browse(queue, now, where=Filter(reason="rejected", source_queue="work")).items) == 6
    assert browse(queue, now, where=Filter(reason="expired")).items == []
    assert browse(queue, now, where=Filter(source_queue="other")).items == []
    harness.clock.advance(100)
    assert len(browse(queue, harness.clock(), where=Filter(min_age=50)).items) == 6
    assert browse(queue, harness.clock(), where=Filter(max_age=50)).items == []
    page = browse(queue, harness.clock(), offset=1, limit=1, where=Filter(header=("kind", "even")))
    assert bodies(page) == [b"m2"] and page.matched == 3 and page.scanned == 6


def test_filter_parse_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="reason"):
        Filter.parse({"reason": "tired"})
    with pytest.raises(ValueError, match="NAME=VALUE"):
        Filter.parse({"header": "novalue"})
    with pytest.raises(ValueError, match="min_age"):
        Filter.parse({"min_age": "-3"})
    assert Filter.parse({"header": "a=b=c", "max_age": "5"}) == Filter(header=("a", "b=c"), max_age=5.0)


def test_dead_letter_queues_and_summary(harness: CoreHarness) -> None:
    dead_letter_setup(harness, 3)
    assert dead_letter_sources(harness.vhost) == {"dlq": ["work"]}
    summary = summarize(harness.vhost.queue("dlq"), harness.clock())
    assert summary.by_reason == {"rejected": 3} and summary.by_source == {"work": 3}
    assert summary.oldest_death == int(harness.clock())


def test_redrive_all_back_to_origin_keeps_history(harness: CoreHarness) -> None:
    dead_letter_setup(harness, 4)
    redrives = Redrives()
    redrive = redrives.add(harness.vhost, harness.vhost.queue("dlq"), RedriveRequest(), "guest", harness.clock())
    assert redrive.matched == 4
    redrive.step(publish(harness), budget=3)
    assert redrive.moved == 0  # counted once its commit is done
    harness.flush()
    redrive.landed()
    assert (redrive.moved, redrive.remaining, redrive.state) == (3, 1, "running")
    redrive.step(publish(harness))
    harness.flush()
    redrive.landed()
    assert redrive.state == "done" and redrive.moved == 4 and redrive.failed == 0
    assert harness.count("dlq") == 0
    message = harness.get("work")
    assert message is not None and message.body == b"m0"
    assert [d.queue for d in deaths(message.headers)] == ["work"]  # the history came along


def test_redrive_by_id_to_an_exchange_and_dry_run(harness: CoreHarness) -> None:
    dead_letter_setup(harness, 4)
    harness.declare("elsewhere")
    queue = harness.vhost.queue("dlq")
    ids = [entry.seq for entry in queue.peek(4)][1:3]
    request = RedriveRequest(ids=tuple(ids), target=Target("", "elsewhere"))
    moves = plan(harness.vhost, queue, request, harness.clock())
    assert [(m.id, m.queues) for m in moves] == [(ids[0], ["elsewhere"]), (ids[1], ["elsewhere"])]
    assert harness.count("dlq") == 4  # a dry run moves nothing
    redrive = Redrives().add(harness.vhost, queue, request, "guest", harness.clock())
    redrive.step(publish(harness))
    harness.flush()
    redrive.landed()
    assert harness.drain("elsewhere") == [b"m1", b"m2"]
    assert harness.drain("dlq") == [b"m0", b"m3"]


def test_redrive_of_paged_messages(harness: CoreHarness, monkeypatch) -> None:
    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 2)
    dead_letter_setup(harness, 6)
    queue = harness.vhost.queue("dlq")
    assert queue.paged > 0
    request = RedriveRequest(where=Filter(header=("kind", "odd")), target=Target("", "work"))
    redrive = Redrives().add(harness.vhost, queue, request, "guest", harness.clock())
    redrive.step(publish(harness))
    harness.flush()
    redrive.landed()
    assert redrive.moved == 3
    assert harness.drain("dlq") == [b"m0", b"m2", b"m4"]
    assert harness.drain("work") == [b"m1", b"m3", b"m5"]


def test_unroutable_redrive_keeps_the_message(harness: CoreHarness) -> None:
    dead_letter_setup(harness, 2)
    request = RedriveRequest(target=Target("", "no-such-queue"))
    redrive = Redrives().add(harness.vhost, harness.vhost.queue("dlq"), request, "guest", harness.clock())
    redrive.step(publish(harness))
    harness.flush()
    redrive.landed()
    assert (redrive.moved, redrive.failed) == (0, 2)
    assert harness.drain("dlq") == [b"m0", b"m1"]  # in place


def test_a_refused_move_leaves_the_message_in_place_not_redelivered(harness: CoreHarness, monkeypatch) -> None:
    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 1)  # the later ones are paged out
    dead_letter_setup(harness, 3)
    harness.declare("full", {"x-max-length": 1, "x-overflow": "reject-publish"})
    harness.publish("full", b"already", flush=True)
    request = RedriveRequest(target=Target("", "full"))
    redrive = Redrives().add(harness.vhost, harness.vhost.queue("dlq"), request, "guest", harness.clock())
    redrive.step(publish(harness))
    harness.flush()
    redrive.landed()
    assert (redrive.moved, redrive.failed, redrive.state) == (0, 3, "done")
    got = [harness.session.get("dlq", no_ack=True) for _ in range(3)]
    assert [(g[1].message.body, g[1].redelivered) for g in got if g is not None] == [
        (b"m0", False), (b"m1", False), (b"m2", False)]
    assert harness.drain("full") == [b"already"]


def test_redrive_is_atomic_across_a_crash(harness: CoreHarness) -> None:
    dead_letter_setup(harness, 3)
    redrive = Redrives().add(harness.vhost, harness.vhost.queue("dlq"), RedriveRequest(), "guest", harness.clock())
    redrive.step(publish(harness), budget=1)
    harness.flush()
    redrive.landed()  # the first move is committed
    redrive.step(publish(harness), budget=1)  # staged, not committed
    harness.crash()
    assert harness.drain("work") == [b"m0"]
    assert harness.drain("dlq") == [b"m1", b"m2"]


def test_cancel_stops_between_steps(harness: CoreHarness) -> None:
    dead_letter_setup(harness, 3)
    redrive = Redrives().add(harness.vhost, harness.vhost.queue("dlq"), RedriveRequest(), "guest", harness.clock())
    redrive.step(publish(harness), budget=1)
    redrive.cancel()
    assert redrive.step(publish(harness)) == 0
    harness.flush()
    assert redrive.document()["state"] == "cancelled"
    assert harness.count("dlq") == 2 and harness.count("work") == 1


def test_remove_takes_requeued_and_held_entries_without_marking_others(harness: CoreHarness) -> None:
    harness.declare("q", {"x-retry-delays": [60_000]})
    for i in range(4):
        harness.publish("q", f"b{i}".encode())
    harness.flush()
    session = harness.session
    first = session.get("q", no_ack=False)
    second = session.get("q", no_ack=False)
    assert first is not None and second is not None
    session.nack(first[0], multiple=False, requeue=True)  # held for its retry delay
    harness.flush()
    queue = harness.vhost.queue("q")
    assert queue.holding
    taken = queue.remove({first[1].seq, 3})  # a held entry and a ready one (seq 3 is b2)
    assert sorted(e.message.body for e in taken) == [b"b0", b"b2"]
    queue.settle(taken)
    session.nack(second[0], multiple=False, requeue=False)
    harness.flush()
    harness.run(61)
    got = session.get("q", no_ack=True)
    assert got is not None and got[1].message.body == b"b3" and not got[1].redelivered
    assert harness.count("q") == 0


def test_redrive_by_id_from_a_priority_queue(harness: CoreHarness) -> None:
    harness.declare("pq", {"x-max-priority": 5})
    harness.declare("out")
    for i, priority in enumerate([1, 5, 3]):
        harness.publish("pq", f"p{i}".encode(), JSON_CODEC.block(priority=priority))
    harness.flush()
    queue = harness.vhost.queue("pq")
    order = [entry.message.body for _pos, entry in browse(queue, harness.clock()).items]
    assert order == [b"p1", b"p2", b"p0"]  # highest priority first
    middle = browse(queue, harness.clock()).items[1][1].seq
    redrive = Redrives().add(harness.vhost, queue, RedriveRequest(ids=(middle,), target=Target("", "out")),
                             "guest", harness.clock())
    redrive.step(publish(harness))
    harness.flush()
    redrive.landed()
    assert redrive.moved == 1
    assert harness.drain("out") == [b"p2"]
    assert harness.drain("pq") == [b"p1", b"p0"]
