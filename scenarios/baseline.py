"""Baseline: the same journeys with no weight change (v1 only), `locust -f scenarios/baseline.py`.

Records a reference run folder (scenarios/plans/baseline.yaml, one minute) that canary runs can
be compared with; step 0 still records the weights it starts from.
"""

from loadgen import harness
from loadgen.journeys import OnlineBoutiqueUser
from loadgen.shape import RolloutShape

harness.install(__file__, plan="plans/baseline.yaml", manifests="manifests/canary.yaml")

__all__ = ["OnlineBoutiqueUser", "RolloutShape"]
