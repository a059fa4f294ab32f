"""The canary scenario as `scenarios/canary.py` runs it (harness, capture, traceparent,
rollout), with shoppers that never pause, so throughput measures meshload's own cost."""

from locust import constant

from loadgen import harness, journeys
from loadgen.shape import RolloutShape

PLAN, MANIFESTS = "../../scenarios/plans/canary.yaml", "../../scenarios/manifests/canary.yaml"
harness.install(__file__, scenario="bench", plan=PLAN, manifests=MANIFESTS)
__all__ = ["RolloutShape", "SaturatingShopper"]


class SaturatingShopper(journeys.OnlineBoutiqueUser):
    wait_time = constant(0)
