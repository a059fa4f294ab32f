"""`kubectl apply` for Istio resources, through the official kubernetes client.

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

PLURALS = {
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "Gateway": "gateways",
}
# Subsets before the routes that name them, gateways before the routes bound to them.
ORDER = {"Gateway": 0, "DestinationRule": 1, "VirtualService": 2}
SOURCE_ANNOTATION = "meshload.io/source"


def _api(kubeconfig: str | Path) -> Any:
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    return client.CustomObjectsApi(api_client)


def apply_resources(kubeconfig: str | Path, resources: Sequence[Resource]) -> tuple[list[str], int]:
    """Create or replace each resource; returns the API's warnings and the last resourceVersion.

    A refusal raises ManifestError naming the file, the resource and the field.
    """
    from kubernetes.client.exceptions import ApiException

    api = _api(kubeconfig)
    warnings: list[str] = []
    last_rv = 0
    for r in sorted(resources, key=lambda r: ORDER[r.kind]):
        group, _, version = r.api_version.rpartition("/")
        body = r.to_object()
        meta = body["metadata"]
        meta.pop("resourceVersion", None)
        meta.setdefault("annotations", {})[SOURCE_ANNOTATION] = r.source
        args = (group, version, r.namespace, PLURALS[r.kind])
        for _ in range(5):  # a concurrent writer makes our resourceVersion stale: read again
            try:
                try:
                    current = api.get_namespaced_custom_object(*args, r.name)
                    meta["resourceVersion"] = current["metadata"]["resourceVersion"]
                    if _same(current, body):  # as kubectl apply: nothing to change, no write
                        last_rv = max(last_rv, int(meta["resourceVersion"]))
                        break
                    data, _, headers = api.replace_namespaced_custom_object_with_http_info(
                        *args, r.name, body
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    meta.pop("resourceVersion", None)
                    data, _, headers = api.create_namespaced_custom_object_with_http_info(
                        *args, body
                    )
            except ApiException as exc:
                if exc.status == 409:
                    continue
                raise _refusal(r, exc) from None
            except OSError as exc:
                raise BackendError(
                    f"the Kubernetes API is unreachable ({exc}); is the mesh "
                    "running? start it with `meshload mesh up`"
                ) from None
            warnings.extend(_warnings(headers))
            last_rv = max(last_rv, int(data["metadata"]["resourceVersion"]))
            break
        else:
            raise BackendError(f"{r.ref}: kept conflicting with another writer; try again")
    return warnings, last_rv


def _same(current: dict[str, Any], body: dict[str, Any]) -> bool:
    mine, theirs = body["metadata"], current.get("metadata") or {}
    return bool(
        current.get("spec") == body["spec"]
        and (theirs.get("labels") or {}) == (mine.get("labels") or {})
        and (theirs.get("annotations") or {}) == (mine.get("annotations") or {})
    )


def _refusal(r: Resource, exc: Any) -> Exception:
    try:
        status = json.loads(exc.body or "{}")
    except ValueError:
        status = {}
    if exc.status == 422:
        cause = ((status.get("details") or {}).get("causes") or [{}])[0]
        message = str(cause.get("message") or status.get("message") or exc.reason)
        parts = message.split(": ", 3)
        if len(parts) == 4 and parts[1] == r.ref:  # the mesh's own line, already complete
            return ManifestError(*parts)
        return ManifestError(r.source, r.ref, str(cause.get("field") or "spec"), message)
    message = status.get("message") or exc.reason
    return BackendError(f"{r.ref}: the Kubernetes API answered {exc.status}: {message}")


def _warnings(headers: Any) -> list[str]:
    """The texts of `Warning: 299 - "..."` headers."""
    out = []
    for value in (
        headers.get_all("Warning")
        if hasattr(headers, "get_all")
        else [headers.get("Warning")]
        if headers.get("Warning")
        else []
    ):
        text = value.split(" ", 2)[-1].strip()
        out.append(text[1:-1] if text.startswith('"') and text.endswith('"') else text)
    return out


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
