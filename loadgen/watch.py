"""The master's watch over a run: run.json's heartbeat, the embedded mesh's processes, and
the precision the steps will reach at the request rate of the first seconds.

A child of the embedded mesh that exits is reported at once, in one line with the tail of its
log and as a `mesh_child_exited` event, and the run is not measured as planned (exit code 4). A
child that carries traffic or weight changes (Envoy, the simulated Boutique, the control plane)
ends the run unless --keep-going; a telemetry child (trace store, scraper, Prometheus) does not
stop the load (what it kept is kept, what it would have recorded from then on is missing), and
the run goes on to its end. Every few seconds run.json gets `updated_ns`, so a run killed
outright (SIGKILL) is known to have been cut short, and when.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from loadgen.checks import sticky_users
from meshcore.figures import DEFAULT_TOLERANCE_PP, precision_line, step_half_width_pp

if TYPE_CHECKING:
    from loadgen.conductor import Conductor

HEARTBEAT_S = 5.0
WATCH_S = 0.5
PRECISION_AFTER_S = 5.0  # the request rate of the run's first seconds says what each step gets
TELEMETRY_CHILDREN = ("tracestore", "scraper", "prometheus")


class Watch:
    def __init__(self, *, mesh: Any, keep_going: bool, conductor: Conductor) -> None:
        self.mesh = mesh
        self.keep_going = keep_going
        self.conductor = conductor
        self.reported: set[str] = set()
        self.next_beat = 0.0
        self.started = time.monotonic()
        self.precision_said = False

    def tick(self) -> None:
        if self.mesh is not None:
            for child in processes(self.mesh):
                if child.name not in self.reported and not child.alive():
                    self.reported.add(child.name)
                    self.exited(child)
        if not self.precision_said and time.monotonic() - self.started >= PRECISION_AFTER_S:
            self.precision_said = True
            self.say_precision(time.monotonic() - self.started)
        if time.monotonic() >= self.next_beat:
            self.next_beat = time.monotonic() + HEARTBEAT_S
            self.conductor.info["updated_ns"] = time.time_ns()
            self.conductor.write_run()

    def say_precision(self, elapsed_s: float) -> None:
        """At the rate seen so far, how precise each step's split will be (one line each)."""
        count = self.conductor.request_count
        if count is None:
            return
        rate = count() / elapsed_s
        if rate <= 0:
            return
        plan = self.conductor.plan
        lines = [
            precision_line(k, s.weights, s.hold_s, s.arrival_rate or rate, DEFAULT_TOLERANCE_PP)[0]
            for k, s in enumerate(plan.steps)
        ]
        if sticky_users in self.conductor.checks:  # a user's requests follow its first one
            lines += self.sticky_precision()
        sys.stderr.write(
            f"meshload: at {rate:.0f} req/s the steps' splits will be measured to:\n"
            + "".join(f"meshload:   {line}\n" for line in lines)
        )

    def sticky_precision(self) -> list[str]:
        """A sticky scenario's steps: a user's requests follow its first, so a split step is
        measured by its users, not its requests (`analysis.clustering`)."""
        out = []
        for k, s in enumerate(self.conductor.plan.steps):
            total = sum(s.weights.values()) or 1.0
            shares = [w / total for w in s.weights.values()]
            users = self.conductor.rollout.users(k)
            if users > 0 and 0.0 < max(shares) < 1.0:
                width = step_half_width_pp(shares, users)
                out.append(f"step {k}: users keep their version, so it counts about its "
                           f"{users:,} users, not its requests: ±{width:.1f} pp")  # fmt: skip
        return out

    def exited(self, child: Any) -> None:
        run = self.conductor
        telemetry = child.name in TELEMETRY_CHILDREN
        code, tail, step = child.proc.returncode, child.tail(), run.rollout.step
        run.event({"kind": "mesh_child_exited", "child": child.name, "exit_code": code,
                   "telemetry": telemetry, "log_tail": tail, "t_ns": time.time_ns(),
                   "step": step})  # fmt: skip
        what = f"the embedded mesh's {child.name} exited (code {code}) at step {step}"
        if telemetry:
            what += "; its telemetry is missing from then on"
        run.outcome.fail(what)
        if telemetry:
            then = "the load goes on"
        else:
            then = "going on (--keep-going)" if self.keep_going else "ending the run"
        log = f" (its log ends: {tail})" if tail else ""
        sys.stderr.write(f"meshload: {what}{log}; {then}\n")
        if not telemetry and not self.keep_going:
            run.end(what)


def processes(mesh: Any) -> list[Any]:
    """Every process of the embedded mesh: its children, Prometheus and the scraper."""
    found = list(getattr(mesh, "children", []))
    prometheus = getattr(mesh, "prometheus", None)
    if prometheus is not None and getattr(prometheus, "child", None) is not None:
        found.append(prometheus.child)
    if getattr(mesh, "scraper", None) is not None:
        found.append(mesh.scraper)
    return found
