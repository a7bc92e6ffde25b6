"""Login, the overview, the queue list (server-side paging, sorting, filtering), escaping, the admin
pages' visibility, a phone's screen and the one-request-in-flight rule of live pages."""

from __future__ import annotations

from typing import Any

import pika
import pytest
from playwright.sync_api import expect

from management.client import ManagementApi, q

from .conftest import PHONE, Page, add_user

MANY = 1_000  # queues in the paging test: 50 pages of 20


def test_login_refuses_a_wrong_password_then_logs_in_and_out(dash: Page) -> None:
    dash.page.goto(dash.base + "/")
    dash.page.fill("input[name=username]", "guest")
    dash.page.fill("input[name=password]", "wrong")
    dash.page.click("form[data-testid=login] button[type=submit]")
    expect(dash.page.get_by_test_id("login-error")).to_contain_text("Login failed")
    # The browser reports the refused request itself as a console error: expected here.
    dash.errors[:] = [e for e in dash.errors if "401" not in e]

    dash.login()
    expect(dash.page.get_by_test_id("user")).to_have_text("guest")
    expect(dash.page.locator("h1")).to_have_text("Overview")
    dash.page.reload()  # the login lasts for the tab
    expect(dash.page.get_by_test_id("user")).to_have_text("guest")
    dash.page.get_by_test_id("logout").click()
    expect(dash.page.get_by_test_id("login")).to_be_visible()
    dash.page.reload()
    expect(dash.page.get_by_test_id("login")).to_be_visible()


def test_overview_follows_the_broker_live(dash: Page, api: ManagementApi) -> None:
    api.queue("overview-live")
    dash.login()
    ready = dash.page.get_by_test_id("total-ready").locator("b")
    before = int(ready.inner_text().replace(",", ""))
    for i in range(7):
        api.publish("overview-live", f"m{i}")
    expect(ready).to_have_text(f"{before + 7:,}")  # without a reload
    for chart in ("rates", "queued", "connections", "memory", "disk"):
        expect(dash.page.get_by_test_id(f"chart-{chart}")).to_be_visible()
    # Memory is drawn against its alarm limit, which the legend names.
    expect(dash.page.get_by_test_id("chart-memory")).to_contain_text("alarm at")
    api.ok("DELETE", "/api/queues/%2F/overview-live")


def test_a_memory_alarm_shows_on_the_overview(dash: Page, broker: Any) -> None:
    dash.login()
    alarms = dash.page.get_by_test_id("alarms")
    expect(dash.page.get_by_test_id("chart-memory")).to_contain_text("alarm at")
    expect(alarms.locator(".alarm")).to_have_count(0)
    broker.set_resource_limits(memory_high_watermark="1MiB")  # below what any Python process holds
    try:
        expect(alarms).to_contain_text("Memory alarm")
        expect(alarms).to_contain_text("Publishers are blocked")
        expect(dash.page.get_by_test_id("chart-memory")).to_contain_text("alarm at 1 MiB")
    finally:
        broker.set_resource_limits(memory_high_watermark="0.4")  # the default
    expect(alarms.locator(".alarm")).to_have_count(0)


@pytest.fixture(scope="module")
def many_queues(broker: Any) -> list[str]:
    names = [f"page-{i:04d}" for i in range(MANY)]
    connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    channel = connection.channel()
    for name in names:
        channel.queue_declare(name)
    for _ in range(3):
        channel.basic_publish("", "page-0500", b"x")
    connection.close()
    return names


def names_shown(dash: Page) -> list[str]:
    return dash.page.locator("[data-testid=queues] tbody a.name").all_inner_texts()


def test_queue_list_pages_sorts_and_filters_on_the_server(dash: Page, many_queues: list[str]) -> None:
    dash.login()
    requests: list[str] = []
    dash.page.on("request", lambda r: "/api/queues" in r.url and requests.append(r.url))
    dash.open("queues")
    dash.page.get_by_test_id("filter").fill("page-")
    expect(dash.page.get_by_test_id("page-of")).to_have_text(f"page 1 of {MANY // 20}")
    assert names_shown(dash) == many_queues[:20]
    # The browser asks for one page of 20, never for the whole list.
    assert all("page_size=20" in url and "page=" in url for url in requests), requests

    dash.page.get_by_test_id("next").click()
    expect(dash.page.get_by_test_id("page-of")).to_have_text(f"page 2 of {MANY // 20}")
    expect(dash.page.locator("[data-testid=queues] tbody a.name").first).to_have_text(many_queues[20])

    dash.page.locator("button.sort[data-sort=name]").click()  # the same column again: reversed
    expect(dash.page.locator("[data-testid=queues] tbody a.name").first).to_have_text(many_queues[-1])
    expect(dash.page.get_by_test_id("page-of")).to_have_text(f"page 1 of {MANY // 20}")

    dash.page.locator("button.sort[data-sort=messages_ready]").click()
    dash.page.locator("button.sort[data-sort=messages_ready]").click()  # most messages first
    expect(dash.page.locator("[data-testid=queues] tbody a.name").first).to_have_text("page-0500")
    expect(dash.page.locator("[data-testid=queues] tbody tr").first).to_contain_text("3")

    dash.page.get_by_test_id("filter").fill("page-077")
    expect(dash.page.get_by_test_id("counts")).to_contain_text("10 of")
    assert sorted(names_shown(dash)) == [f"page-077{i}" for i in range(10)]


