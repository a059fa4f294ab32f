"""Canary rollout of the Online Boutique frontend: `locust -f scenarios/canary.py --headless`.

Moves the VirtualService `frontend` from v1 to v2 along scenarios/plans/canary.yaml (about two
minutes; the run ends by itself), records every request into results/<run-id>/, and, with no
--host, runs everything on the embedded mesh. meshload's options (--plan, --mesh,
--results-dir, ...) are listed in loadgen/options.py and the README.
"""

from loadgen import harness
from loadgen.journeys import OnlineBoutiqueUser
from loadgen.shape import RolloutShape

harness.install(__file__, plan="plans/canary.yaml", manifests="manifests/canary.yaml")

__all__ = ["OnlineBoutiqueUser", "RolloutShape"]
