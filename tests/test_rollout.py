"""loadgen.rollout: each step on schedule, failed changes as events, stop and roll back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from loadgen.plan import Plan, Step
from loadgen.rollout import Rollout
from loadgen.steps import StepClock
from meshcore.errors import BackendError
from meshcore.kube.client import WeightChange


class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


class RecordingSetter:
    target = "VirtualService default/frontend route 0"

    def __init__(self, clock: FakeTime, fail_at: int | None = None) -> None:
        self.clock = clock
        self.calls: list[tuple[float, dict[str, int]]] = []
        self.fail_at = fail_at

    def subsets(self) -> list[str]:
        return ["v1", "v2"]

    def set_weights(self, weights: Mapping[str, int]) -> WeightChange:
        self.calls.append((self.clock.now, dict(weights)))
        if self.fail_at is not None and len(self.calls) - 1 == self.fail_at:
            raise BackendError("API down")
        n = len(self.calls)
        return WeightChange(dict(weights), 1000 * n, 1000 * n + 5, str(n))


def plan(*holds: float) -> Plan:
    steps = [Step({"v1": 100 - 10 * k, "v2": 10 * k}, h, users=k + 1) for k, h in enumerate(holds)]
    return Plan(steps=tuple(steps))


def test_rollout_sets_each_step_on_schedule_and_logs_it() -> None:
    t = FakeTime()
    setter = RecordingSetter(t)
    events: list[dict[str, Any]] = []
    broadcasts: list[int] = []
    clock = StepClock()
    r = Rollout(plan=plan(2, 3, 1.5), setter=setter, clock=clock, on_event=events.append,
                broadcast=lambda: broadcasts.append(clock.current), default_users=9,
                sleep=t.sleep, monotonic=t.monotonic)  # fmt: skip
    r.begin()
    assert r.users() == 1
    r.run()
    assert r.done
    assert [(at, w["v2"]) for at, w in setter.calls] == [(0.0, 0), (2.0, 10), (5.0, 20)]
    assert t.now == pytest.approx(6.5)
    assert broadcasts == [0, 1, 2]
    assert [e["step"] for e in events] == [0, 1, 2]
    assert events[1] == {"kind": "weights", "step": 1, "weights": {"v1": 90, "v2": 10},
                         "requested_ns": 2000, "accepted_ns": 2005,
                         "resource_version": "2"}  # fmt: skip
    assert r.users() == 3
    assert [k for k, _ in clock.timeline()] == [0, 1, 2]


def test_a_failed_change_is_an_event_and_the_plan_goes_on() -> None:
    t = FakeTime()
    events: list[dict[str, Any]] = []
    r = Rollout(plan=plan(1, 1, 1), setter=RecordingSetter(t, fail_at=1), clock=StepClock(),
                on_event=events.append, broadcast=lambda: None, default_users=1,
                sleep=t.sleep, monotonic=t.monotonic)  # fmt: skip
    r.run()
    assert [e["kind"] for e in events] == ["weights", "error", "weights"]
    assert events[1]["error"] == "API down"
    assert r.done


def test_stop_ends_the_rollout_early() -> None:
    t = FakeTime()
    r: Rollout

    def sleep(s: float) -> None:
        t.sleep(s)
        if t.now >= 1.0:
            r.stop()

    r = Rollout(plan=plan(2, 2), setter=RecordingSetter(t), clock=StepClock(),
                on_event=lambda e: None, broadcast=lambda: None, default_users=1,
                sleep=sleep, monotonic=t.monotonic)  # fmt: skip
    r.run()
    assert not r.done and r.step == 0


def test_roll_back_is_one_more_step_with_the_first_weights() -> None:
    t = FakeTime()
    events: list[dict[str, Any]] = []
    clock = StepClock()
    r = Rollout(plan=plan(5, 5), setter=RecordingSetter(t), clock=clock, on_event=events.append,
                broadcast=lambda: None, default_users=1, sleep=t.sleep,
                monotonic=t.monotonic)  # fmt: skip
    r.begin()
    r.apply(1)
    r.roll_back("gate error_rate")
    assert r.done and r.stopped
    assert events[-1]["step"] == 2 and events[-1]["weights"] == {"v1": 100, "v2": 0}
    assert events[-1]["rollback"] == "gate error_rate"
    assert clock.current == 2 and r.users() == 2
