"""The master's side of one run: run folder and run.json, the rollout, gates, checks, report.

The harness makes one `Conductor` per test_start on the master (or the local runner); it lives
until the run folder is final. Workers never see it: they only write request parts.

The `Rollout` walks the plan in a greenlet of its own rather than in `LoadTestShape.tick`,
which Locust calls about once a second and blocks while users ramp up; steps then start on
their schedule. The shape (`loadgen.shape`) only reads `users()` and `done`. Each weight change
goes to a `WeightSetter`: `meshcore.kube.client.RouteWeights`, the Kubernetes API's.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import gevent
import pyarrow as pa

from loadgen import stamping
from loadgen.checks import Check
from loadgen.gates import Gates
from loadgen.openmodel import late_arrivals
from loadgen.options import Settings
from loadgen.outcome import Outcome, broken_steps, reconcile
from loadgen.plan import Plan
from loadgen.runinfo import new_run_info
from loadgen.steps import StepClock
from loadgen.watch import WATCH_S, Watch, processes
from meshcore.errors import MeshloadError
from meshcore.runfolder import RunFolder

if TYPE_CHECKING:
    from meshcore.kube.client import WeightChange

log = logging.getLogger("meshload")

WORKER_WAIT_S = 15.0
LATE_TOLERANCE_MS = 1.0
Sleep = Callable[[float], Any]


class Conductor:
    def __init__(
        self,
        *,
        scenario: str,
        plan: Plan,
        setter: WeightSetter,
        settings: Settings,
        clock: StepClock,
        target: str,
        mesh: Any,
        users: int,
        broadcast: Callable[[], None],
        checks: Sequence[Check] = (),
        extra_info: dict[str, Any] | None = None,
        spawn: Callable[..., Any],
        sleep: Callable[[float], Any],
        request_count: Callable[[], int] | None = None,
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.request_count = request_count  # Locust's count so far, for the precision line
        self.checks = list(checks)
        self.spawn = spawn
        self.sleep = sleep
        self.outcome = Outcome()
        self.worker_wait_s = WORKER_WAIT_S  # how long finish() waits for every capture to close
        self.ending: str | None = None  # set when the run must end before its plan does
        self.info = new_run_info(
            scenario=scenario,
            started_ns=time.time_ns(),
            target=target,
            plan=plan,
            settings=settings,
            mesh=mesh,
            extra=extra_info,
        )
        self.folder = RunFolder.create(settings.results_dir, self.info["run_id"])
        # The embedded mesh records its spans and metrics into the run folder as they come, so
        # a crashed trace store or scraper loses seconds, not the run, and the report needs no
        # fetch from a backend that may be gone.
        self.mesh = mesh
        if mesh is not None:
            try:
                mesh.record(self.folder.path)
            except Exception as e:  # telemetry never stops a load test
                log.warning("telemetry will be missing from the run: %s", e)
        if mesh is not None:  # who is who, for the watch's lines and for whoever debugs a run
            self.info["mesh_pids"] = {c.name: c.proc.pid for c in processes(mesh)}
        self.setter = setter
        self.info.update(stamping.switch_on(setter, settings, self.info["run_id"]))
        self.rollout = Rollout(
            plan=plan,
            setter=setter,
            clock=clock,
            on_event=self.event,
            broadcast=broadcast,
            default_users=users,
            sleep=sleep,
        )
        self.gates = Gates.from_settings(
            settings, str(self.info["roles"]["canary"]), self.folder, self.gate_failed
        )
        self.greenlets: list[Any] = []

    @property
    def exit_code(self) -> int | None:
        return self.outcome.exit_code

    def start(self) -> None:
        """run.json, step 0's weights (before any user starts), then the rollout, the gates
        and the watch (heartbeat, the embedded mesh's processes)."""
        self.write_run()
        log.info("run folder %s", self.folder.path)
        self.rollout.begin()
        if first := stamping.wait_first_stamp(self.info, self.info["target"], self.sleep):
            self.info["first_stamp"] = first
            self.write_run()
        self.greenlets.append(self.spawn(self.rollout.run))
        if self.gates is not None:
            self.greenlets.append(self.spawn(self.gates.run, self.sleep))
        self.greenlets.append(self.spawn(self.watch))

    def event(self, event: dict[str, Any]) -> None:
        self.info.setdefault("events", []).append(event)
        if event["kind"] in ("weights", "weights_failed"):
            stamping.after_change(self.info, self.setter)
        if event["kind"] == "weights_failed":
            self.outcome.fail(f"step {event['step']}: weight change failed: {event['reason']}")
        self.write_run()

    def gate_failed(self, event: dict[str, Any]) -> None:
        """A live gate tripped: log it, roll the canary back to step 0's weights, end the run."""
        self.event(event)
        self.rollout.roll_back(f"gate {event['gate']}")
        self.outcome.rolled_back = True

    def end(self, reason: str) -> None:
        """End the run before its plan does (the shape then stops the users)."""
        if self.ending is None:
            self.ending = reason
        self.rollout.stop()

    def interrupt(self, signal_name: str) -> None:
        """Ctrl-C or SIGTERM: stop the plan, keep what was measured, exit 130."""
        if self.outcome.interrupted:
            return
        self.outcome.interrupted = signal_name
        self.event({"kind": "interrupted", "signal": signal_name, "t_ns": time.time_ns(),
                    "step": self.rollout.step})  # fmt: skip
        self.end(f"interrupted by {signal_name}")

    def watch(self) -> None:
        """The heartbeat and the embedded mesh's processes, until the run stops (a greenlet)."""
        watch = Watch(mesh=self.mesh, keep_going=self.settings.keep_going, conductor=self)
        while True:
            watch.tick()
            self.sleep(WATCH_S)

    def write_run(self) -> None:
        try:
            self.folder.write_run(self.info)
        except OSError as e:
            log.error("cannot write %s: %s", self.folder.run_json, e)

    def stop(self) -> None:
        """test_stop: no more weight changes, the stamps removed; the end time as far as the
        users go."""
        self.rollout.stop()
        for g in self.greenlets:
            if g is not gevent.getcurrent():
                g.kill(block=False)
        self.greenlets.clear()
        self.info["ended_ns"] = time.time_ns()
        stamping.switch_off(self.info, self.setter)
        if self.info.get("stamps") and self.info["stamps"].get("replica"):
            kube = getattr(getattr(self.setter, "client", None), "kube", None)
            self.info["replica_pods"] = dict(stamping.replica_pods(kube))
        self.write_run()

    def finish(
        self,
        expected_captures: int,
        *,
        report: bool,
        locust_counts: Mapping[str, int] | None = None,
        sent_reported: Mapping[str, int] | None = None,
    ) -> None:
        """Wait for every capture to close, reconcile the records with Locust's count, decide
        how the run ended, write run.json for good, check, report."""
        deadline = time.monotonic() + self.worker_wait_s
        while len(self.folder.done_markers()) < expected_captures:
            if time.monotonic() > deadline:
                log.error("not every worker closed its capture; the run folder may miss records")
                break
            self.sleep(0.1)
        self.info["ended_ns"] = self.info.get("ended_ns") or time.time_ns()
        requests, failures = reconcile(
            self.folder, self.folder.done_markers(), locust_counts, expected_captures, sent_reported
        )
        self.info["requests"] = requests
        for failure in failures:
            self.outcome.fail(failure)
        self.outcome.plan_done = self.rollout.done
        if not self.rollout.done and not self.outcome.interrupted:
            last = len(self.plan.steps) - 1
            self.outcome.fail(
                self.ending or f"the plan stopped at step {self.rollout.step} of 0..{last}"
            )
        open_model = self.settings.arrival_rate > 0 or any(s.arrival_rate for s in self.plan.steps)
        columns = None if self.checks or open_model else ["step", "ok"]
        try:
            table = self.folder.read_requests(columns)
        except Exception as e:
            log.error("cannot read the records for the end-of-run checks: %s", e)
            self.outcome.fail(f"the request records cannot be read: {e}")
        else:
            self.judge_records(table)
        self.info["status"] = self.outcome.status
        self.info["failure"] = list(self.outcome.failures) or None
        self.info["exit_code"] = int(self.exit_code or 0)
        self.write_run()
        log.info("run folder %s: %d requests", self.folder.path, requests["rows"])
        if report:
            self.report()

    def judge_records(self, table: pa.Table) -> None:
        """The end-of-run figures of the records themselves: broken steps, checks, lateness."""
        threshold = self.settings.broken_step_error_rate
        self.info["broken_step_error_rate"] = threshold
        broken = broken_steps(table, threshold)
        self.info["broken_steps"] = broken
        for b in broken:
            self.outcome.fail(
                f"step {b['step']}: {b['error_rate']:.0%} of {b['requests']:,} requests failed "
                f"(broken-step share {threshold:.0%})"
            )
        if self.checks:
            self.run_checks(table)
        if "intended_ns" in table.column_names:
            self.count_late_arrivals(table)

    def count_late_arrivals(self, table: pa.Table) -> None:
        """Open model: how many task starts the generator could not make on time."""
        if "intended_ns" not in table.column_names:
            return
        self.info["open_model"] = {
            "scheduled": table.num_rows - table["intended_ns"].null_count,
            "late_arrivals": late_arrivals(table, LATE_TOLERANCE_MS),
            "late_tolerance_ms": LATE_TOLERANCE_MS,
        }

    def run_checks(self, table: pa.Table) -> None:
        for check in self.checks:
            try:
                event = check(table)
            except Exception as e:
                log.error("check %s could not run: %s", getattr(check, "__name__", check), e)
                continue
            self.info.setdefault("events", []).append(event)
            if event["passed"]:
                log.info("check %s passed", event["check"])
            else:
                log.error("check %s FAILED: %s", event["check"], event)
                self.outcome.check_failed = True

    def report(self) -> None:
        try:
            from analysis.report import build_report
        except ImportError:
            log.info("analysis.report is not available; the run folder is left as recorded")
            return
        if self.mesh is not None:
            try:
                self.mesh.stop_recording()  # metrics.parquet complete before the report reads it
            except Exception as e:
                log.warning("stopping the metrics recording failed: %s", e)
        # Telemetry is fetched now, while the backends (the embedded mesh's too) still run.
        telemetry = self.info.get("telemetry") or {}
        urls = {k: telemetry.get(k) for k in ("jaeger_url", "prometheus_url") if telemetry.get(k)}
        try:
            accepted = inspect.signature(build_report).parameters
            kwargs: dict[str, Any] = {k: v for k, v in urls.items() if k in accepted}
            build_report(self.folder.path, **kwargs)
        except Exception as e:  # the report never changes the load test's outcome
            log.error("report for %s failed: %s", self.folder.path, e)


class WeightSetter(Protocol):
    """What a rollout moves: one route (`meshcore.kube.client.RouteWeights` in production)."""

    target: str  # how messages name it: "VirtualService default/frontend route primary"

    def set_weights(self, weights: Mapping[str, int], step: int) -> WeightChange: ...


@dataclass(kw_only=True)
class Rollout:
    """One pass through a plan: step 0 at `begin()`, the others from `run()` (a greenlet);
    `default_users` are the run's users, for the steps that name none."""

    plan: Plan
    setter: WeightSetter
    clock: StepClock
    on_event: Callable[[dict[str, Any]], None]
    broadcast: Callable[[], None]
    default_users: int
    sleep: Sleep = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    started_at: float | None = field(default=None, init=False)
    step: int = field(default=-1, init=False)
    done: bool = field(default=False, init=False)
    stopped: bool = field(default=False, init=False)

    @property
    def elapsed_s(self) -> float:
        return 0.0 if self.started_at is None else self.monotonic() - self.started_at

    def users(self, step: int | None = None) -> int:
        return self.plan.users_of(self.step if step is None else step, self.default_users)

    def arrival_rate(self) -> float | None:
        return self.plan.steps[min(max(self.step, 0), len(self.plan.steps) - 1)].arrival_rate

    def begin(self) -> None:
        """Set step 0's weights before any user starts, so the run begins from a known state."""
        self.started_at = self.monotonic()
        self.apply(0)

    def run(self) -> None:
        """Hold each step for its duration, then mark the plan done (the shape then ends it)."""
        if self.started_at is None:
            self.begin()
        assert self.started_at is not None
        offset = self.plan.steps[0].hold_s
        for k in range(1, len(self.plan.steps)):
            self._sleep_until(offset)
            if self.stopped:
                return
            self.apply(k)
            offset += self.plan.steps[k].hold_s
        self._sleep_until(offset)
        self.done = True

    def _sleep_until(self, offset_s: float) -> None:
        assert self.started_at is not None
        while not self.stopped:
            left = self.started_at + offset_s - self.monotonic()
            if left <= 0:
                return
            self.sleep(min(left, 0.5))

    def apply(self, k: int, weights: dict[str, int] | None = None, **extra: Any) -> None:
        """Enter step k: the workers learn it first, then the API is asked for the weights.

        `weights` (with a step number past the plan's) is for changes the plan did not list,
        such as a rollback; `extra` keys go into the event.
        """
        weights = dict(weights if weights is not None else self.plan.steps[k].weights)
        self.step = k
        self.clock.begin(k, time.time_ns())
        self.broadcast()
        event: dict[str, Any] = {"kind": "weights", "step": k, "weights": weights, **extra}
        try:
            applied = self.setter.set_weights(weights, k)
        except MeshloadError as e:
            # The run goes on: the records show what the mesh really did, the event says why,
            # and the run's exit code says it was not measured as planned.
            log.error("step %d: weight change failed: %s", k, e)
            event.update(kind="weights_failed", reason=str(e), requested_ns=time.time_ns())
            self.on_event(event)
            return
        event.update(requested_ns=applied.requested_ns, accepted_ns=applied.accepted_ns)
        if applied.resource_version:
            event["resource_version"] = applied.resource_version
        log.info(
            "step %d: weights %s accepted in %.1f ms",
            k,
            weights,
            (applied.accepted_ns - applied.requested_ns) / 1e6,
        )
        self.on_event(event)

    def stop(self) -> None:
        self.stopped = True

    def roll_back(self, reason: str) -> None:
        """Stop the plan and send all traffic back as step 0 had it, as one more step."""
        self.stop()
        self.apply(len(self.plan.steps), dict(self.plan.steps[0].weights), rollback=reason)
        self.done = True
