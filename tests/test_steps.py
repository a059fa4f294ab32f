"""loadgen.steps: the step in effect at a request's start, on every process."""

from __future__ import annotations

from loadgen.steps import StepClock


def test_step_clock_looks_up_by_start_time() -> None:
    clock = StepClock()
    assert clock.step_at(5) == -1
    clock.begin(0, 100)
    clock.begin(1, 200)
    clock.begin(2, 150)  # a clock that went backwards never reorders steps
    assert [clock.step_at(t) for t in (0, 100, 199, 200, 10**9)] == [0, 0, 0, 2, 2]
    other = StepClock()
    other.on_message(msg=type("M", (), {"data": clock.message()})())
    assert other.timeline() == clock.timeline()
