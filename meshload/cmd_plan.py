"""`meshload plan PLAN --rate R`: what each step of a rollout plan can show, before running it.

Per step: its weights, its duration, the requests it will get at R req/s (its own
`arrival_rate` when the plan sets one), the precision its split will reach, and the time it
would need for the tolerance. The rules are `meshcore.figures`', the report's and the run's:

- precision: the widest 95 % interval among the step's versions (`step_half_width_pp`: the
  version nearest 50 % decides, since every version must be inside its tolerance);
- "needs": the time for ±tolerance, at which a share 2.5 tolerances off (5 pp at 2 pp) fails
  with at least 80 % power (`step_requests_needed`);
- "passes": the time after which a split exactly as configured passes about 95 % of the time,
  its interval then lying inside configured ± tolerance (`step_requests_to_pass`).

A plan that cannot be read is one line and exit 2.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from meshcore.errors import ConfigError
from meshcore.exitcodes import ExitCode
from meshcore.figures import precision_line


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="what each step of a rollout plan can show at a request rate, without running it",
        description=(
            "Per step: its weights and duration, the requests it gets at --rate, the precision "
            "of its split (the widest 95 % interval among its versions) and the time it needs "
            "for --tolerance-pp: to catch an error of 2.5 tolerances, and for a true split to "
            "pass."
        ),
    )
    p.add_argument("plan", metavar="PLAN", help="a rollout plan (e.g. scenarios/plans/canary.yaml)")
    p.add_argument(
        "--rate",
        type=float,
        required=True,
        metavar="R",
        help="requests per second the run will send (a step's arrival_rate overrides it)",
    )
    p.add_argument(
        "--tolerance-pp",
        type=float,
        default=2.0,
        help="a step's split passes within this many percentage points (default: 2)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from loadgen.plan import load_plan

    if not args.rate > 0 or math.isinf(args.rate):
        raise ConfigError(f"--rate must be a number of requests per second > 0, got {args.rate:g}")
    if not args.tolerance_pp > 0:
        raise ConfigError(f"--tolerance-pp must be > 0, got {args.tolerance_pp:g}")
    plan = load_plan(args.plan)
    for line in plan_lines(plan, args.rate, args.tolerance_pp):
        print(line)
    return ExitCode.OK


def plan_lines(plan: Any, rate: float, tolerance_pp: float) -> list[str]:
    """The lines `meshload plan` prints for a `loadgen.plan.Plan`."""
    lines = [
        f"{plan.source}: {len(plan.steps)} steps, {plan.duration_s:g} s; precision: the widest "
        f"95 % interval among a step's versions; tolerance {tolerance_pp:g} pp"
    ]
    total = 0
    for k, step in enumerate(plan.steps):
        rate_k = step.arrival_rate or rate
        line, n = precision_line(k, step.weights, step.hold_s, rate_k, tolerance_pp)
        lines.append(line)
        total += n
    lines.append(
        f"total: {total:,} requests in {plan.duration_s:g} s. 'needs': the time for ±"
        f"{tolerance_pp:g} pp, when a {2.5 * tolerance_pp:g} pp error fails (80 % power or more); "
        "'passes': when a true split passes (about 95 %)"
    )
    return lines
