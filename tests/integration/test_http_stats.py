"""Queue statistics and forecasts through the management API (GET /api/overview, /api/queues) and
``mailslot queues``, against a real broker.

Rates come from a sampler that ticks once a second over a 5 s window, so the tests poll the API for a
condition (never sleep a fixed time) and allow for the window: a burst of publishes shows in
``message_stats.publish_details.rate`` for about 5 s, then the rate is 0.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import aio_pika
import aiohttp
import pytest
from typer.testing import CliRunner

from helpers import async_wait_for
from mailslot.bootstrap import PortInUseError
from mailslot.cli.main import app
from mailslot.testing import broker_in_thread, running_broker

pytestmark = pytest.mark.timeout(60)

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1"})

QUEUE = "stats-jobs"
MAX_LENGTH = 1000
PUBLISHED = 400


GUEST = {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}  # guest:guest


def rate(doc: dict[str, Any], counter: str) -> float:
    return float(doc.get("message_stats", {}).get(counter + "_details", {}).get("rate", 0.0))


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


async def queue_doc(session: aiohttp.ClientSession, base: str, name: str) -> dict[str, Any]:
    [doc] = [q for q in await get_json(session, f"{base}/api/queues") if q["name"] == name]
    return doc


async def poll(
    session: aiohttp.ClientSession, base: str, name: str, condition: Any, timeout: float = 15.0
) -> dict[str, Any]:
    """The queue's document once ``condition`` holds for it (the rates move with a once-a-second sampler)."""
    last: list[dict[str, Any]] = []

    async def matching() -> dict[str, Any] | None:
        last[:] = [await queue_doc(session, base, name)]
        return last[0] if condition(last[0]) else None

    return await async_wait_for(matching, timeout=timeout, interval=0.1, what=lambda: f"the condition; last document: {last}")


async def test_depth_rates_and_forecasts_of_a_slowly_consumed_queue() -> None:
    async with (
        running_broker(http_port=0) as broker,
        aiohttp.ClientSession(headers=GUEST) as http,
    ):
        base = broker.http_url
        assert broker.http_port > 0 and base == f"http://127.0.0.1:{broker.http_port}"
        connection = await aio_pika.connect(broker.amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(QUEUE, durable=True, arguments={"x-max-length": MAX_LENGTH})
            for i in range(PUBLISHED):
                await channel.default_exchange.publish(aio_pika.Message(b"job %d" % i), routing_key=QUEUE)

            # Filling, nobody consuming: a time-until-full forecast, no drain forecast.
            doc = await poll(
                http, base, QUEUE, lambda d: d["messages"] == PUBLISHED and rate(d, "publish") > 0
            )
            assert doc["messages_ready"] == PUBLISHED and doc["messages_unacknowledged"] == 0
            assert doc["consumers"] == 0 and rate(doc, "deliver_get") == 0
            assert doc["durable"] is True and doc["vhost"] == "/"
            assert doc["arguments"] == {"x-max-length": MAX_LENGTH}
            assert doc["drain_seconds"] is None
            assert doc["full_seconds"] == pytest.approx(
                (MAX_LENGTH - PUBLISHED) / rate(doc, "publish"), rel=0.02
            )

            # A slow consumer (one at a time, ~50/s).
            consume_channel = await connection.channel()
            await consume_channel.set_qos(prefetch_count=1)
            queue = await consume_channel.get_queue(QUEUE, ensure=False)
            consumed = 0

            async def slow_ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal consumed
                await asyncio.sleep(0.02)
                await message.ack()
                consumed += 1

            await queue.consume(slow_ack)
            # Once the publish burst has left the rate window, the queue only drains.
            doc = await poll(http, base, QUEUE, lambda d: rate(d, "publish") == 0 and rate(d, "deliver_get") > 0)
            assert doc["consumers"] == 1
            assert 5 <= rate(doc, "deliver_get") <= 200, doc
            assert doc["message_stats"]["ack"] > 0 and rate(doc, "ack") > 0
            assert doc["messages_unacknowledged"] <= 1
            assert 0 < doc["messages_ready"] < PUBLISHED
            assert doc["drain_seconds"] == pytest.approx(
                doc["messages_ready"] / rate(doc, "deliver_get"), rel=0.02
            )
            assert doc["full_seconds"] is None  # shrinking: never full

            overview = await get_json(http, f"{base}/api/overview")
            assert overview["product_name"] == "mailslot"
            assert overview["object_totals"]["queues"] == 1
            totals = overview["queue_totals"]
            assert totals["messages"] == totals["messages_ready"] + totals["messages_unacknowledged"]
            assert 0 < totals["messages"] <= PUBLISHED - consumed + 1
            assert rate(overview, "deliver_get") > 0
            assert overview["rss_bytes"] > 10_000_000  # a Python process with a broker in it

            one = await get_json(http, f"{base}/api/queues/%2F/{QUEUE}")
            assert one["name"] == QUEUE
            async with http.get(f"{base}/api/queues/%2F/no-such-queue") as response:
                assert response.status == 404
                assert (await response.json())["error"] == "Object Not Found"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_a_taken_http_port_fails_start_up_and_names_the_option(taken_port: int) -> None:
    with pytest.raises(PortInUseError) as caught:
        async with running_broker(http_port=taken_port):
            pass
    assert (
        str(caught.value)
        == f"port {taken_port} on 127.0.0.1 is already in use; choose another with --http-port"
    )


def test_serve_on_a_taken_http_port_prints_one_line_and_exits_1(taken_port: int) -> None:
    result = runner.invoke(
        app,
        ["serve", "--host", "127.0.0.1", "--port", "0", "--http-port", str(taken_port), "--store", "memory"],
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: port {taken_port} on 127.0.0.1 is already in use; choose another with --http-port"
    ]


def test_queues_command_shows_the_table() -> None:
    import pika

    with broker_in_thread() as broker:
        connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()  # each publish returns once the broker has it
            channel.queue_declare("cli-stats", durable=True, arguments={"x-max-length": 500})
            channel.queue_declare("cli-other")
            for _ in range(7):
                channel.basic_publish("", "cli-stats", b"x")
            result = runner.invoke(app, ["queues", "--url", broker.amqp_url, "--http-port", str(broker.http_port)])
        finally:
            connection.close()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["queue", "ready"] and "drain" in line for line in lines), result.stdout
    [row] = [line for line in lines if "cli-stats" in line]
    assert row.split()[1] == "7" and row.split()[-1] == "500"
    [other] = [line for line in lines if "cli-other" in line]
    assert "empty" in other
    assert "2 queues, 7 messages" in result.stdout


def test_queues_command_reports_an_unreachable_broker_in_one_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = runner.invoke(app, ["queues", "--url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: cannot reach the HTTP API at http://127.0.0.1:{port}")
