"""What runs during a load test: rollout plans, settings, the step clock and per-request capture.

Nothing here imports Locust (importing it monkey-patches the process with gevent); scenarios
import `loadgen.harness`, `loadgen.journeys` and `loadgen.shape` by module path, after Locust.
The run folder, the schemas and the Kubernetes client are `meshcore`'s.
"""

from loadgen.capture import RequestCapture
from loadgen.options import OPTIONS, Settings
from loadgen.plan import Plan, Step, load_plan, parse_plan
from loadgen.steps import StepClock

__all__ = [
    "OPTIONS",
    "Plan",
    "RequestCapture",
    "Settings",
    "Step",
    "StepClock",
    "load_plan",
    "parse_plan",
]
