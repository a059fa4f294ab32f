"""The master's side of a run: run.json as docs/design.md fixes it, events, checks, gates, and
the rollout that walks the plan."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from loadgen.conductor import Conductor, Rollout
from loadgen.options import Settings
from loadgen.plan import Plan, Step
from loadgen.steps import StepClock
from meshcore.errors import BackendError
from meshcore.exitcodes import ExitCode
from meshcore.kube.client import WeightChange
from meshcore.runfolder import CaptureEnd
from meshcore.schemas import OPEN_MODEL_SCHEMA
from tests.records import request_table


class Setter:
    target = "VirtualService default/frontend route 0"

    def __init__(self) -> None:
        self.calls: list[dict[str, int]] = []

    def subsets(self) -> list[str]:
        return ["v1", "v2"]

    def set_weights(self, weights: Mapping[str, int], step: int = 0) -> WeightChange:
        self.calls.append(dict(weights))
        return WeightChange(dict(weights), 10 * len(self.calls), 10 * len(self.calls) + 3, "1")


class Greenlet:
    def __init__(self) -> None:
        self.killed = False

    def kill(self, block: bool = False) -> None:
        self.killed = True


def conductor(tmp_path: Path, **kw: Any) -> tuple[Conductor, Setter, list[Greenlet]]:
    setter = Setter()
    spawned: list[Greenlet] = []

    def spawn(*_: Any) -> Greenlet:  # the rollout is driven by hand in these tests
        spawned.append(Greenlet())
        return spawned[-1]

    plan = Plan(steps=(Step({"v1": 100, "v2": 0}, 1), Step({"v1": 50, "v2": 50}, 1)))
    c = Conductor(scenario="canary", plan=plan, setter=setter,
                  settings=Settings(results_dir=str(tmp_path), **kw), clock=StepClock(),
                  target="http://127.0.0.1:1", mesh=None, users=3, broadcast=lambda: None,
                  spawn=spawn, sleep=lambda s: None)  # fmt: skip
    return c, setter, spawned


def marker(c: Conductor, worker: str, rows: int) -> None:
    c.folder.mark_done(CaptureEnd(worker, 1, rows, 1))


def test_run_json_carries_the_contract_keys_from_the_start(tmp_path: Path) -> None:
    c, setter, spawned = conductor(tmp_path, jaeger_url="http://127.0.0.1:16686")
    c.start()
    info = json.loads(c.folder.run_json.read_text())
    for key in ("schema_version", "run_id", "scenario", "started_ns", "ended_ns", "target",
                "mesh", "plan", "events", "telemetry", "versions"):  # fmt: skip
        assert key in info, key
    assert info["schema_version"] == 1 and info["mesh"] == "kubernetes"
    assert info["telemetry"] == {"jaeger_url": "http://127.0.0.1:16686", "prometheus_url": None}
    assert info["plan"]["steps"][1] == {"weights": {"v1": 50, "v2": 50}, "hold_s": 1.0}
    assert info["events"] == [{"kind": "weights", "step": 0, "weights": {"v1": 100, "v2": 0},
                               "requested_ns": 10, "accepted_ns": 13,
                               "resource_version": "1"}]  # fmt: skip
    assert info["roles"] == {"baseline": "v1", "canary": "v2", "source": "plan weights"}
    assert c.folder.path.name == info["run_id"] and c.folder.path.parent == tmp_path
    assert setter.calls == [{"v1": 100, "v2": 0}] and len(spawned) == 2  # rollout, watch


def part(c: Conductor, worker: str, pid: int, rows: int, **columns: Any) -> None:
    table = request_table(rows, **{"step": [0] * rows, "ok": [True] * rows, **columns})
    c.folder.write_part(table, worker, pid, 0)


def test_finish_reconciles_the_records_with_locust_per_worker(tmp_path: Path) -> None:
    c, _, spawned = conductor(tmp_path)
    c.start()
    c.rollout.apply(1)
    c.rollout.done = True
    c.stop()
    assert all(g.killed for g in spawned)
    part(c, "worker0", 7, 7)
    part(c, "worker1", 5, 5)
    marker(c, "worker0", 7)
    marker(c, "worker1", 5)
    c.finish(2, report=False, locust_counts={"worker0": 7, "worker1": 5})
    info = json.loads(c.folder.run_json.read_text())
    req = info["requests"]
    assert (req["rows"], req["parts"], req["locust"], req["lost"]) == (12, 2, 12, 0)
    assert req["workers"] == ["worker0", "worker1"]
    assert req["by_worker"]["worker1"] == {"on_disk": 5, "written": 5, "sent": None, "lost": 0,
                                           "locust": 5, "closed": True, "missing": 0}  # fmt: skip
    assert info["status"] == "completed" and info["failure"] is None and c.exit_code is None
    assert info["ended_ns"] >= info["started_ns"] and info["exit_code"] == 0


def test_a_lost_worker_and_lost_records_are_failures(tmp_path: Path) -> None:
    c, _, _ = conductor(tmp_path)
    c.worker_wait_s = 0.2  # worker1 never closes its capture
    c.start()
    c.rollout.done = True
    part(c, "worker0", 7, 7)
    part(c, "worker1", 9, 3)  # worker1 wrote a part, then died: no marker
    c.folder.mark_done(CaptureEnd("worker0", 7, 7, 1, lost=2, seen=9))
    # Locust counted 5 of worker1's; it last reported sending 1 (reports lag): 3 landed
    c.finish(
        2, report=False, locust_counts={"worker0": 9, "worker1": 5}, sent_reported={"worker1": 1}
    )
    info = json.loads(c.folder.run_json.read_text())
    assert info["status"] == "failed" and c.exit_code == ExitCode.NOT_MEASURED
    assert info["failure"] == [
        "2 request records could not be written to the run folder",
        "worker(s) lost: worker1; 3 of their records reached the folder, 2 that Locust counted "
        "did not",
    ]
    gone = info["requests"]["by_worker"]["worker1"]
    assert (gone["closed"], gone["on_disk"], gone["sent"], gone["missing"]) == (False, 3, 3, 2)


def test_a_plan_stopped_early_is_failed_and_an_interrupted_one_is_130(tmp_path: Path) -> None:
    c, _, _ = conductor(tmp_path / "stopped")
    c.start()
    c.rollout.apply(1)
    c.stop()
    marker(c, "local", 0)
    c.finish(1, report=False)
    info = json.loads(c.folder.run_json.read_text())
    assert info["status"] == "failed" and info["failure"][0] == "the plan stopped at step 1 of 0..1"
    assert c.exit_code == ExitCode.NOT_MEASURED
    c, _, _ = conductor(tmp_path / "interrupted")
    c.start()
    c.interrupt("SIGTERM")
    assert c.ending == "interrupted by SIGTERM" and c.rollout.stopped
    c.stop()
    marker(c, "local", 0)
    c.finish(1, report=False)
    info = json.loads(c.folder.run_json.read_text())
    assert info["status"] == "interrupted" and c.exit_code == ExitCode.INTERRUPTED
    assert info["events"][-1]["kind"] == "interrupted" and info["events"][-1]["signal"] == "SIGTERM"


def test_a_failed_weight_change_and_a_broken_step_are_failures(tmp_path: Path) -> None:
    c, _, _ = conductor(tmp_path, broken_step_error_rate=0.5)
    c.start()
    c.event({"kind": "weights_failed", "step": 1, "weights": {"v2": 100}, "reason": "API down"})
    c.rollout.done = True
    part(c, "local", 1, 10, ok=[False] * 6 + [True] * 4)
    marker(c, "local", 10)
    c.finish(1, report=False)
    info = json.loads(c.folder.run_json.read_text())
    assert info["failure"] == [
        "step 1: weight change failed: API down",
        "step 0: 60% of 10 requests failed (broken-step share 50%)",
    ]
    assert info["broken_steps"] == [{"step": 0, "requests": 10, "errors": 6, "error_rate": 0.6}]
    assert c.exit_code == ExitCode.NOT_MEASURED and info["broken_step_error_rate"] == 0.5


def test_a_failed_check_is_an_event_and_the_exit_code(tmp_path: Path) -> None:
    c, _, _ = conductor(tmp_path)
    c.checks = [lambda t: {"kind": "check", "check": "rows", "passed": t.num_rows == 99}]
    c.start()
    table = request_table(1, start_ns=[1], latency_ms=[1.0], ok=[True], status=[200], step=[0])
    c.folder.write_part(table, "local", 1, 0)
    marker(c, "local", 1)
    c.rollout.done = True
    c.finish(1, report=False)
    info = json.loads(c.folder.run_json.read_text())
    assert info["status"] == "completed"
    assert info["events"][-1] == {"kind": "check", "check": "rows", "passed": False}
    assert c.exit_code == ExitCode.GATE_FAILED


def test_a_tripped_gate_rolls_back_and_fails_the_run(tmp_path: Path) -> None:
    c, setter, _ = conductor(tmp_path)
    c.start()
    c.rollout.apply(1)
    c.gate_failed({"kind": "gate", "gate": "error_rate", "value": 0.2, "threshold": 0.1})
    assert setter.calls[-1] == {"v1": 100, "v2": 0}
    assert c.rollout.done and c.exit_code == ExitCode.GATE_FAILED
    marker(c, "local", 0)
    c.finish(1, report=False)
    info = json.loads(c.folder.run_json.read_text())
    assert [e["kind"] for e in info["events"]] == ["weights", "weights", "gate", "weights"]
    assert info["events"][-1]["rollback"] == "gate error_rate" and info["events"][-1]["step"] == 2
    assert info["status"] == "rolled back"


def test_open_model_runs_count_late_arrivals(tmp_path: Path) -> None:
    c, _, _ = conductor(tmp_path, arrival_rate=10.0)
    c.start()
    start = [10_000_000, 20_000_000, 30_000_000, 40_000_000]
    intended = [start[0], start[1] - 5_000_000, start[2] - 900_000, None]
    table = request_table(4, OPEN_MODEL_SCHEMA, start_ns=start, intended_ns=intended)
    c.folder.write_part(table, "local", 1, 0)
    marker(c, "local", 4)
    c.finish(1, report=False)
    info = json.loads(c.folder.run_json.read_text())
    # 5 ms late counts, 0.9 ms is within the 1 ms tolerance, no intended time is not scheduled
    assert info["open_model"] == {"scheduled": 3, "late_arrivals": 1, "late_tolerance_ms": 1.0}


# -- the rollout ------------------------------------------------------------------------------
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

    def set_weights(self, weights: Mapping[str, int], step: int = 0) -> WeightChange:
        self.calls.append((self.clock.now, dict(weights)))
        if self.fail_at is not None and len(self.calls) - 1 == self.fail_at:
            raise BackendError("API down")
        n = len(self.calls)
        return WeightChange(dict(weights), 1000 * n, 1000 * n + 5, str(n))


def plan_of(*holds: float) -> Plan:
    steps = [Step({"v1": 100 - 10 * k, "v2": 10 * k}, h, users=k + 1) for k, h in enumerate(holds)]
    return Plan(steps=tuple(steps))


def test_rollout_sets_each_step_on_schedule_and_logs_it() -> None:
    t = FakeTime()
    setter = RecordingSetter(t)
    events: list[dict[str, Any]] = []
    broadcasts: list[int] = []
    clock = StepClock()
    r = Rollout(plan=plan_of(2, 3, 1.5), setter=setter, clock=clock, on_event=events.append,
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


def test_the_runs_users_hold_for_every_step_that_names_none() -> None:
    """The run's users (-u, decided by the harness) win over the plan's `users`; a step's own
    `users` win over both."""
    t = FakeTime()
    steps = (Step({"v1": 100}, 1), Step({"v1": 50, "v2": 50}, 1, users=3), Step({"v2": 100}, 1))
    r = Rollout(plan=Plan(steps=steps, users=20), setter=RecordingSetter(t), clock=StepClock(),
                on_event=lambda e: None, broadcast=lambda: None, default_users=200,
                sleep=t.sleep, monotonic=t.monotonic)  # fmt: skip
    assert [r.users(k) for k in range(3)] == [200, 3, 200]


def test_a_failed_change_is_an_event_and_the_plan_goes_on() -> None:
    t = FakeTime()
    events: list[dict[str, Any]] = []
    r = Rollout(plan=plan_of(1, 1, 1), setter=RecordingSetter(t, fail_at=1), clock=StepClock(),
                on_event=events.append, broadcast=lambda: None, default_users=1,
                sleep=t.sleep, monotonic=t.monotonic)  # fmt: skip
    r.run()
    assert [e["kind"] for e in events] == ["weights", "weights_failed", "weights"]
    assert events[1]["reason"] == "API down"
    assert r.done


def test_stop_ends_the_rollout_early() -> None:
    t = FakeTime()
    r: Rollout

    def sleep(s: float) -> None:
        t.sleep(s)
        if t.now >= 1.0:
            r.stop()

    r = Rollout(plan=plan_of(2, 2), setter=RecordingSetter(t), clock=StepClock(),
                on_event=lambda e: None, broadcast=lambda: None, default_users=1,
                sleep=sleep, monotonic=t.monotonic)  # fmt: skip
    r.run()
    assert not r.done and r.step == 0


def test_roll_back_is_one_more_step_with_the_first_weights() -> None:
    t = FakeTime()
    events: list[dict[str, Any]] = []
    clock = StepClock()
    r = Rollout(plan=plan_of(5, 5), setter=RecordingSetter(t), clock=clock, on_event=events.append,
                broadcast=lambda: None, default_users=1, sleep=t.sleep,
                monotonic=t.monotonic)  # fmt: skip
    r.begin()
    r.apply(1)
    r.roll_back("gate error_rate")
    assert r.done and r.stopped
    assert events[-1]["step"] == 2 and events[-1]["weights"] == {"v1": 100, "v2": 0}
    assert events[-1]["rollback"] == "gate error_rate"
    assert clock.current == 2 and r.users() == 2
