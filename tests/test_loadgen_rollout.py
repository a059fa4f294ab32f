"""Rollout stepping, the step clock, the weight interface, live gates and open-model pacing."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from loadgen.gates import Gates
from loadgen.openmodel import Pacer, late_arrivals
from loadgen.options import Settings
from loadgen.plan import Plan, Step, parse_plan
from loadgen.rollout import Rollout
from loadgen.steps import StepClock
from meshcore.errors import BackendError
from meshcore.figures import choose_roles
from meshcore.kube.client import WeightChange
from meshcore.runfolder import RunFolder
from tests.records import request_table

MANIFESTS = Path(__file__).resolve().parent.parent / "scenarios" / "manifests" / "canary.yaml"


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


# -- gates ------------------------------------------------------------------------------------
def write_part(folder: RunFolder, seq: int, rows: list[tuple[int, float, bool, str]]) -> None:
    start_ns, latency_ms, ok, version = (list(c) for c in zip(*rows, strict=True))
    table = request_table(
        len(rows), start_ns=start_ns, latency_ms=latency_ms, ok=ok, version=version
    )
    folder.write_part(table, "w", 1, seq)


def test_the_canary_is_where_the_plan_moves_traffic() -> None:
    def roles(text: str) -> tuple[str | None, str | None, str]:
        p = parse_plan(text)
        r = choose_roles([s.weights for s in p.steps], p.canary)
        return r.baseline, r.canary, r.source

    moving = (
        "steps:\n - {weights: {a: 100, b: 0}, hold_s: 1}\n - {weights: {a: 0, b: 100}, hold_s: 1}\n"
    )
    assert roles(moving) == ("a", "b", "plan weights")
    one = "steps:\n - {weights: {v1: 0, v2: 100}, hold_s: 1}\n"
    assert roles(one) == ("v1", "v2", "plan weights")  # no change: the subset named last
    named = "canary: v1\nsteps:\n - {weights: {v1: 0, v2: 100}, hold_s: 1}\n"
    assert roles(named) == ("v2", "v1", "plan")


def test_error_gate_trips_on_the_canary_only(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "run")
    rng = random.Random(3)
    now = 100 * 10**9
    # v1 fails a lot (not the canary); v2 fails 10 % in the last window, 0 % before it
    rows = [(now - 30 * 10**9 + i, 1.0, True, "v2") for i in range(100)]
    rows += [(now - rng.randrange(5 * 10**9), 1.0, i % 10 != 0, "v2") for i in range(200)]
    rows += [(now - rng.randrange(5 * 10**9), 1.0, False, "v1") for i in range(200)]
    write_part(folder, 0, rows)
    settings = Settings(gate_error_rate=0.05, gate_window_s=10)
    trips: list[dict[str, Any]] = []
    gates = Gates.from_settings(settings, "v2", folder, trips.append)
    assert gates is not None and gates.canary == "v2"
    event = gates.check(now)
    assert event is not None and event["gate"] == "error_rate"
    assert event["n"] == 200 and event["value"] == pytest.approx(0.1)
    strict = Gates(folder=folder, canary="v2", on_fail=trips.append, error_rate=0.2)
    assert strict.check(now) is None


def test_p99_gate_uses_the_window(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "run")
    now = 50 * 10**9
    lat = [float(i) for i in range(1, 101)]
    write_part(folder, 0, [(now - 10**9, x, True, "v2") for x in lat])
    gates = Gates(folder=folder, canary="v2", on_fail=lambda e: None, p99_ms=98.5)
    event = gates.check(now)
    # the report's percentile (linear between ranks), not a nearest rank
    assert event is not None and event["value"] == float(np.percentile(lat, 99)) == 99.01
    assert (
        Gates(folder=folder, canary="v2", on_fail=lambda e: None, p99_ms=99.01).check(now) is None
    )
    assert Gates.from_settings(Settings(), "v2", folder, lambda e: None) is None


# -- open model -------------------------------------------------------------------------------
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


# -- end-of-run checks ------------------------------------------------------------------------
def test_cohort_check_counts_leaks_per_cohort() -> None:
    from loadgen.checks import cohort_only

    table = request_table(
        5,
        cohort=["beta", "beta", "regular", "regular", "regular"],
        version=["v2", "v2", "v1", "v1", None],
        user_id=[1, 1, 2, 3, 3],
    )
    event = cohort_only("beta", "v2")(table)
    assert event["passed"] and event["cohort_requests_on_version"] == 2
    assert (event["cohort_users"], event["cohort_reached"], event["others_reached"]) == (1, 1, 0)
    leaky = request_table(2, cohort=["beta", "regular"], version=["v2", "v2"])
    assert cohort_only("beta", "v2")(leaky)["other_requests_on_version"] == 1
    assert not cohort_only("beta", "v2")(leaky)["passed"]
    never = request_table(1, cohort=["beta"], version=["v1"])
    assert not cohort_only("beta", "v2")(never)["passed"]


def test_sticky_check_counts_users_that_switched() -> None:
    from loadgen.checks import sticky_users

    rng = random.Random(5)
    rows = []
    truth = {}
    for user in range(1, 41):
        first = rng.choice(["v1", "v2"])
        switch = user % 10 == 0
        truth[user] = switch
        for i in range(6):
            v = first if not (switch and i == 5) else ("v2" if first == "v1" else "v1")
            rows.append(("w0", user, 1000 * user + i, v))
    rng.shuffle(rows)
    names = ["worker", "user_id", "start_ns", "version"]
    table = request_table(len(rows), **{k: [r[j] for r in rows] for j, k in enumerate(names)})
    event = sticky_users(table)
    assert event["users"] == 40
    assert event["users_switched"] == sum(truth.values()) == 4
    assert not event["passed"]
    first = {
        u: next(v for w, uu, t, v in sorted(rows, key=lambda r: r[2]) if uu == u) for u in truth
    }
    assert event["users_by_first_version"] == {
        v: sum(1 for f in first.values() if f == v) for v in ("v1", "v2")
    }


def test_users_of_different_workers_are_different_users() -> None:
    from loadgen.checks import sticky_users

    table = request_table(
        4, worker=["w0", "w0", "w1", "w1"], user_id=[1, 1, 1, 1], version=["v1", "v1", "v2", "v2"]
    )
    event = sticky_users(table)
    assert (event["users"], event["users_switched"], event["passed"]) == (2, 0, True)
