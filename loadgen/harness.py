"""Wires a scenario into Locust: options, embedded mesh, run folder, capture, rollout, report.

A locustfile calls `install(__file__, plan=...)` once at import and imports `RolloutShape`
(loadgen.shape); the harness then listens to Locust's events:

    init         master/local: read the plan, start the embedded mesh (no --host) or check the
                 host, check the VirtualService and the plan's subsets; any problem ends the
                 run here with one line and exit code 2
    test_start   master/local: a Conductor (run folder, run.json, step 0's weights, rollout);
                 workers/local: open the request capture (`loadgen.senders`: local writes the
                 folder, a worker sends its parts to the master, which writes them)
    test_stop    capture flushed and marked done; rollout stopped; run.json updated
    quitting     master/local: users stopped, workers' captures awaited, records reconciled
                 with Locust's count, run.json final (status, failures, exit code), checks,
                 report, mesh stopped; workers: capture closed
    quit         master/local: the run's last line, naming its exit code and why

Ctrl-C and SIGTERM end the run in order (status "interrupted", exit code 130); a second one
quits at once. The conductor's watch ends a run whose embedded mesh lost a process (exit 4).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gevent
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from loadgen import client_tls, embedded, openmodel, options, steps
from loadgen.checks import Check
from loadgen.conductor import Conductor, WeightSetter
from loadgen.outcome import last_line
from loadgen.plan import Plan, load_plan
from loadgen.senders import Senders
from loadgen.target import resolve_target
from meshcore.errors import ConfigError, MeshloadError
from meshcore.exitcodes import ExitCode

log = logging.getLogger("meshload")

_current: Harness | None = None


def current() -> Harness | None:
    return _current


def install(
    locustfile: str | Path,
    *,
    plan: str | Path,
    manifests: str | Path | None = None,
    spec: str | Path | None = None,
    scenario: str | None = None,
    events: Any = None,
    default_users: int = 20,
    checks: Sequence[Check] = (),
) -> Harness:
    """Attach the harness of the scenario in `locustfile` (its `__file__`) to Locust's events
    (the module-level `locust.events` by default). `plan`, `manifests` and `spec` are read
    relative to the locustfile's folder; the scenario is named after the file
    (`canary_https.py`: `canary-https`) unless `scenario` names it."""
    global _current
    if events is None:
        from locust import events as locust_events

        events = locust_events
    here = Path(locustfile).resolve().parent
    h = Harness(
        scenario=scenario or Path(locustfile).stem.replace("_", "-"),
        default_plan=here / plan,
        manifests=here / manifests if manifests else None,
        spec=here / spec if spec else None,
        default_users=default_users,
        checks=checks,
    )
    h.attach(events)
    _current = h
    return h


def _is_master_or_local(runner: Any) -> bool:
    return isinstance(runner, MasterRunner | LocalRunner)


class Harness:
    def __init__(
        self,
        *,
        scenario: str,
        default_plan: Path,
        manifests: Path | None = None,
        spec: Path | None = None,
        default_users: int = 20,
        checks: Sequence[Check] = (),
    ) -> None:
        self.scenario = scenario
        self.default_plan = default_plan
        self.manifests = manifests
        self.spec = spec
        self.default_users = default_users
        self.checks = list(checks)
        self.settings = options.Settings()
        self.clock = steps.StepClock()
        self.senders = Senders(self.clock)
        self.plan: Plan | None = None
        self.mesh: Any = None
        self.setter: WeightSetter | None = None
        self.run: Conductor | None = None
        self.environment: Any = None
        self.expected_captures = 1
        self.target_info: dict[str, Any] = {}
        self.tls: client_tls.RunTls | None = None  # an https:// target's TLS
        self._rate: tuple[float, int] = (0.0, 1)
        self._cli_users: int | None = None
        self._cli_spawn_rate: float | None = None
        self._signals = 0
        self.last_info: dict[str, Any] | None = None  # run.json of the last finished run

    def attach(self, events: Any) -> None:
        events.init_command_line_parser.add_listener(options.add_arguments)
        events.init.add_listener(self.on_init)
        events.test_start.add_listener(self.on_test_start)
        events.test_stop.add_listener(self.on_test_stop)
        events.quitting.add_listener(self.on_quitting)
        events.quit.add_listener(self.on_quit)
        events.request.add_listener(self.senders.on_request)
        events.report_to_master.add_listener(self.senders.on_report_to_master)
        events.worker_report.add_listener(self.senders.on_worker_report)

    # -- what the shape and the users ask -------------------------------------------------
    @property
    def rollout(self) -> Any:
        return self.run.rollout if self.run is not None else None

    def first_step_users(self) -> int:
        if self.plan is None:
            return self.default_users
        return self.plan.users_of(0, self._plan_users())

    def _plan_users(self) -> int:
        """-u when given, else the plan's `users`, else the scenario's default."""
        assert self.plan is not None
        if self._cli_users is not None:
            return self._cli_users
        return self.plan.users if self.plan.users is not None else self.default_users

    def users_now(self) -> int:
        return self.rollout.users() if self.rollout is not None else self.first_step_users()

    def spawn_rate(self, users: int) -> float:
        """-r when given, else the plan's `spawn_rate`, else all users within a second."""
        if self._cli_spawn_rate is not None:
            return self._cli_spawn_rate
        if self.plan is not None and self.plan.spawn_rate:
            return self.plan.spawn_rate
        return float(max(users, 1))

    def rate_now(self) -> tuple[float, int]:
        return self._rate

    def ending(self) -> bool:
        """The run must end before its plan does (a signal, a dead process of the mesh)."""
        return self.run is not None and self.run.ending is not None

    # -- init ------------------------------------------------------------------------------
    def on_init(self, environment: Any, runner: Any = None, **_: Any) -> None:
        self.environment = environment
        runner = runner or environment.runner
        # Locust fills in -u 1 / -r 1 only after init in headless mode; None here means "not
        # given", so the plan decides.
        parsed = environment.parsed_options
        self._cli_users = getattr(parsed, "num_users", None)
        rate = getattr(parsed, "spawn_rate", None)
        self._cli_spawn_rate = float(rate) if rate is not None else None
        try:
            self.settings = options.Settings.from_options(parsed)
            if _is_master_or_local(runner):
                self._prepare(environment)
        except MeshloadError as e:
            self._fail_at_start(environment, e)
        if not isinstance(runner, MasterRunner):
            runner.register_message(steps.MESSAGE, self._on_steps_message)
        self.senders.on_init(environment, runner)
        web_ui = getattr(environment, "web_ui", None)
        if web_ui is not None and _is_master_or_local(runner):
            from loadgen import webtab

            webtab.install(web_ui, self)
        if _is_master_or_local(runner) and self._headless(environment):
            # Ctrl-C and SIGTERM end the run in order: the plan stops, the users stop, the
            # records are flushed and counted, run.json says "interrupted", exit code 130.
            # (Locust installs its own SIGTERM handler only once a shape run has returned, and
            # a KeyboardInterrupt raised into gevent's hub prints a traceback.)
            for signum in (signal.SIGINT, signal.SIGTERM):
                gevent.signal_handler(signum, self.on_signal, signal.Signals(signum).name)
        openmodel.set_rate_source(self.rate_now)
        atexit.register(self._at_exit)

    def _prepare(self, environment: Any) -> None:
        self.plan = load_plan(self.settings.plan or self.default_plan)
        target = resolve_target(
            settings=self.settings,
            plan=self.plan,
            host=environment.host,
            manifests=self.manifests,
            spec=self.spec,
        )
        self.mesh, self.setter, self.target_info = target.mesh, target.setter, target.info
        environment.host = target.host

    def _fail_at_start(self, environment: Any, error: MeshloadError) -> None:
        sys.stderr.write(f"meshload: {error}\n")
        self._stop_mesh()
        environment.process_exit_code = ExitCode.BAD_INPUT
        with contextlib.suppress(Exception):
            environment.runner.quit()
        sys.exit(ExitCode.BAD_INPUT)

    # -- start -----------------------------------------------------------------------------
    def on_test_start(self, environment: Any, **_: Any) -> None:
        runner = environment.runner
        if _is_master_or_local(runner):
            self._start_run(environment)
        if not isinstance(runner, MasterRunner):
            try:
                self.settings = options.Settings.from_options(environment.parsed_options)
            except ConfigError as e:
                log.error("%s; keeping the previous settings", e)
            self.senders.start_capture(environment, self.settings)

    def _start_run(self, environment: Any) -> None:
        assert self.plan is not None and self.setter is not None
        runner = environment.runner
        try:  # the web UI may have changed the per-run options since the last start
            self.settings = options.Settings.from_options(environment.parsed_options)
        except ConfigError as e:
            log.error("%s; keeping the previous settings", e)
        if self.mesh is not None and not environment.host:
            # The web UI's start form sends its host field even when left empty.
            environment.host = embedded.gateway_target(self.mesh)
        self.clock.reset()
        self.run = Conductor(
            scenario=self.scenario,
            plan=self.plan,
            setter=self.setter,
            settings=self.settings,
            clock=self.clock,
            target=str(environment.host),
            mesh=self.mesh,
            users=self._plan_users(),
            broadcast=self._broadcast,
            checks=self.checks,
            extra_info=self.target_info,
            spawn=gevent.spawn,
            sleep=gevent.sleep,
            request_count=lambda: int(environment.stats.total.num_requests),
        )
        opts = environment.parsed_options
        # Workers read these from the master's spawn message (custom options travel with it).
        opts.meshload_run_dir = str(self.run.folder.path)
        opts.meshload_open_model = self.settings.arrival_rate > 0 or any(
            s.arrival_rate for s in self.plan.steps
        )
        stamps = self.run.info.get("stamps")
        opts.meshload_stamp = stamps["token"] if stamps else ""
        opts.meshload_authority = self.target_info.get("host_header") or ""
        self.tls = client_tls.RunTls.of(
            str(environment.host), self.settings, self.mesh, opts.meshload_authority or None
        )
        opts.meshload_ca_pem = self.tls.ca_pem() if self.tls else ""  # workers verify with it
        # client spans go to the embedded mesh's trace store unless OTEL_* says otherwise
        jaeger = getattr(self.mesh, "jaeger_url", None) if self.mesh is not None else None
        opts.meshload_otlp = f"{jaeger}/v1/traces" if jaeger else ""
        self.expected_captures = runner.worker_count if isinstance(runner, MasterRunner) else 1
        self.senders.start_run(self.run.folder)
        self.run.start()

    def on_signal(self, name: str) -> None:
        if self._signals:
            sys.stderr.write(f"meshload: {name} again: quitting at once\n")
            os._exit(ExitCode.INTERRUPTED)
        self._signals += 1
        sys.stderr.write(f"meshload: {name}: ending the run; what was measured is kept\n")
        if self.run is not None:
            self.run.interrupt(name)
        elif self.environment is not None:  # no run yet: nothing to keep
            self.environment.process_exit_code = ExitCode.INTERRUPTED
            self.environment.runner.quit()

    # -- during the run --------------------------------------------------------------------
    def _broadcast(self) -> None:
        """Tell every process (workers, or this one) the step timeline and the load now."""
        runner = self.environment.runner if self.environment is not None else None
        users = self.users_now()
        step_rate = self.rollout.arrival_rate() if self.rollout is not None else None
        rate = step_rate if step_rate is not None else self.settings.arrival_rate
        data = {**self.clock.message(), "arrival_rate": rate, "users": users}
        self._rate = (rate, users)
        if runner is not None:
            try:
                runner.send_message(steps.MESSAGE, data)
            except Exception as e:  # workers then keep the old step; the records show it
                log.error("cannot tell workers about the new step: %s", e)

    def _on_steps_message(self, environment: Any = None, msg: Any = None, **_: Any) -> None:
        data = getattr(msg, "data", None) or {}
        self.clock.replace(data.get("timeline", []))
        self._rate = (float(data.get("arrival_rate") or 0.0), int(data.get("users") or 1))

    # -- end -------------------------------------------------------------------------------
    def plan_finished(self) -> None:
        """Called by the shape when the plan is over, before it ends the test.

        A master stops its workers first and waits for them: each sends its last stats with its
        test_stop (below), so Locust's own request count includes the final seconds; quitting
        straight away would drop the workers' last reports.
        """
        runner = self.environment.runner if self.environment is not None else None
        if isinstance(runner, MasterRunner):
            runner.stop()

    def on_test_stop(self, environment: Any, **_: Any) -> None:
        self.senders.close_capture()
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            try:  # Locust reports only every 3 s; the master may quit before the next report
                runner._send_stats()
            except Exception as e:
                log.warning("cannot send the last stats to the master: %s", e)
        if _is_master_or_local(runner) and self.run is not None:
            self.run.stop()
            if not self._headless(environment):
                # Web UI: every start/stop is a run of its own; its folder is final right away.
                # (Headless runs finish at quitting, once the workers have closed too.)
                self._finish(environment, report=False)

    def _headless(self, environment: Any) -> bool:
        return bool(getattr(environment.parsed_options, "headless", False))

    def _finish(self, environment: Any, *, report: bool) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        if self.tls is not None:
            run.info["tls"] = tls = self.tls.entry(self.senders.tls_counts(environment))
            if why := client_tls.failed(tls):
                run.outcome.fail(why)
        run.finish(
            self.expected_captures,
            report=report,
            locust_counts=self.senders.counts(environment),
            sent_reported=self.senders.sent_reported,
        )
        self.last_info = run.info
        if run.exit_code is not None:
            environment.process_exit_code = run.exit_code

    def on_quitting(self, environment: Any, **_: Any) -> None:
        runner = environment.runner
        if not _is_master_or_local(runner):
            self.senders.close_capture()
            return
        try:  # SIGTERM comes here with users still running: stop them before counting
            runner.quit() if isinstance(runner, MasterRunner) else runner.stop()
        except Exception as e:
            log.error("stopping the users: %s", e)
        self._finish(environment, report=self._headless(environment))
        self._stop_mesh()

    def on_quit(self, exit_code: int, **_: Any) -> None:
        """After Locust's own tables: the run's last line, naming how it ended."""
        if self.last_info is not None:
            sys.stderr.write(f"meshload: {last_line(self.last_info, exit_code)}\n")
            sys.stderr.flush()

    def _stop_mesh(self) -> None:
        mesh, self.mesh = self.mesh, None
        if mesh is not None:
            try:
                mesh.stop()
            except Exception as e:
                log.error("stopping the embedded mesh: %s", e)

    def _at_exit(self) -> None:
        self.senders.close_capture()
        self._stop_mesh()
