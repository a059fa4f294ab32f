"""Canary rollout on a Gateway API HTTPRoute: `locust -f scenarios/canary_gateway_api.py`.

Moves the HTTPRoute `frontend` from the `frontend-v1` Service to `frontend-v2` along
scenarios/plans/gateway-api.yaml (80 s; the run ends by itself), on the embedded mesh serving
scenarios/manifests/gateway-api.yaml unless --host points at a cluster's gateway. Everything
else is the canary scenario's (scenarios/canary.py).
"""

from pathlib import Path

from loadgen import harness
from loadgen.journeys import OnlineBoutiqueUser
from loadgen.shape import RolloutShape

HERE = Path(__file__).resolve().parent

harness.install(
    scenario="canary-gateway-api",
    plan=HERE / "plans" / "gateway-api.yaml",
    manifests=HERE / "manifests" / "gateway-api.yaml",
)

__all__ = ["CanaryShape", "OnlineBoutiqueUser"]


class CanaryShape(RolloutShape):
    """Users per step of the plan; ends the test when the plan ends."""
