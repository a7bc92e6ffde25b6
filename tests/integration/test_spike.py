"""mailslot spike end to end: a short spike against a mailslot subprocess (``--start``, the real command), and
one with x-max-length / reject-publish against the in-process test broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailslot.bench.spike import SpikeConfig, run_spike
from mailslot.cli.main import app

pytestmark = pytest.mark.timeout(60)


def test_short_spike_with_start_loses_nothing(tmp_path: Path) -> None:
    # 2 s at 2,000 msg/s into workers at 300 msg/s (a backlog of ~3,400), then drained at 3,000 msg/s.
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "spike", "--start", "--rate", "2000", "--duration", "2", "--worker-rate", "300", "--workers", "2",
        "--drain-rate", "3000", "--size", "64", "--quiet", "--json", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["published"] > 2000
    assert report["confirmed"] == report["published"]
    assert report["rejected"] == 0
    assert report["lost"] == 0
    assert report["delivered"] == report["confirmed"]
    assert report["duplicates"] == 0
    assert report["drain"] == "drained" and report["time_to_drain_s"] > 0
    assert report["peak_depth"] > 1000  # the backlog built up in the broker
    assert report["peak_rss"] > 0
    assert report["broker_alive_at_end"] is True
    assert (out / "spike.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "spike.html").read_text()
    assert page.count("<svg") == 4
    series = json.loads((out / "spike.json").read_text())["series"]
    assert {s["phase"] for s in series} == {"spike", "drain"}


async def test_max_length_rejects_publishes_instead_of_losing_them(mailslot_url: str) -> None:
    result = await run_spike(SpikeConfig(url=mailslot_url, rate=2000, duration=1.5, worker_rate=200, workers=1,
                                         producers=1, size=32, max_length=500, drain_rate=2000))
    r = result["report"]
    assert r["rejected"] > 0
    assert r["confirmed"] + r["rejected"] == r["published"]
    assert r["lost"] == 0 and r["duplicates"] == 0
    assert r["delivered"] == r["confirmed"]
    assert r["peak_depth"] <= 500
