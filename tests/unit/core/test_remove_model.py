"""Queue.remove (and reinsert) against a model: random publishes, turns (paging out), gets, requeues and
removals on a small memory window; after each step the queue shows (peek), counts and finally hands out exactly the
model's messages in the model's order, with nothing marked redelivered by a removal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.core import queue as queue_module
from mailslot.testing import CoreHarness

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(1, 4)),
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("get_requeue"), st.just(0)),
        st.tuples(st.just("get_ack"), st.just(0)),
        st.tuples(st.just("remove"), st.integers(0, 2**16)),
    ),
    max_size=40,
)


@pytest.fixture(autouse=True)
def small_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_module, "WINDOW_MESSAGES", 3)
    monkeypatch.setattr(queue_module, "PAGE_IN_BATCH", 2)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_remove_matches_a_model(ops: list[tuple[str, int]]) -> None:
    check_against_model(CoreHarness(), ops)


@settings(max_examples=40, deadline=None)
@given(OPS)
def test_remove_matches_a_model_on_the_segment_log(tmp_path_factory: pytest.TempPathFactory,
                                                   ops: list[tuple[str, int]]) -> None:
    from mailslot.storage.segments import open_segment_store

    directory = tmp_path_factory.mktemp("segments")
    h = CoreHarness(lambda: open_segment_store(directory))
    try:
        check_against_model(h, ops)
    finally:
        h.close()


def check_against_model(h: CoreHarness, ops: list[tuple[str, int]]) -> None:
    h.declare("q")
    queue = h.vhost.queue("q")
    session = h.session
    model: list[tuple[int, bytes]] = []  # (seq, body) in delivery order
    redelivered: set[bytes] = set()
    counter = 0
    for op, arg in ops:
        if op == "publish":
            for _ in range(arg):
                body = f"m{counter}".encode()
                counter += 1
                h.publish("q", body, persistent=counter % 2 == 0)
                model.append((queue.next_seq - 1, body))
        elif op == "flush":
            h.flush()
        elif op in ("get_requeue", "get_ack"):
            got = session.get("q", no_ack=False)
            if got is None:
                assert not model
                continue
            tag, entry, _left = got
            assert (entry.seq, entry.message.body) == model[0]
            if op == "get_requeue":
                session.nack(tag, multiple=False, requeue=True)
                redelivered.add(entry.message.body)
            else:
                session.ack(tag, multiple=False)
                model.pop(0)
            h.flush()
        else:
            chosen = {seq for i, (seq, _body) in enumerate(model) if arg >> (i % 16) & 1}
            taken = queue.remove(chosen)
            assert sorted(e.seq for e in taken) == sorted(chosen)
            back = [e for e in taken if e.seq % 3 == 0]  # a move that could not be made: given back
            queue.settle([e for e in taken if e.seq % 3 != 0])
            queue.reinsert(back)
            model = [(seq, body) for seq, body in model if seq not in chosen or seq % 3 == 0]
            if arg % 2:  # else the next get pages in before the removal is committed
                h.flush()
        shown = [(e.seq, e.message.body) for e in queue.peek(1000)]
        assert shown == model
        assert queue.message_count == len(model)
    h.flush()
    handed = []
    while (got := session.get("q", no_ack=True)) is not None:
        handed.append((got[1].seq, got[1].message.body))
        assert got[1].redelivered == (got[1].message.body in redelivered)
    assert handed == model
    assert queue.ready_bytes == 0
