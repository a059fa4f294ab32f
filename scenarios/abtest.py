"""A/B test: a `beta` cohort reaches v2 by header, everyone else stays on v1.

`locust -f scenarios/abtest.py --headless`. One shopper in four sends `x-cohort: beta`, which
the VirtualService in scenarios/manifests/abtest.yaml routes to v2. Every record carries its
cohort; at the end the run checks that only the beta cohort reached v2 (and that it did), and
exits with code 3 otherwise.
"""

from loadgen import harness
from loadgen.checks import cohort_only
from loadgen.journeys import BoutiqueUser
from loadgen.shape import RolloutShape

harness.install(
    __file__,
    plan="plans/abtest.yaml",
    manifests="manifests/abtest.yaml",
    checks=[cohort_only("beta", "v2")],
)

__all__ = ["BetaShopper", "RegularShopper", "RolloutShape"]


class BetaShopper(BoutiqueUser):
    weight = 1
    cohort = "beta"
    default_headers = {"x-cohort": "beta"}


class RegularShopper(BoutiqueUser):
    weight = 3
    cohort = "regular"