MARKUP = '<img src=x onerror="window.__xss=1">'


def test_names_with_markup_are_shown_as_text(dash: Page, api: ManagementApi) -> None:
    api.queue(MARKUP)
    api.exchange(MARKUP + "-x", "topic")
    api.ok("PUT", f"/api/users/{q(MARKUP)}", {"password": "pw", "tags": "management"})
    api.ok("PUT", f"/api/vhosts/{q(MARKUP)}", {"description": MARKUP})
    api.ok("PUT", f"/api/permissions/{q(MARKUP)}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    api.ok("PUT", f"/api/policies/%2F/{q(MARKUP)}", {"pattern": "^never$", "definition": {"max-length": 1}})
    try:
        dash.login()
        dash.open("queues")
        dash.page.get_by_test_id("filter").fill("onerror")
        link = dash.page.locator("[data-testid=queues] tbody a.name")
        expect(link).to_have_count(1)
        expect(link).to_have_text(MARKUP)
        link.click()  # its own page shows the name as text too
        expect(dash.page.locator("h1")).to_have_text(MARKUP)
        expect(dash.page.get_by_test_id("vhost").locator("option", has_text="onerror")).to_have_text(MARKUP)
        for route, where in (("exchanges", "[data-testid=exchanges]"), ("admin/users", "[data-testid=users]"),
                             ("admin/vhosts", "[data-testid=vhosts]"), ("admin/policies", "[data-testid=policies]"),
                             ("admin/permissions", "[data-testid=permissions]")):
            dash.open(route)
            expect(dash.page.locator(where)).to_contain_text(MARKUP)
        assert dash.page.locator("img").count() == 0
        assert dash.page.evaluate("window.__xss") is None
    finally:
        api.ok("DELETE", f"/api/queues/%2F/{q(MARKUP)}")
        api.ok("DELETE", f"/api/vhosts/{q(MARKUP)}")
        api.ok("DELETE", f"/api/users/{q(MARKUP)}")
        api.ok("DELETE", f"/api/policies/%2F/{q(MARKUP)}")
        api.cleanup()


def test_admin_pages_are_hidden_from_a_non_administrator(dash: Page, api: ManagementApi) -> None:
    add_user(api, "watcher", "secret", "management")
    dash.login("watcher", "secret")
    expect(dash.page.locator("[data-nav=queues]")).to_be_visible()
    expect(dash.page.locator("[data-nav=admin]")).to_have_count(0)
    dash.open("admin/users")
    expect(dash.page.locator("h1")).to_have_text("Administrators only")
    dash.page.get_by_test_id("logout").click()
    add_user(api, "no-tags", "secret", "")  # not a management user: the API refuses it, the page says why
    dash.page.fill("input[name=username]", "no-tags")
    dash.page.fill("input[name=password]", "secret")
    dash.page.click("form[data-testid=login] button[type=submit]")
    expect(dash.page.get_by_test_id("login-error")).to_have_text("Not allowed: Not management user.")
    dash.errors[:] = [e for e in dash.errors if "401" not in e]
    dash.login()  # an administrator sees them
    expect(dash.page.locator("[data-nav=admin]")).to_be_visible()


@pytest.mark.parametrize("dash", [PHONE], indirect=True)
def test_fits_a_phone_screen(dash: Page, many_queues: list[str]) -> None:
    dash.login()
    for route in ("overview", "dlq", "trace", "admin/policies", "queue/%2F/page-0500", "queues"):
        dash.open(route)
        expect(dash.page.locator("main h1")).to_be_visible()
        dash.page.wait_for_timeout(300)
        # Nothing wider than the screen but the tables, which scroll inside their own box.
        width = dash.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (route, width)
    expect(dash.page.locator("[data-testid=queues] tbody tr").first).to_be_visible()
    expect(dash.page.locator("[data-nav=trace]")).to_be_attached()


# Overview requests take 1.5 s here (the broker "slow"); ticks come every second.
SLOW_FETCH = """
window.__inFlight = 0; window.__maxInFlight = 0; window.__done = 0;
const realFetch = window.fetch;
window.fetch = async (url, options) => {
  if (!String(url).includes('/api/overview')) return realFetch(url, options);
  window.__inFlight++; window.__maxInFlight = Math.max(window.__maxInFlight, window.__inFlight);
  try {
    await new Promise((resolve) => setTimeout(resolve, 1500));
    return await realFetch(url, options);
  } finally { window.__inFlight--; window.__done++; }
};
"""


def test_a_slow_broker_never_gets_more_than_one_refresh_at_a_time(dash: Page) -> None:
    dash.page.add_init_script(SLOW_FETCH)
    dash.login()
    dash.page.wait_for_function("() => window.__done >= 2", timeout=15_000)
    assert dash.page.evaluate("window.__maxInFlight") == 1
