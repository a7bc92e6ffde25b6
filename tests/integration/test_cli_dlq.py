"""``mailslot dlq list|show|redrive`` and ``mailslot trace`` against a broker (cli/dlq.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from typer.testing import CliRunner

from helpers import wait_for
from mailslot.cli.main import app

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def broker() -> Iterator[Any]:
    from mailslot.testing import broker_in_thread

    with broker_in_thread() as running:
        yield running


def run(*args: str) -> Any:
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke(app, list(args))


def dead_letters(amqp_url: str, count: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare("dlx", "fanout", durable=True)
    channel.queue_declare("jobs.dlq", durable=True)
    channel.queue_bind("jobs.dlq", "dlx")
    channel.queue_declare("jobs", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
    for i in range(count):
        channel.basic_publish("", "jobs", f"job {i}".encode(), pika.BasicProperties(
            message_id=f"job-{i}", delivery_mode=2, headers={"kind": "big" if i < 2 else "small"}))
    for _ in range(count):
        method, _p, _b = wait_for(lambda: (got := channel.basic_get("jobs")) and got[0] and got)
        channel.basic_nack(method.delivery_tag, requeue=False)
    wait_for(lambda: channel.queue_declare("jobs.dlq", passive=True).method.message_count == count)
    connection.close()


def test_list_show_and_redrive(broker: Any) -> None:
    url = str(broker.http_url)
    dead_letters(str(broker.amqp_url), 4)
    listed = run("dlq", "list", "--url", url)
    assert listed.exit_code == 0, listed.output
    assert "jobs.dlq" in listed.output and "jobs" in listed.output
    shown = run("dlq", "show", "jobs.dlq", "--url", url, "--json", "--header", "kind=big")
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.output)
    assert document["summary"]["by_reason"] == {"rejected": 4}
    assert [m["payload"] for m in document["messages"]["items"]] == ["job 0", "job 1"]
    table = run("dlq", "show", "jobs.dlq", "--url", url)
    assert "rejected" in table.output and "job 3" in table.output
    dry = run("dlq", "redrive", "jobs.dlq", "--url", url, "--header", "kind=big", "--dry-run")
    assert dry.exit_code == 0 and "2 would move" in dry.output and "-> jobs" in dry.output
    moved = run("dlq", "redrive", "jobs.dlq", "--url", url, "--header", "kind=big")
    assert moved.exit_code == 0, moved.output
    assert "done: moved 2" in moved.output
    first_id = json.loads(run("dlq", "show", "jobs.dlq", "--url", url, "--json").output)["messages"]["items"][0]["id"]
    one = run("dlq", "redrive", "jobs.dlq", "--url", url, "--id", str(first_id), "--to-exchange", "",
              "--routing-key", "jobs")
    assert "done: moved 1" in one.output
    after = json.loads(run("dlq", "show", "jobs.dlq", "--url", url, "--json").output)
    assert after["summary"]["messages"] == 1


def test_errors_are_one_line(broker: Any) -> None:
    url = str(broker.http_url)
    missing = run("dlq", "show", "nope", "--url", url)
    assert missing.exit_code == 1 and "error:" in missing.output and "404" in missing.output
    bad = run("dlq", "redrive", "nope", "--url", "ftp://x")
    assert bad.exit_code == 1 and "not a broker URL" in bad.output


def test_trace_a_message(broker: Any) -> None:
    url = str(broker.http_url)
    import urllib.request

    request = urllib.request.Request(url + "/api/vhosts/%2F", method="PUT", data=b'{"tracing": true}', headers={
        "content-type": "application/json", "Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})
    urllib.request.urlopen(request, timeout=5).close()
    dead_letters(str(broker.amqp_url), 1)
    shown = run("trace", "job-0", "--url", url)
    assert shown.exit_code == 0, shown.output
    lines = shown.output
    assert "published by guest" in lines and "-> jobs" in lines
    assert "delivered from jobs to basic.get" in lines
    assert "rejected in jobs" in lines and "dead-lettered from jobs (rejected) to exchange 'dlx'" in lines
    as_json = json.loads(run("trace", "job-0", "--url", url, "--json").output)
    assert [e["event"] for e in as_json["items"][0]["events"]] == ["published", "delivered", "rejected", "dead_lettered"]
    unknown = run("trace", "nope", "--url", url)
    assert unknown.exit_code == 1 and "no history" in unknown.output
