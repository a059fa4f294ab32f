"""Walking a rollout plan on the master: set each step's weights on time and log the change.

The rollout runs in its own greenlet rather than in `LoadTestShape.tick`, which Locust calls
about once a second and blocks while users ramp up; steps then start on their schedule. The
shape (`loadgen.shape`) only reads `users()` and `done` from here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from loadgen.plan import Plan
from loadgen.steps import StepClock
from meshcore.errors import MeshloadError

if TYPE_CHECKING:
    from meshcore.kube.client import WeightChange

log = logging.getLogger(__name__)


class WeightSetter(Protocol):
    """What a rollout moves: one route (`meshcore.kube.client.RouteWeights` in production)."""

    target: str  # how messages name it: "VirtualService default/frontend route primary"

    def set_weights(self, weights: Mapping[str, int]) -> WeightChange: ...


Sleep = Callable[[float], Any]


@dataclass(kw_only=True)
class Rollout:
    """One pass through a plan: step 0 at `begin()`, the others from `run()` (a greenlet)."""

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
        k = self.step if step is None else step
        s = self.plan.steps[min(max(k, 0), len(self.plan.steps) - 1)]
        if s.users is not None:
            return s.users
        return self.plan.users if self.plan.users is not None else self.default_users

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
            applied = self.setter.set_weights(weights)
        except MeshloadError as e:
            # The run goes on: the records show what the mesh really did, and the event says why.
            log.error("step %d: weight change failed: %s", k, e)
            event.update(kind="error", error=str(e), requested_ns=time.time_ns())
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
