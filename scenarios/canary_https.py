"""Canary rollout over HTTPS: `locust -f scenarios/canary_https.py --headless`.

The canary scenario's plan (scenarios/plans/canary.yaml) and journeys, on a Gateway that
terminates TLS (scenarios/manifests/canary-https.yaml: `tls.mode: SIMPLE`, `credentialName`).
On the embedded mesh meshload drives its HTTPS address and verifies it with the mesh's own CA;
against a cluster give `--host https://...` and `--ca-bundle` (or `--insecure`). The report's
transport section shows what the clients negotiated and Istio's `connection_security_policy`
per hop.
"""

from loadgen import harness
from loadgen.journeys import OnlineBoutiqueUser
from loadgen.shape import RolloutShape

harness.install(__file__, plan="plans/canary.yaml", manifests="manifests/canary-https.yaml")

__all__ = ["OnlineBoutiqueUser", "RolloutShape"]
