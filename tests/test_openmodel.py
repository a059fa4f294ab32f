"""loadgen.openmodel: arrivals on a schedule and the ones that came late."""

from __future__ import annotations

import pyarrow as pa
import pytest

from loadgen.openmodel import Pacer, late_arrivals


def test_pacer_keeps_the_schedule_whatever_the_latency() -> None:
    now = [0]
    pacer = Pacer(lambda: (10.0, 5), clock_ns=lambda: now[0])  # one task per 0.5 s per user
    first = pacer.wait_time()
    start = pacer.next_ns
    assert start is not None and 0 <= first <= 0.5
    assert pacer.context() == {"intended_ns": start} and pacer.context() == {}
    now[0] = start + 2_000_000_000  # the task took 2 s: the next 3 starts are late
    waits = [pacer.wait_time() for _ in range(4)]
    assert waits == [0.0, 0.0, 0.0, 0.0]
    assert pacer.next_ns == start + 4 * 500_000_000
    assert pacer.wait_time() == pytest.approx(0.5)


def test_late_arrivals_counts_starts_past_the_tolerance() -> None:
    t = pa.table({"start_ns": [10, 2_000_010, 5_000_000], "intended_ns": [10, 10, None]})
    assert late_arrivals(t, tolerance_ms=1.0) == 1
    assert late_arrivals(pa.table({"start_ns": [1]})) == 0
