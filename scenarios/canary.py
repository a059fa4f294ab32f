"""Canary rollout of the Online Boutique frontend: `locust -f scenarios/canary.py --headless`.

Moves the VirtualService `frontend` from v1 to v2 along scenarios/plans/canary.yaml (about two
minutes; the run ends by itself), records every request into results/<run-id>/, and, with no
--host, runs everything on the embedded mesh. meshload's options (--plan, --mesh,
--results-dir, ...) are listed in loadgen/options.py and the README.
"""

from pathlib import Path

from loadgen import harness
from loadgen.journeys import OnlineBoutiqueUser
from loadgen.shape import RolloutShape

HERE = Path(__file__).resolve().parent

harness.install(
    scenario="canary",
    plan=HERE / "plans" / "canary.yaml",
    manifests=HERE / "manifests" / "canary.yaml",
)

__all__ = ["CanaryShape", "OnlineBoutiqueUser"]


class CanaryShape(RolloutShape):
    """Users per step of the plan; ends the test when the plan ends."""
