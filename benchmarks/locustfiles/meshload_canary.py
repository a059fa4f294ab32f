"""The canary scenario as `scenarios/canary.py` runs it (harness, capture, traceparent,
rollout), with shoppers that never pause, so throughput measures meshload's own cost."""

from locust import constant

from loadgen import harness, journeys
from loadgen.shape import RolloutShape

harness.install(
    __file__,
    scenario="bench",
    plan="../../scenarios/plans/canary.yaml",
    manifests="../../scenarios/manifests/canary.yaml",
)
__all__ = ["RolloutShape", "SaturatingShopper"]


class SaturatingShopper(journeys.OnlineBoutiqueUser):
    wait_time = constant(0)
