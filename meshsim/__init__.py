"""The embedded mesh: a real Envoy gateway programmed from Istio manifests, in front of a
simulated Online Boutique, with its control plane, trace store and metrics.

`Mesh` wires it together; its servers run as child processes (`python -m meshsim.boutique`,
`meshsim.tracestore`, `meshsim.controld`, `meshsim.telemetry.scrape`).
"""

from meshsim.mesh import Mesh
from meshsim.resources import Resource, load_manifests
from meshsim.spec import MeshSpec, Workload, load_spec
from meshsim.translate import Snapshot, build_snapshot

__all__ = [
    "Mesh",
    "MeshSpec",
    "Resource",
    "Snapshot",
    "Workload",
    "build_snapshot",
    "load_manifests",
    "load_spec",
]
