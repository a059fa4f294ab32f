"""meshcore.durations: Go's duration grammar, exact in nanoseconds, with Go's messages."""

from __future__ import annotations

import pytest

from meshcore.durations import DurationError, duration_s, parse_duration_ns


def _seconds_or_none(text: str) -> float | None:
    try:
        return duration_s(text)
    except DurationError:
        return None


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1.2ms", 1_200_000),
        ("100us", 100_000),
        ("100µs", 100_000),
        ("2s", 2_000_000_000),
        ("1h30m", 5_400_000_000_000),
        ("1m0.5s", 60_500_000_000),
        ("-5s", -5_000_000_000),
        ("0", 0),
        (".5s", 500_000_000),
        ("7ns", 7),
        ("2.000000001s", 2_000_000_001),
    ],
)
def test_go_duration(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["", "1", "1.2", "ms", "1x", "s1", "1 s", "--1s"])
def test_go_duration_refuses(text: str) -> None:
    with pytest.raises(DurationError, match="time: "):
        parse_duration_ns(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1ms", 0.001),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("0", 0.0),
        ("250us", 2.5e-4),
        (".5s", 0.5),
        ("5", None),
        ("", None),
        ("1d", None),
        ("s", None),
    ],
)
def test_durations_in_seconds(text: str, seconds: float | None) -> None:
    assert _seconds_or_none(text) == (pytest.approx(seconds) if seconds is not None else None)
