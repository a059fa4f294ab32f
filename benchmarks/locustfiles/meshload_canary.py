"""The canary scenario as `scenarios/canary.py` runs it (harness, capture, traceparent,
rollout), with shoppers that never pause, so throughput measures meshload's own cost."""

from pathlib import Path

from locust import constant

from loadgen import harness, journeys
from loadgen.shape import RolloutShape

ROOT = Path(__file__).resolve().parents[2]
harness.install(
    scenario="bench",
    plan=ROOT / "scenarios" / "plans" / "canary.yaml",
    manifests=ROOT / "scenarios" / "manifests" / "canary.yaml",
)


class SaturatingShopper(journeys.OnlineBoutiqueUser):
    wait_time = constant(0)


class BenchShape(RolloutShape):
    pass
