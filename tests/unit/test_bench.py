"""mailslot bench: pure parts (URL parsing, percentiles) and one in-process run against the test broker."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from array import array
from typing import Any

import pytest

from mailslot.bench import BenchConfig, percentiles, run_bench
from mailslot.bench.driver import AMQPUrl
from mailslot.bench.runner import Producer, Stats
from mailslot.protocols.amqp091.events import Confirm


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


class _Conn:
    """What a Producer uses of a client connection: publishes numbered 1, 2, ... (the confirm tags)."""

    def __init__(self) -> None:
        self.seq = 0

    def publish_template(self, *args: Any, **kwargs: Any) -> object:
        return object()

    def publish_stamped(self, template: object, stamps: list[bytes]) -> int:
        self.seq += len(stamps)
        return self.seq


class _Proto:
    def __init__(self) -> None:
        self.conn = _Conn()
        self.paused = False
        self.handler: Any = None
        self.on_resume: Any = None

    def flush(self) -> None:
        pass

    def control(self, events: list[Any]) -> None:
        raise AssertionError(f"only confirms expected: {events}")


def _confirm(tag: int, *, multiple: bool = False, ack: bool = True) -> Confirm:
    return Confirm(channel=1, delivery_tag=tag, multiple=multiple, ack=ack)


@pytest.mark.parametrize(
    ("confirms", "confirmed", "nacked"),
    [
        # One multiple nack refuses every message up to its tag, not one.
        ([_confirm(3, multiple=True), _confirm(10, multiple=True, ack=False)], 3, 7),
        # Out-of-order single confirms (5 nacked, 7 acked) are counted once; a later multiple one skips them.
        ([_confirm(5, ack=False), _confirm(7), _confirm(8, multiple=True), _confirm(10, multiple=True, ack=False)],
         6 + 1, 1 + 2),
        # A single confirm that fills the gap moves past the ones already counted.
        ([_confirm(2, ack=False), _confirm(3), _confirm(1), _confirm(10, multiple=True, ack=False)], 2, 8),
        # Confirms for tags already decided are not counted again.
        ([_confirm(4, multiple=True), _confirm(2), _confirm(4, multiple=True, ack=False), _confirm(10, multiple=True)],
         10, 0),
    ],
)
async def test_producer_counts_messages_not_confirm_frames(confirms: list[Confirm], confirmed: int, nacked: int) -> None:
    stats = Stats()
    cfg = BenchConfig(confirm=10, count=10, size=64)
    proto = _Proto()
    producer = Producer(proto, "q", cfg, stats)  # type: ignore[arg-type]
    producer.start()
    assert stats.published == 10
    producer.on_events(confirms)  # type: ignore[arg-type]
    assert (stats.confirmed, stats.nacked) == (confirmed, nacked)
    assert len(stats.confirm_lat) == confirmed  # a latency per confirmed message, none for a refused one
    await asyncio.wait_for(producer.done, 1)  # every message decided: the producer is done


def _put_policy(http_url: str, name: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{http_url}/api/policies/%2F/{name}", data=json.dumps(body).encode(), method="PUT",
        headers={"content-type": "application/json",
                 "authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (201, 204)


async def test_a_full_queue_nacks_and_bench_reports_them_apart(mailslot_broker: Any) -> None:
    """The report of the issue: a broker refusing most publishes (x-overflow reject-publish at 100 messages
    here) must show as 100 confirmed and the rest nacked, counted per message."""
    await asyncio.to_thread(_put_policy, mailslot_broker.http_url, "bench-cap",
                            {"pattern": "^capped-bench", "apply-to": "queues",
                             "definition": {"max-length": 100, "overflow": "reject-publish"}})
    result = await run_bench(BenchConfig(url=mailslot_broker.amqp_url, count=1000, size=64, consumers=0,
                                         confirm=200, queue_prefix="capped-bench"))
    assert (result["published"], result["confirmed"], result["nacked"]) == (1000, 100, 900)
