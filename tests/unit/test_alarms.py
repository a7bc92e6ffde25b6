"""Resource alarms: limit parsing and ResourceMonitor state changes (pure, injected readings), and
the transport's read holds (a stream paused by both credit flow and an alarm resumes only when
neither holds it)."""

from __future__ import annotations

from typing import Any

import pytest

from mailslot.core.alarms import (
    DISK,
    MEMORY,
    LimitError,
    Limits,
    Reading,
    ResourceMonitor,
    blocked_reason,
    disk_free_limit,
    memory_limit,
    parse_size,
)
from mailslot.transport.amqp_listener import ALARM, CREDIT, AMQPStream

GiB = 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1000", 1000),
        ("50MB", 50_000_000),
        ("50mb", 50_000_000),
        ("2GB", 2_000_000_000),
        ("1kB", 1000),
        ("1k", 1024),
        ("512M", 512 * 1024**2),
        ("512MiB", 512 * 1024**2),
        ("1GiB", GiB),
        ("1.5G", int(1.5 * GiB)),
        (" 3 TB ", 3 * 1000**4),
    ],
)
def test_sizes_use_rabbitmq_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "12XB", "-5MB", "1,5GB"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(LimitError):
        parse_size(text)


def test_memory_watermark_relative_or_absolute() -> None:
    total = 16 * GiB
    assert memory_limit("0.4", total) == int(0.4 * total)
    assert memory_limit(0.5, total) == 8 * GiB
    assert memory_limit("relative:0.25", total) == 4 * GiB
    assert memory_limit("512MB", total) == 512_000_000
    assert memory_limit("absolute:1GiB", total) == GiB
    assert memory_limit("0", total) == 0  # RabbitMQ: a 0 watermark blocks every publisher at once
    with pytest.raises(LimitError):
        memory_limit("-0.1", total)
    with pytest.raises(LimitError):
        memory_limit("lots", total)


def test_disk_free_limit_absolute_or_relative_to_memory() -> None:
    total = 8 * GiB
    assert disk_free_limit("50MB", total) == 50_000_000
    assert disk_free_limit(1234, total) == 1234
    assert disk_free_limit("mem_relative:1.0", total) == total
    assert disk_free_limit("mem_relative:1.5", total) == int(1.5 * total)
    assert disk_free_limit("2.0x", total) == 2 * total
    assert disk_free_limit("2X", total) == 2 * total
    with pytest.raises(LimitError):
        disk_free_limit("mem_relative:abc", total)
    with pytest.raises(LimitError):
        disk_free_limit("-1x", total)


class Readings:
    def __init__(self, memory: int = 100, disk: int = 10_000) -> None:
        self.memory, self.disk = memory, disk
        self.fail = False

    def __call__(self) -> tuple[int, int]:
        if self.fail:
            raise OSError("no /proc")
        return self.memory, self.disk


def monitor(readings: Readings) -> ResourceMonitor:
    return ResourceMonitor(readings, Limits(memory_bytes=1000, disk_free_bytes=500))


def test_no_alarm_below_limits_and_no_change_reported() -> None:
    readings = Readings()
    m = monitor(readings)
    assert m.check() is None
    assert m.active == frozenset()
    assert m.reason == ""
    assert m.last == Reading(100, 10_000)


def test_memory_alarm_set_above_watermark_and_cleared_at_or_below() -> None:
    readings = Readings(memory=1001)
    m = monitor(readings)
    change = m.check()
    assert change is not None
    assert change.set == {MEMORY} and change.cleared == frozenset() and change.active == {MEMORY}
    assert change.reason == "low on memory"
    assert m.check() is None  # still set: nothing changed
    readings.memory = 1000  # RabbitMQ: alarm while used > limit
    change = m.check()
    assert change is not None and change.cleared == {MEMORY} and change.active == frozenset()
    assert change.reason == ""


def test_disk_alarm_set_below_free_limit() -> None:
    readings = Readings(disk=499)
    m = monitor(readings)
    change = m.check()
    assert change is not None and change.set == {DISK} and change.reason == "low on disk"
    readings.disk = 500
    change = m.check()
    assert change is not None and change.cleared == {DISK}


def test_both_alarms_are_independent_and_joined_in_the_reason() -> None:
    readings = Readings(memory=5000)
    m = monitor(readings)
    m.check()
    readings.disk = 1
    change = m.check()
    assert change is not None
    assert change.set == {DISK} and change.active == {MEMORY, DISK}
    assert change.reason == "low on memory & low on disk"  # rabbit_reader joins with " & "
    readings.memory = 1
    change = m.check()
    assert change is not None and change.cleared == {MEMORY} and change.active == {DISK}
    assert m.reason == "low on disk"


def test_new_limits_apply_at_the_next_check() -> None:
    readings = Readings(memory=800)
    m = monitor(readings)
    assert m.check() is None
    change = m.set_limits(Limits(memory_bytes=700, disk_free_bytes=500))
    assert change is not None and change.active == {MEMORY}
    change = m.set_limits(Limits(memory_bytes=10_000, disk_free_bytes=500))
    assert change is not None and change.active == frozenset()


def test_a_failed_reading_keeps_the_state() -> None:
    readings = Readings(memory=5000)
    m = monitor(readings)
    m.check()
    readings.fail = True
    with pytest.raises(OSError):
        m.check()
    assert m.active == {MEMORY}


def test_reason_order_is_fixed() -> None:
    assert blocked_reason(frozenset({DISK, MEMORY})) == "low on memory & low on disk"
    assert blocked_reason(frozenset()) == ""


# ---- transport: read holds compose ------------------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.reading = True
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.reading = False
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.reading = True
        self.calls.append("resume")

    def is_closing(self) -> bool:
        return False


def stream_with(transport: FakeTransport) -> AMQPStream:
    listener: Any = type("Listener", (), {"loop": None})()
    stream = AMQPStream(listener)
    stream.transport = transport  # type: ignore[assignment]
    return stream


def test_credit_release_does_not_resume_an_alarm_blocked_stream() -> None:
    transport = FakeTransport()
    stream = stream_with(transport)
    stream.hold(ALARM)
    stream.hold(CREDIT)
    assert not transport.reading
    stream.release(CREDIT)  # the throttle's 50 ms are over, but the alarm still holds it
    assert not transport.reading
    stream.release(ALARM)
    assert transport.reading
    assert transport.calls == ["pause", "resume"]


def test_alarm_clearing_does_not_resume_a_throttled_stream() -> None:
    transport = FakeTransport()
    stream = stream_with(transport)
    stream.hold(CREDIT)
    stream.hold(ALARM)
    stream.release(ALARM)
    assert not transport.reading
    stream.release(CREDIT)
    assert transport.reading
    stream.release(CREDIT)  # releasing what is not held does nothing
    assert transport.calls == ["pause", "resume"]
