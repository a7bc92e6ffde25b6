"""mailslot bench: pure parts (URL parsing, percentiles) and one in-process run against the test broker."""

from __future__ import annotations

from array import array

import pytest

from mailslot.bench import BenchConfig, percentiles, run_bench
from mailslot.bench.driver import AMQPUrl


def test_url_parsing() -> None:
    u = AMQPUrl.parse("amqp://bob:s%40cret@example.org:5673/%2Fprod")
    assert (u.host, u.port, u.username, u.password, u.vhost) == ("example.org", 5673, "bob", "s@cret", "/prod")
    d = AMQPUrl.parse("amqp://localhost")
    assert (d.port, d.username, d.password, d.vhost) == (5672, "guest", "guest", "/")
    assert AMQPUrl.parse("amqp://h/%2F").vhost == "/"


def test_percentiles_nearest_rank_in_ms() -> None:
    values = array("q", [i * 1_000_000 for i in range(1, 101)])  # 1..100 ms
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentiles(array("q"))["p99"] == 0.0


@pytest.mark.parametrize("kw", [
    {"confirm": 100, "multi_ack": 10, "prefetch": 50},
    {"confirm": 0, "auto_ack": True, "persistent": False},
    {"producers": 2, "consumers": 2, "queues": 2, "confirm": 10, "multi_ack": 1},
])
async def test_count_run_against_mailslot(mailslot_url: str, kw: dict) -> None:
    result = await run_bench(BenchConfig(url=mailslot_url, count=500, size=64, **kw))
    n = 500 * kw.get("producers", 1)
    assert result["published"] == n and result["consumed"] == n
    if kw["confirm"]:
        assert result["confirmed"] == n and result["nacked"] == 0
        assert result["confirm_latency_ms"]["max"] > 0
    assert result["deliver_latency_ms"]["p50"] > 0
