"""The master's side of one run: run folder and run.json, the rollout, gates, checks, report.

The harness makes one `Conductor` per test_start on the master (or the local runner); it lives
until the run folder is final. Workers never see it: they only write request parts.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import gevent
import pyarrow as pa

from loadgen.checks import Check
from loadgen.gates import Gates
from loadgen.openmodel import late_arrivals
from loadgen.options import Settings
from loadgen.plan import Plan
from loadgen.rollout import Rollout, WeightSetter
from loadgen.runinfo import new_run_info
from loadgen.steps import StepClock
from meshcore.exitcodes import ExitCode
from meshcore.runfolder import RunFolder

log = logging.getLogger("meshload")

WORKER_WAIT_S = 15.0
LATE_TOLERANCE_MS = 1.0


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
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.checks = list(checks)
        self.spawn = spawn
        self.sleep = sleep
        self.exit_code: int | None = None
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
        # With no Prometheus to ask afterwards, the embedded mesh scrapes into the run folder.
        self.mesh = mesh
        if mesh is not None and not getattr(mesh, "prometheus_url", None):
            try:
                mesh.record_metrics(self.folder.path)
            except Exception as e:  # telemetry never stops a load test
                log.warning("metrics will be missing from the run: %s", e)
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

    def start(self) -> None:
        """run.json, step 0's weights (before any user starts), then the rollout and gates."""
        self.write_run()
        log.info("run folder %s", self.folder.path)
        self.rollout.begin()
        self.greenlets.append(self.spawn(self.rollout.run))
        if self.gates is not None:
            self.greenlets.append(self.spawn(self.gates.run, self.sleep))

    def event(self, event: dict[str, Any]) -> None:
        self.info.setdefault("events", []).append(event)
        self.write_run()

    def gate_failed(self, event: dict[str, Any]) -> None:
        """A live gate tripped: log it, roll the canary back to step 0's weights, end the run."""
        self.event(event)
        self.rollout.roll_back(f"gate {event['gate']}")
        self.exit_code = ExitCode.GATE_FAILED

    def write_run(self) -> None:
        try:
            self.folder.write_run(self.info)
        except OSError as e:
            log.error("cannot write %s: %s", self.folder.run_json, e)

    def stop(self) -> None:
        """test_stop: no more weight changes; the end time as far as the users go."""
        self.rollout.stop()
        for g in self.greenlets:
            if g is not gevent.getcurrent():
                g.kill(block=False)
        self.greenlets.clear()
        self.info["ended_ns"] = time.time_ns()
        self.write_run()

    def finish(self, expected_captures: int, *, report: bool) -> None:
        """Wait for every capture to close, then write run.json for good, check, report."""
        deadline = time.monotonic() + WORKER_WAIT_S
        while len(self.folder.done_markers()) < expected_captures:
            if time.monotonic() > deadline:
                log.error("not every worker closed its capture; the run folder may miss records")
                break
            self.sleep(0.1)
        markers = self.folder.done_markers()
        self.info["ended_ns"] = self.info.get("ended_ns") or time.time_ns()
        self.info["status"] = "completed" if self.rollout.done else "interrupted"
        if self.exit_code == ExitCode.GATE_FAILED:
            self.info["status"] = "rolled back"
        self.info["requests"] = {
            "rows": sum(int(m.get("rows", 0)) for m in markers),
            "parts": sum(int(m.get("parts", 0)) for m in markers),
            "workers": sorted(str(m.get("worker")) for m in markers),
        }
        open_model = self.settings.arrival_rate > 0 or any(s.arrival_rate for s in self.plan.steps)
        if self.checks or open_model:
            try:
                table = self.folder.read_requests()
            except Exception as e:
                log.error("cannot read the records for the end-of-run checks: %s", e)
            else:
                self.run_checks(table)
                if open_model:
                    self.count_late_arrivals(table)
        self.write_run()
        log.info("run folder %s: %d requests", self.folder.path, self.info["requests"]["rows"])
        if report:
            self.report()

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
                self.exit_code = ExitCode.GATE_FAILED

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
