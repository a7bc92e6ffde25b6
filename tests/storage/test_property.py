"""Differential property tests: the SQLite store against the memory reference, on random operations.

The SQLite log reorders and cancels staged work at commit (purges first, append+remove pairs
dropped); these machines check that no interleaving of stage/commit/read/reopen can tell the two apart.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from mailslot.storage.api import (
    BindingDefinition,
    ExchangeDefinition,
    MessageLog,
    MetadataStore,
    QueueDefinition,
    StoredMessage,
)
from mailslot.storage.memory import MemoryMessageLog, MemoryMetadataStore
from mailslot.storage.sqlite import open_sqlite_store

QUEUES = ["a", "b", "a/b"]
SETTINGS = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class LogMachine(RuleBasedStateMachine):
    # The store under test; test_segments.py reuses this machine with the segment log.
    open_store = staticmethod(open_sqlite_store)

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="mailslot-prop-"))
        self.ref: MessageLog = MemoryMessageLog()
        self.log, self.meta = self.open_store(self.dir)
        self.next_seq = dict.fromkeys(QUEUES, 1)

    def teardown(self) -> None:
        self.log.close()
        self.meta.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _known(self, queue: str) -> st.SearchStrategy[list[int]]:
        # Seqs the core has handed out (and a few never used: 0, -1). Never a seq it has not assigned
        # yet: removing or flagging a message before its append would break the contract.
        return st.lists(st.integers(-1, self.next_seq[queue] - 1), max_size=6)

    @rule(
        queue=st.sampled_from(QUEUES),
        n=st.integers(1, 5),
        flags=st.lists(
            st.tuples(st.booleans(), st.booleans(), st.integers(0, 3), st.sampled_from([0, 1, 2**40, 2**63 - 1])),
            min_size=5,
            max_size=5,
        ),
        body=st.binary(max_size=40),
        interleave=st.sampled_from([None] + QUEUES),
    )
    def append(
        self,
        queue: str,
        n: int,
        flags: list[tuple[bool, bool, int, int]],
        body: bytes,
        interleave: str | None,
    ) -> None:
        msgs = []
        for i in range(n):
            seq = self.next_seq[queue]
            self.next_seq[queue] += 1
            persistent, redelivered, requeues, deadline = flags[i]
            msgs.append(
                StoredMessage(
                    queue, seq, "ex", f"rk{seq}", b"p", body, persistent, redelivered, deadline, requeues
                )
            )
            if interleave is not None and interleave != queue and i == 0:
                s2 = self.next_seq[interleave]
                self.next_seq[interleave] += 1
                msgs.append(StoredMessage(interleave, s2, "", "", b"", b"", True))
        self.ref.stage_append(msgs)
        self.log.stage_append(list(msgs))

    @rule(queue=st.sampled_from(QUEUES), data=st.data())
    def remove(self, queue: str, data: st.DataObject) -> None:
        seqs = data.draw(self._known(queue))
        self.ref.stage_remove(queue, seqs)
        self.log.stage_remove(queue, seqs)

    @rule(queue=st.sampled_from(QUEUES), data=st.data())
    def mark_redelivered(self, queue: str, data: st.DataObject) -> None:
        seqs = data.draw(self._known(queue))
        self.ref.stage_mark_redelivered(queue, seqs)
        self.log.stage_mark_redelivered(queue, seqs)

    @rule(queue=st.sampled_from(QUEUES), data=st.data())
    def delivered(self, queue: str, data: st.DataObject) -> None:
        if self.next_seq[queue] == 1:
            return  # nothing handed out yet: the core cannot have delivered anything
        seq = data.draw(st.integers(1, self.next_seq[queue] - 1))
        self.ref.stage_delivered(queue, seq)
        self.log.stage_delivered(queue, seq)

    @rule(queue=st.sampled_from(QUEUES))
    def purge(self, queue: str) -> None:
        self.ref.stage_purge(queue)
        self.log.stage_purge(queue)

    @rule()
    def commit(self) -> None:
        self.ref.commit()
        self.log.commit()

    @rule()
    def reopen(self) -> None:  # a clean restart: close commits what is staged
        self.ref.close()
        self.log.close()
        self.meta.close()
        self.log, self.meta = self.open_store(self.dir)

    @rule()
    def restart_and_recover(self) -> None:
        self.reopen()
        assert self.log.recover() == self.ref.recover()

    @rule(queue=st.sampled_from(QUEUES), after=st.integers(-1, 30), limit=st.integers(0, 8))
    def read_page(self, queue: str, after: int, limit: int) -> None:
        assert self.log.read(queue, after, limit) == self.ref.read(queue, after, limit)

    @invariant()
    def same_committed_state(self) -> None:
        assert self.log.has_staged() == self.ref.has_staged()
        for q in QUEUES:
            assert self.log.read(q, 0, 10_000) == self.ref.read(q, 0, 10_000)


LogMachine.TestCase.settings = SETTINGS
TestLogAgainstReference = LogMachine.TestCase


# -- metadata ----------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, max_value=10**6, min_value=-(10**6)),
    st.datetimes(timezones=st.just(UTC), min_value=datetime(1970, 1, 2)),
)
tables: st.SearchStrategy[dict[str, Any]] = st.recursive(
    st.dictionaries(st.text(max_size=6), scalars, max_size=4),
    lambda children: st.dictionaries(
        st.text(max_size=6),
        st.one_of(scalars, children, st.lists(st.one_of(scalars, children), max_size=3)),
        max_size=4,
    ),
    max_leaves=12,
)
names = st.sampled_from(["x", "y", "$z", "amq.topic"])
vhosts = st.sampled_from(["/", "v"])


class MetadataMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="mailslot-prop-"))
        self.ref: MetadataStore = MemoryMetadataStore()
        self.log, self.meta = open_sqlite_store(self.dir)

    def teardown(self) -> None:
        self.log.close()
        self.meta.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize()
    def start(self) -> None:
        pass

    @rule(name=names, vhost=vhosts, type_=st.sampled_from(["direct", "topic"]), flags=st.tuples(
        st.booleans(), st.booleans(), st.booleans()), args=tables)
    def save_exchange(self, name: str, vhost: str, type_: str, flags: tuple[bool, bool, bool],
                      args: dict[str, Any]) -> None:
        e = ExchangeDefinition(name, type_, vhost, *flags, arguments=args)
        self.ref.save_exchange(e)
        self.meta.save_exchange(e)

    @rule(name=names, vhost=vhosts)
    def delete_exchange(self, name: str, vhost: str) -> None:
        self.ref.delete_exchange(vhost, name)
        self.meta.delete_exchange(vhost, name)

    @rule(name=names, vhost=vhosts, flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
          args=tables)
    def save_queue(self, name: str, vhost: str, flags: tuple[bool, bool, bool],
                   args: dict[str, Any]) -> None:
        q = QueueDefinition(name, vhost, *flags, arguments=args)
        self.ref.save_queue(q)
        self.meta.save_queue(q)

    @rule(name=names, vhost=vhosts)
    def delete_queue(self, name: str, vhost: str) -> None:
        self.ref.delete_queue(vhost, name)
        self.meta.delete_queue(vhost, name)

    @rule(src=names, dst=names, kind=st.sampled_from(["queue", "exchange"]), rk=names, vhost=vhosts,
          key=st.sampled_from(["", '{"a":1}']), args=tables, delete=st.booleans())
    def binding(self, src: str, dst: str, kind: str, rk: str, vhost: str, key: str,
                args: dict[str, Any], delete: bool) -> None:
        b = BindingDefinition(src, dst, kind, rk, vhost, key)
        if delete:
            self.ref.delete_binding(b)
            self.meta.delete_binding(b)
        else:
            self.ref.save_binding(b, args)
            self.meta.save_binding(b, args)

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.meta.close()
        self.log, self.meta = open_sqlite_store(self.dir)

    @invariant()
    def same_definitions(self) -> None:
        assert self.meta.load() == self.ref.load()


MetadataMachine.TestCase.settings = SETTINGS
TestMetadataAgainstReference = MetadataMachine.TestCase


def test_decimal_and_bytes_keep_their_types() -> None:
    from mailslot.storage.sqlite._codec import decode_table, encode_table

    table = {"d": Decimal("1.10"), "b": b"", "t": {"$table": {"$bytes": b"x"}}}
    out = decode_table(encode_table(table))
    assert out == table and str(out["d"]) == "1.10" and type(out["b"]) is bytes
