"""What runs during a load test: rollout plans, per-request capture, the run folder writer and the
mesh client that moves VirtualService weights.

Nothing here imports Locust (importing it monkey-patches the process with gevent); scenarios
import `loadgen.harness`, `loadgen.journeys` and `loadgen.shape` by module path after Locust.
Names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadgen.capture import RequestCapture as RequestCapture
    from loadgen.meshclient import InMemoryMeshClient as InMemoryMeshClient
    from loadgen.meshclient import MeshApi as MeshApi
    from loadgen.meshclient import MeshClient as MeshClient
    from loadgen.meshclient import WeightChange as WeightChange
    from loadgen.options import OPTIONS as OPTIONS
    from loadgen.options import Settings as Settings
    from loadgen.plan import Plan as Plan
    from loadgen.plan import Step as Step
    from loadgen.plan import load_plan as load_plan
    from loadgen.plan import parse_plan as parse_plan
    from loadgen.runfolder import RunFolder as RunFolder
    from loadgen.runfolder import new_run_id as new_run_id
    from loadgen.steps import StepClock as StepClock
    from loadgen.traceparent import new_trace as new_trace
    from loadgen.traceparent import parse_traceparent as parse_traceparent

_WHERE = {
    "InMemoryMeshClient": "loadgen.meshclient",
    "MeshApi": "loadgen.meshclient",
    "MeshClient": "loadgen.meshclient",
    "OPTIONS": "loadgen.options",
    "Plan": "loadgen.plan",
    "RequestCapture": "loadgen.capture",
    "RunFolder": "loadgen.runfolder",
    "Settings": "loadgen.options",
    "Step": "loadgen.plan",
    "StepClock": "loadgen.steps",
    "WeightChange": "loadgen.meshclient",
    "load_plan": "loadgen.plan",
    "new_run_id": "loadgen.runfolder",
    "new_trace": "loadgen.traceparent",
    "parse_plan": "loadgen.plan",
    "parse_traceparent": "loadgen.traceparent",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'loadgen' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
