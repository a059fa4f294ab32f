"""Baseline: the same journeys with no weight change (v1 only), `locust -f scenarios/baseline.py`.

Records a reference run folder (scenarios/plans/baseline.yaml, one minute) that canary runs can
be compared with; step 0 still records the weights it starts from.
"""

from pathlib import Path

from loadgen import harness
from loadgen.journeys import OnlineBoutiqueUser
from loadgen.shape import RolloutShape

HERE = Path(__file__).resolve().parent

harness.install(
    scenario="baseline",
    plan=HERE / "plans" / "baseline.yaml",
    manifests=HERE / "manifests" / "canary.yaml",
)

__all__ = ["BaselineShape", "OnlineBoutiqueUser"]


class BaselineShape(RolloutShape):
    """Users of the plan's single step; ends the test when it ends."""
