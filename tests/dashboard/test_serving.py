"""How the dashboard is served (no browser needed): the page, its files, its security headers, and the
escaping rule checked on the sources themselves."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mailslot.http import dashboard

STATIC = Path(dashboard.__file__).parent / "static"


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


def test_the_page_and_its_files_are_served_without_credentials(broker: Any) -> None:
    status, headers, body = fetch(broker.http_url + "/")
    assert status == 200
    assert b'<script type="module" src="/dashboard/js/app.js">' in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    for path in re.findall(r'(?:src|href)="(/dashboard/[^"]+)"', body.decode()):
        status, headers, _ = fetch(broker.http_url + path)
        assert status == 200, path
        assert "content-security-policy" in headers, path
    # Every module the app imports is there (a missing one would break the page, not a test).
    for module in sorted(STATIC.rglob("*.js")):
        status, headers, _ = fetch(f"{broker.http_url}/dashboard/{module.relative_to(STATIC).as_posix()}")
        assert status == 200 and "javascript" in headers["content-type"], module


def test_the_api_still_wants_credentials(broker: Any) -> None:
    try:
        fetch(broker.http_url + "/api/overview")
    except urllib.error.HTTPError as error:
        assert error.code == 401
    else:
        raise AssertionError("the API answered without credentials")


def test_no_script_parses_html() -> None:
    """Names reach the page as text only: no script assigns innerHTML or outerHTML, calls
    insertAdjacentHTML or document.write, or evaluates strings."""
    forbidden = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(")
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(STATIC.rglob("*.js"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if forbidden.search(line) and not line.strip().startswith("//")
    ]
    assert offenders == []
