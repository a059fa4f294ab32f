"""Sticky canary: each new shopper is split 80/20 and then kept on its version by a cookie.

`locust -f scenarios/sticky.py --headless`. scenarios/manifests/sticky.yaml routes a request
carrying `canary=v1|v2` to that version, and the weighted route sets the cookie. Every record
carries its user; at the end the run counts users that saw more than one version (recorded in
run.json; any such user makes the exit code 3).
"""

from loadgen import harness
from loadgen.checks import sticky_users
from loadgen.journeys import OnlineBoutiqueUser
from loadgen.shape import RolloutShape

harness.install(
    __file__, plan="plans/sticky.yaml", manifests="manifests/sticky.yaml", checks=[sticky_users]
)

__all__ = ["OnlineBoutiqueUser", "RolloutShape"]
