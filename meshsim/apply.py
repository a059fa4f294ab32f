"""`kubectl apply` for Istio and Gateway API resources, through the shared Kubernetes client
stack.

Both `meshload mesh apply` and `Mesh.apply` go this way, so changing the embedded mesh takes
the same path as changing a cluster: the API validates, answers, and the control plane pushes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meshcore.errors import BackendError, ManifestError
from meshsim.resources import Manifests, Resource

# Classes before their gateways, subsets before the routes that name them, gateways and grants
# before the routes bound to them.
ORDER = {"GatewayClass": 0, "Gateway": 1, "ReferenceGrant": 1, "DestinationRule": 2}
ROUTES = 3  # VirtualService, HTTPRoute
SOURCE_ANNOTATION = "meshload.io/source"


def not_applied(manifests: Manifests, path: str | Path) -> list[str]:
    """A warning for each object read from `path` that `apply_resources` leaves out: kinds the
    embedded mesh stores but does not route by (`Manifests.unsimulated`)."""
    return [
        f"{o['kind']} {o['metadata']['namespace']}/{o['metadata']['name']}: not applied (only "
        f"the kinds the embedded mesh routes by are); `kubectl apply -f {path}` stores it"
        for o in manifests.unsimulated
    ]


def apply_resources(kubeconfig: str | Path, resources: Sequence[Resource]) -> tuple[list[str], int]:
    """Create or replace each resource; returns the API's warnings and the last resourceVersion.

    A refusal raises ManifestError naming the file, the resource and the field.
    """
    from meshcore.kube.client import ApiRefusal, MeshClient

    warnings: list[str] = []
    last_rv = 0
    with MeshClient.connect(kubeconfig) as client:
        for r in sorted(resources, key=lambda r: ORDER.get(r.kind, ROUTES)):
            body = r.to_object()
            meta = body["metadata"]
            meta.pop("resourceVersion", None)
            meta["annotations"] = {**(meta.get("annotations") or {}), SOURCE_ANNOTATION: r.source}
            try:
                rv, said = apply_object(client, body)
            except ApiRefusal as exc:
                raise _refusal(r, exc) from None
            except BackendError as exc:
                hint = "is the mesh running? start it with `meshload mesh up`"
                raise BackendError(f"{exc}; {hint}") from None
            warnings.extend(said)
            last_rv = max(last_rv, rv)
    return warnings, last_rv


def apply_object(client: Any, obj: Mapping[str, Any]) -> tuple[int, tuple[str, ...]]:
    """Create `obj`, or replace it when its spec, labels or annotations differ (an unchanged
    object is not written, as `kubectl apply` does); retried on 409. Returns the
    resourceVersion the object has and the API's warnings."""
    from meshcore.kube.client import ApiRefusal, retry_on_conflict
    from meshcore.kube.httproute import kind_key

    kind, meta = kind_key(obj), dict(obj["metadata"])
    ns, name = str(meta.get("namespace") or "default"), str(meta["name"])

    def write(attempt: int) -> tuple[int, tuple[str, ...]]:
        try:
            current = client.get(kind, ns, name)
        except ApiRefusal as exc:
            if exc.code != 404:
                raise
            fresh = {k: v for k, v in meta.items() if k != "resourceVersion"}
            data, warnings = client.create({**obj, "metadata": fresh})
        else:
            rv = current["metadata"]["resourceVersion"]
            if _same(current, obj):
                return int(rv), ()
            data, warnings = client.replace({**obj, "metadata": {**meta, "resourceVersion": rv}})
        return int(data["metadata"]["resourceVersion"]), warnings

    return retry_on_conflict(write, f"{obj['kind']} {ns}/{name}")


def _same(current: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
    mine, theirs = obj["metadata"], current.get("metadata") or {}
    return bool(
        current.get("spec") == obj.get("spec")
        and (theirs.get("labels") or {}) == (mine.get("labels") or {})
        and (theirs.get("annotations") or {}) == (mine.get("annotations") or {})
    )


def _refusal(r: Resource, exc: Any) -> ManifestError:
    """The API's 422 as the mesh's own one-line refusal (file, resource, field, problem)."""
    cause = ((exc.status.get("details") or {}).get("causes") or [{}])[0]
    message = str(cause.get("message") or exc.status.get("message") or exc)
    parts = message.split(": ", 3)
    if len(parts) == 4 and parts[1] == r.ref:  # the mesh's own line, already complete
        return ManifestError(*parts)
    return ManifestError(r.source, r.ref, str(cause.get("field") or "spec"), message)


def wait_applied(applied_file: Path, resource_version: int, timeout_s: float = 5.0) -> None:
    """Wait until every gateway replica serves a configuration at least this recent (the
    control plane's applied file, `meshsim.pusher`); the deadline grows by the largest push
    skew, and a replica that refused the configuration raises at once."""
    deadline = time.monotonic() + timeout_s
    skew_added = False
    while time.monotonic() < deadline:
        try:
            state = json.loads(applied_file.read_text())
            if int(state["resource_version"]) >= resource_version:
                return
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.001)
            continue
        replicas = state.get("replicas") or []
        for r in replicas:
            refused = r.get("refused") or {}
            if int(refused.get("resource_version") or 0) >= resource_version:
                raise BackendError(
                    f"gateway replica {r.get('pod')} refused resourceVersion "
                    f"{resource_version}: {refused.get('error')}"
                )
        if not skew_added:
            skew_added = True
            deadline += max((float(r.get("push_skew_ms") or 0) for r in replicas), default=0) / 1e3
        time.sleep(0.001)
    raise BackendError(
        f"the control plane did not push resourceVersion {resource_version} to every "
        f"gateway replica within {timeout_s:.0f} s; see the controlplane log"
    )
