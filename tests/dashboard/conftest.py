"""Browser tests of the dashboard: headless Chromium (Debian's ``chromium``, driven by Playwright for
Python through ``executable_path``, as Playwright's own browser downloads are not available here).

One browser for the session and one broker per module keep the suite quick; every test gets a fresh
browser context (its own sessionStorage, so its own login). Pages record console errors and uncaught
exceptions, and a test fails on any it did not expect.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import _service_missing
from management.client import ManagementApi, q

CHROMIUM = os.environ.get("MAILSLOT_CHROMIUM", "/usr/bin/chromium")
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 800}
# Playwright's own waits (a selector, an expectation) give up after this; pages refresh every second.
WAIT_MS = 10_000


# Package scope, not session: Playwright's sync API keeps an event loop running in this thread while it is
# started, so it must be stopped before the asyncio tests of the directories after this one run.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _service_missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _service_missing("Playwright for Python is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    from mailslot.testing import broker_in_thread

    with broker_in_thread() as broker:
        yield broker


@pytest.fixture(scope="module")
def api(broker: Any) -> ManagementApi:
    return ManagementApi(broker.http_url, name="mailslot")


class Page:
    """A Playwright page on the dashboard, with the console errors it saw."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.set_default_timeout(WAIT_MS)

    def login(self, user: str = "guest", password: str = "guest") -> None:
        self.page.goto(self.base + "/")
        self.page.fill("input[name=username]", user)
        self.page.fill("input[name=password]", password)
        self.page.click("form[data-testid=login] button[type=submit]")
        self.page.wait_for_selector("[data-testid=user]")

    def open(self, route: str) -> None:
        """Go to a page of the dashboard (``queues``, ``queue/%2F/name``) as the menu or a link would."""
        self.page.evaluate("route => { location.hash = '#/' + route; }", route)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def dash(browser: Any, broker: Any, request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    viewport = getattr(request, "param", LAPTOP)
    context = browser.new_context(viewport=viewport)
    page = Page(context.new_page(), broker.http_url)
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:  # what the page looked like, for the one reading the failure
        shot = tmp_path_factory.mktemp("dashboard") / f"{request.node.name}.png"
        page.page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failed page: {shot}")
    context.close()
    assert page.errors == [], f"console errors: {page.errors}"


def add_user(api: ManagementApi, name: str, password: str, tags: str, vhost: str = "/") -> None:
    api.ok("PUT", f"/api/users/{q(name)}", {"password": password, "tags": tags})
    api.ok("PUT", f"/api/permissions/{q(vhost)}/{q(name)}", {"configure": ".*", "write": ".*", "read": ".*"})
