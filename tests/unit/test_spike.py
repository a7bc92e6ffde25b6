"""mailslot spike: the pure parts (pacing with fake time, exact loss/duplicate accounting, rates, charts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailslot.bench.ledger import Ledger
from mailslot.bench.pacing import TokenBucket, rate_series, split_rate
from mailslot.bench.spike import STAMP, STAMP_SIZE, queue_arguments


# ---------------------------------------------------------------------------------------------- pacing
def run_bucket(rate: float, tick: float, seconds: float, burst: float = 0.1) -> int:
    now = 0.0
    b = TokenBucket(rate, now, burst=burst)
    sent = 0
    while now < seconds - 1e-9:
        now += tick
        sent += b.take(now)
    return sent


@pytest.mark.parametrize(("rate", "tick"), [(10_000, 0.005), (125, 0.01), (5000 / 3, 0.005), (0.5, 0.1)])
def test_token_bucket_reaches_the_rate_exactly_over_time(rate: float, tick: float) -> None:
    sent = run_bucket(rate, tick, 10.0)
    assert abs(sent - rate * 10) <= 1  # fractions carry over between ticks


def test_token_bucket_does_not_catch_up_after_a_stall() -> None:
    b = TokenBucket(1000, 0.0, burst=0.1)
    assert b.take(0.5) == 100
    # the sender was blocked for 5 s (full confirm window, slow machine): at most 0.1 s worth now
    assert b.take(5.5) == 100
    assert 99 <= b.take(5.6) <= 100


def test_token_bucket_respects_want_and_keeps_the_rest() -> None:
    b = TokenBucket(1000, 0.0, burst=1.0)
    assert b.take(0.5, want=100) == 100
    assert b.take(0.5) == 400
    assert b.take(0.5, want=0) == 0
    assert b.take(0.5, want=-3) == 0


def test_token_bucket_rate_change_applies_from_now() -> None:
    b = TokenBucket(100, 0.0, burst=10)
    assert b.take(1.0) == 100
    b.set_rate(1000, 1.0)
    assert b.take(2.0) == 1000


def test_token_bucket_slow_rate_gets_at_least_one_message_of_credit() -> None:
    b = TokenBucket(2, 0.0, burst=0.05)  # cap would be 0.1 messages: it must still send
    assert b.cap == 1.0
    assert b.take(0.5) == 1


def test_split_rate_sums_to_the_total() -> None:
    parts = split_rate(10_000, 3)
    assert len(parts) == 3 and sum(parts) == pytest.approx(10_000)
    assert split_rate(500, 0) == []


def test_rate_series_over_a_one_second_window() -> None:
    t = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    c = [0, 500, 1000, 1500, 1500, 1500]  # 1000 msg/s, then stop at 1.5 s
    r = rate_series(t, c)
    assert r[0] == 0.0
    assert r[1] == pytest.approx(1000)
    assert r[2] == pytest.approx(1000)
    assert r[3] == pytest.approx(1000)
    assert r[4] == pytest.approx(500)  # 1.0..2.0: 500 messages
    assert r[5] == 0.0


# ---------------------------------------------------------------------------------------------- ledger
def test_all_confirmed_and_delivered_once_is_lossless() -> None:
    led = Ledger(2)
    for p in range(2):
        led.on_publish(p, 100)
        assert led.on_confirm(p, 100, True, True) == 100
    assert not led.drained
    for p in range(2):
        for s in range(1, 101):
            assert led.on_delivered(p, s)
    assert led.drained
    summ = led.summary()
    assert (summ.published, summ.confirmed, summ.delivered, summ.lost, summ.duplicates) == (200, 200, 200, 0, 0)
    assert summ.unconfirmed == 0 and summ.rejected == 0


def test_lost_and_duplicates_are_exact_not_counter_differences() -> None:
    led = Ledger(1)
    led.on_publish(0, 10)
    led.on_confirm(0, 10, True, True)
    # seq 3 and 7 never arrive; seq 5 arrives twice and so does 9: counters alone would say "lost 0"
    for s in (1, 2, 4, 5, 5, 6, 8, 9, 9, 10):
        led.on_delivered(0, s)
    summ = led.summary()
    assert summ.delivered == 8
    assert summ.duplicates == 2
    assert summ.lost == 2
    assert summ.lost_sample == ["0:3", "0:7"]
    assert not led.drained


def test_nacks_are_rejected_not_lost() -> None:
    led = Ledger(1)
    led.on_publish(0, 10)
    led.on_confirm(0, 4, True, True)  # 1..4 acked
    led.on_confirm(0, 7, True, False)  # 5..7 rejected (reject-publish at max-length)
    led.on_confirm(0, 8, False, True)
    led.on_confirm(0, 10, False, False)  # 10 nacked out of order
    led.on_confirm(0, 9, False, True)
    for s in (1, 2, 3, 4, 8, 9):
        led.on_delivered(0, s)
    summ = led.summary()
    assert (summ.confirmed, summ.rejected, summ.lost, summ.unconfirmed) == (6, 4, 0, 0)
    assert led.drained
    assert led.low[0] == 10


def test_out_of_order_confirms_then_multiple_count_each_message_once() -> None:
    led = Ledger(1)
    led.on_publish(0, 6)
    assert led.on_confirm(0, 3, False, True) == 1
    assert led.on_confirm(0, 5, False, False) == 1
    assert led.on_confirm(0, 3, False, True) == 0  # repeated: ignored
    assert led.on_confirm(0, 6, True, True) == 4  # 1, 2, 4, 6
    assert (led.acked, led.nacked) == (5, 1)
    assert led.on_confirm(0, 6, True, True) == 0


def test_delivery_before_confirm_counts_once_confirmed() -> None:
    led = Ledger(1)
    led.on_publish(0, 3)
    led.on_delivered(0, 1)
    led.on_delivered(0, 2)
    assert led.acked_seen == 0
    led.on_confirm(0, 2, True, True)
    assert led.acked_seen == 2
    led.on_delivered(0, 3)
    led.on_confirm(0, 3, False, True)
    assert led.drained
    summ = led.summary()
    assert summ.lost == 0 and summ.delivered_unconfirmed == 0


def test_unconfirmed_and_anomalies() -> None:
    led = Ledger(1)
    led.on_publish(0, 5)
    led.on_confirm(0, 2, True, True)
    led.on_confirm(0, 3, False, False)
    led.on_delivered(0, 3)  # delivered although nacked
    led.on_delivered(0, 5)  # delivered, its confirm never came
    assert led.on_delivered(9, 1)  # not one of ours
    summ = led.summary()
    assert summ.unconfirmed == 2
    assert summ.delivered_rejected == 1 and summ.delivered_unconfirmed == 1
    assert summ.lost == 2  # 1 and 2 acked, not delivered
    assert led.foreign == 1


def test_confirm_beyond_published_is_clamped() -> None:
    led = Ledger(1)
    led.on_publish(0, 3)
    assert led.on_confirm(0, 99, True, True) == 3
    assert led.summary().confirmed == 3


# ---------------------------------------------------------------------------------------------- the rest
def test_stamp_and_queue_arguments() -> None:
    assert STAMP_SIZE == 24
    assert STAMP.unpack(STAMP.pack(1, 2, 3, 4)) == (1, 2, 3, 4)
    assert queue_arguments(0) is None
    assert queue_arguments(1000) == {"x-max-length": 1000, "x-overflow": "reject-publish"}


def fake_result() -> dict:
    series = []
    for i in range(12):
        t = i * 0.5
        series.append({"t": t, "phase": "spike" if t <= 3 else "drain", "published": min(i, 6) * 1000,
                       "confirmed": min(i, 6) * 1000, "rejected": 0, "delivered": i * 150,
                       "depth": max(0, min(i, 6) * 1000 - i * 150), "rss": (50 + i) * 1024 * 1024})
    report = {"queue": "q", "reached_publish_rate": 2000.0, "lost": 0, "published": 6000}
    config = {"rate": 2000.0, "duration": 3.0, "worker_rate": 300.0, "max_length": 0}
    return {"config": config, "report": report, "series": series, "spike_end_t": 3.0, "drained_t": 5.5}


def test_html_chart_is_self_contained(tmp_path: Path) -> None:
    from mailslot.bench.spike_chart import write_html

    page = write_html(fake_result(), tmp_path / "x.html").read_text()
    assert page.count("<svg") == 4 and "<polyline" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # no CDN, no external script
    assert "https://" not in page
    data = page.split('id="spike-data">')[1].split("</script>")[0]
    assert json.loads(data)["report"]["published"] == 6000


def test_png_chart(tmp_path: Path) -> None:
    from mailslot.bench.spike_chart import write_png

    png = write_png(fake_result(), tmp_path / "x.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_help_lists_the_options() -> None:
    from mailslot.cli.main import app

    result = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke(app, ["spike", "--help"])
    assert result.exit_code == 0
    for opt in ("--rate", "--duration", "--worker-rate", "--workers", "--size", "--queue", "--max-length",
                "--drain", "--out", "--start", "--pid"):
        assert opt in result.output


def test_rate_series_two_samples_close_together_do_not_make_a_spike() -> None:
    # a slow depth poll delayed one sample by 1.7 s, the next came 30 ms later
    t = [23.5, 24.0, 24.6, 26.3, 26.33, 26.8]
    c = [235_000, 240_000, 246_000, 260_000, 261_000, 265_500]
    r = rate_series(t, c)
    assert max(r) < 10_500
    assert r[4] == pytest.approx((261_000 - 246_000) / (26.33 - 24.6))


def test_without_matplotlib_the_hint_names_the_extra_that_brings_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain install (scripts/serve) has no matplotlib: the hint is a command that installs it into this
    environment, from this checkout (``pip install 'mailslot'`` would install nothing new)."""
    import io
    import shlex
    import sys

    from rich.console import Console

    from mailslot.bench import spike_chart
    from mailslot.cli import spike

    def no_matplotlib(*args: object) -> Path:
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(spike_chart, "write_png", no_matplotlib)
    err = io.StringIO()
    paths = spike._write_outputs(fake_result(), tmp_path, Console(file=err, width=300, no_color=True))
    assert [p.name for p in paths] == ["spike.json", "spike.html"]
    hint = err.getvalue()
    command = spike.install_extra_command("bench")
    assert "matplotlib is not installed" in hint and command in hint
    words = shlex.split(command)
    assert words[:4] == [sys.executable, "-m", "pip", "install"]
    assert words[-1].endswith("[bench]")
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").exists() and words[-1] != "mailslot[bench]":
        assert Path(words[-1].removesuffix("[bench]")) == root  # installed from this checkout (editable)


def test_the_bench_extra_brings_matplotlib() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert any(d.startswith("matplotlib") for d in extras["bench"])
