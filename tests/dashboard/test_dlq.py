"""The dead-letter page: the x-death history, filters, a dry run, a redrive whose messages arrive, and a
slow redrive cancelled half-way."""

from __future__ import annotations

from playwright.sync_api import expect

from helpers import wait_for
from management.client import ManagementApi

from .conftest import Page


def dead_letter(api: ManagementApi, source: str, tenants: list[str]) -> None:
    """``source`` dead-letters into ``source.dlq``; one message per tenant, rejected into it."""
    api.queue(f"{source}.dlq")
    api.queue(source, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{source}.dlq"})
    for i, tenant in enumerate(tenants):
        api.publish(source, f'{{"order": {i}, "tenant": "{tenant}"}}',
                    properties={"content_type": "application/json", "headers": {"tenant": tenant}})
    api.ok("POST", f"/api/queues/%2F/{source}/get",
           {"count": len(tenants), "ackmode": "reject_requeue_false", "encoding": "auto"})
    assert api.ok("GET", f"/api/queues/%2F/{source}.dlq")["messages"] == len(tenants)


def depth(api: ManagementApi, name: str) -> int:
    return int(api.ok("GET", f"/api/queues/%2F/{name}")["messages"])


def test_browse_filter_dry_run_and_redrive(dash: Page, api: ManagementApi) -> None:
    dead_letter(api, "orders", ["acme", "acme", "other", "acme", "other"])
    dash.login()
    dash.open("dlq")
    row = dash.page.locator("[data-testid=dlqs] tbody tr", has_text="orders.dlq")
    expect(row).to_contain_text("orders")  # where its dead letters come from
    row.locator("a").click()

    expect(dash.page.get_by_test_id("dlq-summary")).to_contain_text("rejected: 5")
    messages = dash.page.get_by_test_id("dlq-messages").get_by_test_id("message")
    expect(messages).to_have_count(5)
    expect(messages.first).to_contain_text("died in orders: rejected")
    messages.first.locator("summary", has_text="x-death").click()
    expect(messages.first.locator("table.deaths")).to_contain_text("rejected")

    dash.page.locator("[data-testid=dlq-filter] input[name=header]").fill("tenant=acme")
    dash.page.locator("[data-testid=dlq-filter] button[type=submit]").click()
    expect(messages).to_have_count(3)
    expect(dash.page.get_by_test_id("browse-info")).to_contain_text("3 matching of 5")

    dash.page.get_by_test_id("dry-run-matching").click()
    expect(dash.page.get_by_test_id("dry-run")).to_contain_text("3 would move")
    assert depth(api, "orders.dlq") == 5  # a dry run moves nothing

    dash.page.once("dialog", lambda dialog: dialog.accept())
    dash.page.get_by_test_id("redrive-matching").click()
    expect(dash.page.get_by_test_id("redrive-progress")).to_contain_text("done")
    expect(dash.page.get_by_test_id("redrive-progress")).to_contain_text("moved 3 of 3")
    assert depth(api, "orders") == 3
    assert depth(api, "orders.dlq") == 2
    expect(messages).to_have_count(0)  # the browse was refreshed: no acme message left
    # They came back with their history.
    peeked = api.ok("GET", "/api/mailslot/queues/%2F/orders/peek?count=3")
    assert [m["x_death"][0]["reason"] for m in peeked] == ["rejected"] * 3

    # Select one of the others by hand and redrive it alone.
    dash.page.locator("[data-testid=dlq-filter] button", has_text="Clear").click()
    expect(messages).to_have_count(2)
    messages.first.locator("input[type=checkbox]").check()
    dash.page.get_by_test_id("redrive-selected").click()
    expect(dash.page.get_by_test_id("redrive-progress")).to_contain_text("moved 1 of 1")
    assert depth(api, "orders.dlq") == 1


def test_a_slow_redrive_shows_progress_and_cancels(dash: Page, api: ManagementApi) -> None:
    dead_letter(api, "slow", ["t"] * 40)
    dash.login()
    dash.open("dlq/%2F/slow.dlq")
    dash.page.locator("input[name=rate]").fill("5")
    dash.page.once("dialog", lambda dialog: dialog.accept())
    dash.page.get_by_test_id("redrive-matching").click()
    progress = dash.page.get_by_test_id("redrive-progress")
    expect(progress).to_contain_text("running")
    wait_for(lambda: depth(api, "slow") > 0, what="a first message moved")
    progress.get_by_test_id("cancel").click()
    expect(progress).to_contain_text("cancelled")
    moved = depth(api, "slow")
    assert 0 < moved < 40
    assert depth(api, "slow.dlq") == 40 - moved  # nothing lost, nothing doubled
    dash.open("dlq")
    expect(dash.page.get_by_test_id("redrives")).to_contain_text("cancelled")
