"""The LoadTestShape a scenario declares: users per rollout step, and the end of the run.

Locust calls `tick()` on the master (or the local runner) only. The rollout itself (weights,
timing) lives in `loadgen.conductor`; the shape reads it through the harness, so a locustfile
needs no more than to import it: `from loadgen.shape import RolloutShape` is the run's shape
(Locust takes any concrete LoadTestShape among a locustfile's names; do not subclass it as
well, or Locust would find two).
"""

from __future__ import annotations

from typing import ClassVar

from locust import LoadTestShape

from loadgen import harness


class RolloutShape(LoadTestShape):
    """Users of the current step; None (end of test) once the plan has run to its end."""

    abstract: ClassVar[bool] = False  # importing it into a locustfile makes it the shape
    # The plan (or -u / -r given at start) sets the users; the web UI's fields would not apply.
    use_common_options: ClassVar[bool] = False

    def tick(self) -> tuple[int, float] | None:
        h = harness.current()
        if h is None:
            return None
        rollout = h.rollout
        if rollout is None:
            # Before test_start: the first step's users start it (Locust fires test_start then).
            users = h.first_step_users()
            return (users, h.spawn_rate(users))
        if rollout.done or h.ending():
            h.plan_finished()
            return None
        users = h.users_now()
        return (users, h.spawn_rate(users))
