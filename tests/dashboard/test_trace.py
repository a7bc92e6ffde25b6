"""The trace page: turn tracing on, then find what happened to a message by its id and by a header."""

from __future__ import annotations

from typing import Any

import pika
from playwright.sync_api import expect

from management.client import ManagementApi

from .conftest import Page


def test_turn_tracing_on_and_follow_a_message(dash: Page, api: ManagementApi, broker: Any) -> None:
    api.ok("PUT", "/api/vhosts/%2F", {"description": "kept", "tracing": False})
    dash.login()
    dash.open("trace")
    status = dash.page.get_by_test_id("tracing-state")
    expect(status).to_have_text("off")
    dash.page.get_by_test_id("toggle-tracing").click()
    expect(status).to_have_text("on")
    vhost = api.ok("GET", "/api/vhosts/%2F")
    assert vhost["tracing"] is True
    assert vhost["description"] == "kept"  # the toggle changes nothing else

    api.queue("traced")
    connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    try:
        channel = connection.channel()
        channel.basic_publish("", "traced", b"hello",
                              pika.BasicProperties(message_id="order-991", headers={"tenant": "acme <b>"}))
        method, _props, _body = channel.basic_get("traced")
        channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()

    dash.page.locator("input[name=message_id]").fill("order-991")
    dash.page.locator("[data-testid=trace-lookup] button[type=submit]").click()
    timeline = dash.page.get_by_test_id("history").locator("ol.timeline li")
    expect(timeline).to_have_count(3)
    expect(timeline.nth(0)).to_contain_text("published by guest")
    expect(timeline.nth(0)).to_contain_text("traced")
    expect(timeline.nth(1)).to_contain_text("delivered from traced to a basic.get")
    assert timeline.nth(2).get_attribute("data-event") == "acked"

    dash.page.locator("input[name=message_id]").fill("")
    dash.page.locator("input[name=header]").fill("tenant=acme <b>")
    dash.page.locator("[data-testid=trace-lookup] button[type=submit]").click()
    expect(dash.page.get_by_test_id("history")).to_contain_text('"tenant": "acme <b>"')

    dash.page.locator("input[name=header]").fill("tenant=nobody")
    dash.page.locator("[data-testid=trace-lookup] button[type=submit]").click()
    expect(dash.page.get_by_test_id("no-history")).to_be_visible()
    dash.page.get_by_test_id("toggle-tracing").click()
    expect(status).to_have_text("off")
