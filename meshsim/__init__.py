"""The embedded mesh: a real Envoy gateway programmed from Istio manifests, in front of a
simulated Online Boutique.

Names are imported on first use, so the mesh's child processes (`python -m meshsim.boutique`,
`meshsim.tracestore`, `meshsim.controld`) start without loading the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshsim.mesh import Mesh as Mesh
    from meshsim.resources import Resource as Resource
    from meshsim.resources import load_manifests as load_manifests
    from meshsim.spec import MeshSpec as MeshSpec
    from meshsim.spec import Workload as Workload
    from meshsim.spec import load_spec as load_spec
    from meshsim.translate import Snapshot as Snapshot
    from meshsim.translate import build_snapshot as build_snapshot

_WHERE = {
    "Mesh": "meshsim.mesh",
    "MeshSpec": "meshsim.spec",
    "Resource": "meshsim.resources",
    "Snapshot": "meshsim.translate",
    "Workload": "meshsim.spec",
    "build_snapshot": "meshsim.translate",
    "load_manifests": "meshsim.resources",
    "load_spec": "meshsim.spec",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'meshsim' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
