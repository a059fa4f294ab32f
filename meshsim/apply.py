"""`kubectl apply` for Istio resources, through the shared Kubernetes client stack.

Both `meshload mesh apply` and `Mesh.apply` go this way, so changing the embedded mesh takes
the same path as changing a cluster: the API validates, answers, and the control plane pushes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshcore.errors import BackendError, ManifestError
from meshsim.resources import Resource

# Subsets before the routes that name them, gateways before the routes bound to them.
ORDER = {"Gateway": 0, "DestinationRule": 1, "VirtualService": 2}
SOURCE_ANNOTATION = "meshload.io/source"


def apply_resources(kubeconfig: str | Path, resources: Sequence[Resource]) -> tuple[list[str], int]:
    """Create or replace each resource; returns the API's warnings and the last resourceVersion.

    A refusal raises ManifestError naming the file, the resource and the field.
    """
    from meshcore.kube.client import ApiRefusal, MeshClient

    warnings: list[str] = []
    last_rv = 0
    with MeshClient.connect(kubeconfig) as client:
        for r in sorted(resources, key=lambda r: ORDER[r.kind]):
            body = r.to_object()
            meta = body["metadata"]
            meta.pop("resourceVersion", None)
            meta["annotations"] = {**(meta.get("annotations") or {}), SOURCE_ANNOTATION: r.source}
            try:
                rv, said = client.apply(body)
            except ApiRefusal as exc:
                raise _refusal(r, exc) from None
            except BackendError as exc:
                hint = "is the mesh running? start it with `meshload mesh up`"
                raise BackendError(f"{exc}; {hint}") from None
            warnings.extend(said)
            last_rv = max(last_rv, rv)
    return warnings, last_rv


def _refusal(r: Resource, exc: Any) -> ManifestError:
    """The API's 422 as the mesh's own one-line refusal (file, resource, field, problem)."""
    cause = ((exc.status.get("details") or {}).get("causes") or [{}])[0]
    message = str(cause.get("message") or exc.status.get("message") or exc)
    parts = message.split(": ", 3)
    if len(parts) == 4 and parts[1] == r.ref:  # the mesh's own line, already complete
        return ManifestError(*parts)
    return ManifestError(r.source, r.ref, str(cause.get("field") or "spec"), message)


def wait_applied(applied_file: Path, resource_version: int, timeout_s: float = 5.0) -> None:
    """Wait until the control plane has pushed a configuration at least this recent."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if json.loads(applied_file.read_text())["resource_version"] >= resource_version:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.001)
    raise BackendError(
        f"the control plane did not push resourceVersion {resource_version} to "
        f"Envoy within {timeout_s:.0f} s; see the controlplane log"
    )
