"""A queue's page: depth followed live, peek (nothing taken, nothing marked redelivered), publish, purge,
move and delete."""

from __future__ import annotations

from typing import Any

import pika
from playwright.sync_api import expect

from management.client import ManagementApi

from .conftest import Page


def open_queue(dash: Page, name: str) -> None:
    dash.login()
    dash.open(f"queue/%2F/{name}")
    expect(dash.page.locator("h1")).to_have_text(name)


def ready(dash: Page) -> Any:
    return dash.page.get_by_test_id("ready").locator("b")


def test_depth_follows_a_producer_live(dash: Page, api: ManagementApi) -> None:
    api.queue("live-depth")
    open_queue(dash, "live-depth")
    expect(ready(dash)).to_have_text("0")
    for i in range(5):
        api.publish("live-depth", f"m{i}")
    expect(ready(dash)).to_have_text("5")
    for i in range(5):
        api.publish("live-depth", f"n{i}")
    expect(ready(dash)).to_have_text("10")
    expect(dash.page.get_by_test_id("chart-depth")).to_contain_text("ready 10")


def test_peek_shows_messages_without_taking_or_marking_them(dash: Page, api: ManagementApi, broker: Any) -> None:
    api.queue("peeked")
    api.publish("peeked", '{"order": 1}', properties={"content_type": "application/json"})
    api.publish("peeked", "second <b>bold</b>")
    open_queue(dash, "peeked")
    dash.page.get_by_test_id("peek").click()
    messages = dash.page.get_by_test_id("peeked").get_by_test_id("message")
    expect(messages).to_have_count(2)
    expect(messages.nth(0)).to_contain_text('"order": 1')
    expect(messages.nth(1)).to_contain_text("second <b>bold</b>")  # markup in a body is text
    expect(messages.nth(0).get_by_test_id("redelivered")).to_have_text("redelivered false")
    dash.page.get_by_test_id("peek").click()  # peeking again changes nothing either
    expect(messages).to_have_count(2)
    expect(ready(dash)).to_have_text("2")

    # A consumer then gets both, first delivery, not redelivered (a RabbitMQ "get" with requeue would).
    connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    try:
        channel = connection.channel()
        for body in (b'{"order": 1}', b"second <b>bold</b>"):
            method, _props, got = channel.basic_get("peeked", auto_ack=True)
            assert got == body
            assert method.redelivered is False
    finally:
        connection.close()


def test_publish_then_purge_from_the_page(dash: Page, api: ManagementApi) -> None:
    api.queue("purged")
    open_queue(dash, "purged")
    form = dash.page.get_by_test_id("publish")
    dash.page.locator("summary", has_text="Publish a message").click()
    form.locator("textarea[name=payload]").fill("from the dashboard")
    for _ in range(3):
        form.locator("button[type=submit]").click()
    expect(ready(dash)).to_have_text("3")
    assert api.ok("GET", "/api/queues/%2F/purged")["messages_ready"] == 3

    dash.page.once("dialog", lambda dialog: dialog.accept())
    dash.page.get_by_test_id("purge").click()
    expect(ready(dash)).to_have_text("0")
    assert api.ok("GET", "/api/queues/%2F/purged")["messages"] == 0


def test_move_with_a_dry_run_then_delete(dash: Page, api: ManagementApi) -> None:
    api.queue("move-from")
    api.queue("move-to")
    for i in range(4):
        api.publish("move-from", f"m{i}")
    open_queue(dash, "move-from")
    dash.page.locator("summary", has_text="Move messages").click()
    dash.page.locator("input[name=routing_key]").fill("move-to")
    dash.page.get_by_role("button", name="Dry run").click()
    expect(dash.page.get_by_test_id("move-result")).to_contain_text("4 would move")
    assert api.ok("GET", "/api/queues/%2F/move-from")["messages"] == 4  # a dry run moves nothing
    dash.page.get_by_role("button", name="Move", exact=True).click()
    expect(ready(dash)).to_have_text("0")
    assert api.ok("GET", "/api/queues/%2F/move-to")["messages"] == 4

    dash.page.once("dialog", lambda dialog: dialog.accept())
    dash.page.get_by_test_id("delete").click()
    expect(dash.page.locator("h1")).to_have_text("Queues")
    assert api.get("/api/queues/%2F/move-from").status == 404


def test_bind_and_unbind(dash: Page, api: ManagementApi) -> None:
    api.queue("bound")
    open_queue(dash, "bound")
    form = dash.page.get_by_test_id("bind")
    form.locator("input[name=source]").fill("amq.direct")
    form.locator("input[name=binding_key]").fill("to-bound")
    form.locator("button[type=submit]").click()
    row = dash.page.locator("[data-testid=bindings] tbody tr", has_text="amq.direct")
    expect(row).to_contain_text("to-bound")
    assert api.publish("to-bound", "via amq.direct", exchange="amq.direct")["routed"] is True
    expect(ready(dash)).to_have_text("1")
    row.get_by_role("button", name="Unbind").click()
    expect(row).to_have_count(0)
    assert api.publish("to-bound", "nowhere", exchange="amq.direct")["routed"] is False


def test_a_queue_deleted_elsewhere_says_so(dash: Page, api: ManagementApi) -> None:
    api.queue("vanishing")
    open_queue(dash, "vanishing")
    expect(ready(dash)).to_have_text("0")
    api.ok("DELETE", "/api/queues/%2F/vanishing")
    expect(dash.page.get_by_test_id("gone")).to_contain_text("no longer exists")
    dash.errors[:] = [e for e in dash.errors if "404" not in e]  # the browser logs the one refused refresh
