"""The short chaos runs (scripts/chaos.py is the long one): SIGKILL the worker >= 20 times and the broker
>= 3 times while 1,000 keyed messages go through, the producer republishing what was not confirmed.

Asserted per guarantee only what it guarantees: exactly-once: every key has exactly one effect and
redeliveries happened; at-least-once: nothing lost, and the forced crash between effect and ack shows a
duplicate; at-most-once: no message handled twice, and the forced crash after the ack shows a loss.

The cluster runs do the exactly-once run over 2-3 cluster nodes on PostgreSQL, the producer and the worker
given every node's URL, and SIGKILL nodes instead of the one broker: the queue's owner (another node takes
it over) and the node the worker is connected to while another node owns the queue, in turn.
"""

from __future__ import annotations

import pytest

from mailslot.bench.chaos import ChaosConfig, ChaosResult, run_chaos, table
from mailslot.worker import Guarantee

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

RESULTS: list[ChaosResult] = []


async def _run(tmp_path, guarantee: Guarantee, **kw) -> ChaosResult:
    result = await run_chaos(ChaosConfig(guarantee, tmp_path, seed=7, timeout=150, **kw))
    RESULTS.append(result)
    print("\n" + table(RESULTS))
    return result


async def test_exactly_once_sqlite_survives_kills(tmp_path):
    r = await _run(tmp_path, Guarantee.EXACTLY_ONCE, n=1500)
    assert r.worker_kills >= 20 and r.broker_kills >= 3
    assert (r.lost, r.duplicate_keys, r.effects) == (0, 0, 1500)
    assert r.redeliveries > 0 and r.inbox_hits > 0  # the kills did hit messages in flight


async def test_exactly_once_postgres_survives_kills(tmp_path, postgres_dsn):
    r = await _run(tmp_path, Guarantee.EXACTLY_ONCE, n=1000, db="postgres", postgres_dsn=postgres_dsn)
    assert r.worker_kills >= 20 and r.broker_kills >= 3
    assert (r.lost, r.duplicate_keys, r.effects) == (0, 0, 1000)
    assert r.redeliveries > 0 and r.inbox_hits > 0


async def test_at_least_once_loses_nothing_and_shows_the_forced_duplicate(tmp_path):
    r = await _run(tmp_path, Guarantee.AT_LEAST_ONCE, n=600, worker_kills=8, broker_kills=2)
    assert r.lost == 0
    assert r.worker_duplicates >= 1 and r.effects > 600


async def test_at_most_once_never_handles_a_message_twice_and_shows_the_forced_loss(tmp_path):
    r = await _run(tmp_path, Guarantee.AT_MOST_ONCE, n=600, worker_kills=8, broker_kills=2)
    assert r.worker_duplicates == 0
    assert r.lost >= 1 and r.effects < 600 + r.producer_retries


# One cluster run in the suite (3 nodes: kills of the owner and of the worker's non-owner node both happen);
# `scripts/chaos.py --cluster 2|3` runs the longer ones, effects in PostgreSQL too (docs/exactly-once.md).
@pytest.mark.parametrize(("nodes", "db", "n"), [(3, "sqlite", 1000)])
async def test_exactly_once_survives_cluster_nodes_killed_under_it(tmp_path, postgres_dsn, nodes, db, n):
    r = await _run(tmp_path, Guarantee.EXACTLY_ONCE, n=n, db=db, postgres_dsn=postgres_dsn, cluster=nodes)
    assert r.worker_kills >= 20 and r.broker_kills >= 3
    assert r.owner_kills >= 1 and r.worker_node_kills >= 1 and r.takeovers >= 1
    assert (r.lost, r.duplicate_keys, r.effects) == (0, 0, n)
    assert r.redeliveries > 0 and r.inbox_hits > 0
    print("\n".join(r.node_errors))
    assert not r.node_errors, "a node logged an error (or a traceback)"
