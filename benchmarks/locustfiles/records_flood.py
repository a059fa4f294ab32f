"""Users that only fire Locust's `request` event, as fast as they can, through meshload's
harness: every event becomes a record that the workers send to the master, so the run
measures the record pipeline (capture -> Locust's messages -> the master's run folder), not
HTTP."""

import time

import gevent
from locust import User, constant, task

from loadgen import harness
from loadgen.shape import RolloutShape

PLAN, MANIFESTS = "../../scenarios/plans/canary.yaml", "../../scenarios/manifests/canary.yaml"
harness.install(__file__, scenario="bench-intake", plan=PLAN, manifests=MANIFESTS)
BURST = 200
__all__ = ["Flood", "RolloutShape"]


class Flood(User):
    wait_time = constant(0)

    @task
    def fire(self) -> None:
        fire = self.environment.events.request.fire
        for _ in range(BURST):
            fire(
                request_type="GET",
                name="/flood",
                response_time=1.0,
                response_length=0,
                response=None,
                context={},
                exception=None,
                start_time=time.time(),
            )
        gevent.sleep(0)
