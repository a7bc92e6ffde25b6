"""The examples under examples/ run against an in-process broker and do what their READMEs say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.timeout(60)


def _load(relative: str):
    spec = importlib.util.spec_from_file_location(relative.replace("/", "_")[:-3], EXAMPLES / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_exactly_once_example(broker_url, tmp_path):
    orders = _load("exactly_once/orders.py")
    rows = await orders.demo(broker_url, str(tmp_path / "orders.db"))
    assert rows == [(f"order-{i}", 10 * i) for i in range(10)]


async def test_at_least_once_example(broker_url):
    emails = _load("at_least_once/emails.py")
    sent = await emails.demo(broker_url)
    assert sorted(sent.values()) == [1] * 9


async def test_at_most_once_example(broker_url):
    metrics = _load("at_most_once/metrics.py")
    totals = await metrics.demo(broker_url)
    assert len(totals) == 9 and "cpu.7" not in totals
