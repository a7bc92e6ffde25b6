"""The broker-wide consumer timeout: ``mailslot serve --consumer-timeout`` (seconds) -> BrokerConfig ->
the core's ack-timeout check (ms)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import mailslot.cli.serve
from mailslot.bootstrap import BrokerConfig
from mailslot.cli.main import app
from mailslot.testing import running_broker

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1"})


@pytest.mark.parametrize(("args", "expected"), [([], 1800.0), (["--consumer-timeout", "2.5"], 2.5),
                                                 (["--consumer-timeout", "0"], 0.0)])
def test_serve_passes_the_consumer_timeout(monkeypatch, args: list[str], expected: float) -> None:
    seen: list[BrokerConfig] = []

    def fake_run_serve(config: BrokerConfig, log_level: str = "info") -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(mailslot.cli.serve, "run_serve", fake_run_serve)
    result = runner.invoke(app, ["serve", *args])
    assert result.exit_code == 0, result.output
    assert seen[0].consumer_timeout == expected


def test_a_negative_consumer_timeout_is_a_usage_error() -> None:
    assert runner.invoke(app, ["serve", "--consumer-timeout", "-1"]).exit_code == 2


@pytest.mark.parametrize(("seconds", "ms"), [(None, None), (0, None), (1.5, 1500), (1800.0, 1_800_000)])
async def test_the_config_reaches_the_core_in_milliseconds(seconds: Any, ms: int | None) -> None:
    async with running_broker(consumer_timeout=seconds) as broker:
        assert broker.core.redelivery.ack_timeouts.default_ms == ms
