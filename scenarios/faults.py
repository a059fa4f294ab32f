"""A faulty canary: roll out a v2 that fails 5 % of its requests and answers about 4x slower.

`locust -f scenarios/faults.py --headless`. On the embedded mesh the faults come from
scenarios/manifests/faults-spec.yaml (frontend v2's profile); the routing is the canary's.
Pair it with live gates to see a rollback, e.g. `--gate-error-rate 0.02 --gate-window-s 10`.
On a cluster, point --host at a gateway whose v2 misbehaves.
"""

from loadgen import harness
from loadgen.journeys import OnlineBoutiqueUser
from loadgen.shape import RolloutShape

harness.install(
    __file__,
    plan="plans/faults.yaml",
    manifests="manifests/canary.yaml",
    spec="manifests/faults-spec.yaml",
)

__all__ = ["OnlineBoutiqueUser", "RolloutShape"]
