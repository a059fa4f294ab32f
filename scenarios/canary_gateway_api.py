"""Canary rollout on a Gateway API HTTPRoute: `locust -f scenarios/canary_gateway_api.py`.

Moves the HTTPRoute `frontend` from the `frontend-v1` Service to `frontend-v2` along
scenarios/plans/gateway-api.yaml (80 s; the run ends by itself), on the embedded mesh serving
scenarios/manifests/gateway-api.yaml unless --host points at a cluster's gateway. Everything
else is the canary scenario's (scenarios/canary.py).
"""

from loadgen import harness
from loadgen.journeys import OnlineBoutiqueUser
from loadgen.shape import RolloutShape

harness.install(__file__, plan="plans/gateway-api.yaml", manifests="manifests/gateway-api.yaml")

__all__ = ["OnlineBoutiqueUser", "RolloutShape"]
