"""Exchanges, connections (closing one), channels and consumers."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
from playwright.sync_api import expect

from helpers import wait_for
from management.client import ManagementApi

from .conftest import Page


def test_lists_show_a_consumer_and_close_its_connection(dash: Page, api: ManagementApi, broker: Any) -> None:
    api.queue("listed")
    connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=7)
    channel.basic_consume("listed", lambda *args: None, consumer_tag="dash-consumer")
    try:
        dash.login()
        dash.open("consumers")
        row = dash.page.locator("[data-testid=consumers] tbody tr", has_text="dash-consumer")
        expect(row).to_contain_text("listed")
        expect(row).to_contain_text("7")  # its prefetch

        dash.open("channels")
        expect(dash.page.locator("[data-testid=channels] tbody tr")).to_have_count(1)
        dash.page.locator("[data-testid=channels] tbody a.name").click()  # the channel's own page
        expect(dash.page.get_by_test_id("channel-consumers")).to_contain_text("dash-consumer")

        dash.open("exchanges")
        expect(dash.page.locator("[data-testid=exchanges] tbody")).to_contain_text("amq.topic")

        dash.open("connections")
        rows = dash.page.locator("[data-testid=connections] tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("Pika")
        dash.page.once("dialog", lambda dialog: dialog.accept())
        rows.first.get_by_test_id("close").click()
        expect(dash.page.locator("[data-testid=connections] tbody")).to_contain_text("No connections.")

        def closed_by_broker() -> bool:
            try:
                connection.process_data_events(0.05)
            except pika.exceptions.ConnectionClosedByBroker as closed:
                return closed.reply_code == 320
            return False

        wait_for(closed_by_broker, what="the broker closing the connection with 320")
    finally:
        if connection.is_open:
            connection.close()
    assert api.ok("GET", "/api/queues/%2F/listed")["consumers"] == 0


PAGES = ["overview", "queues", "exchanges", "connections", "channels", "consumers", "exchange/%2F/amq.direct", "dlq", "trace",
         "admin/users", "admin/vhosts", "admin/permissions", "admin/policies", "admin/limits", "admin/definitions"]


def test_every_page_opens_without_console_errors(dash: Page) -> None:
    dash.login()
    for route in PAGES:
        dash.open(route)
        expect(dash.page.locator("main h1")).to_be_visible()
        expect(dash.page.locator("main p.error")).to_have_count(0)
        dash.page.wait_for_timeout(400)  # a live refresh (the fixture fails the test on console errors)
