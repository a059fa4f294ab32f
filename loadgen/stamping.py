"""A run's stamps (`meshcore.stamps`): switched on for the route the plan moves, told in
run.json, removed at the end, and the gateway replicas they name mapped back to their pods.

    "stamps": {"token", "route", "version_header", "version_header_added", "replica"}
    "stamping": null | "off (--no-stamp)" | "refused: <the API's reason>" | "not removed: ..."
    "replica_pods": {replica_id: pod name}   (from the Kubernetes API at the end)
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from meshcore.errors import MeshloadError
from meshcore.kube.client import Stamping
from meshcore.stamps import replica_id, run_token

log = logging.getLogger("meshload")

GATEWAY_NAMESPACE = "istio-system"
GATEWAY_SELECTOR = "istio=ingressgateway"


def switch_on(setter: Any, settings: Any, run_id: str) -> dict[str, Any]:
    """Give the setter (a RouteWeights) this run's stamping; run.json's keys saying so."""
    if settings.no_stamp or not hasattr(setter, "stamping"):
        return {"stamps": None, "stamping": "off (--no-stamp)" if settings.no_stamp else "off"}
    setter.stamping = Stamping(
        run_token(run_id), settings.version_header, replica=not settings.no_replica_stamp
    )
    return {"stamps": described(setter), "stamping": None}


def described(setter: Any) -> dict[str, Any] | None:
    """run.json's `stamps` as the setter has them now (None once the API refused them)."""
    s = getattr(setter, "stamping", None)
    if s is None or getattr(setter, "refused", None):
        return None
    return {
        "token": s.token,
        "route": getattr(setter, "twin", None),
        "version_header": s.version_header,
        "version_header_added": list(getattr(setter, "stamped", [])),
        "replica": s.replica,
    }


def after_change(info: dict[str, Any], setter: Any) -> None:
    """Keep run.json's stamp keys true after a weight change (the API may have refused)."""
    if info.get("stamps") is None:
        return
    refused = getattr(setter, "refused", None)
    if refused:
        info["stamps"], info["stamping"] = None, f"refused: {refused}"
    else:
        info["stamps"] = described(setter)


def switch_off(info: dict[str, Any], setter: Any) -> None:
    """Remove the twin route: the VirtualService or HTTPRoute as the user wrote it (weights
    aside)."""
    if info.get("stamps") is None:
        return
    try:
        setter.unstamp()
        info["stamps"]["removed"] = True
    except MeshloadError as e:
        what = f"the stamp route {info['stamps']['route']} is still in {setter.target}"
        info["stamping"] = f"not removed: {e}"
        kind = str(getattr(setter, "kind", "VirtualService")).lower()
        sys.stderr.write(f"meshload: {what} ({e}); remove it with `kubectl edit {kind}`\n")


def replica_pods(kube: Any) -> Mapping[str, str]:
    """{replica_id: pod} of the ingress gateway's pods; {} when the API does not tell."""
    if kube is None:
        return {}
    try:
        found = kube.call(
            "ingress gateway pods",
            "list",
            kube.core.list_namespaced_pod,
            GATEWAY_NAMESPACE,
            label_selector=GATEWAY_SELECTOR,
            _preload_content=False,
        )
    except MeshloadError as e:
        log.info("gateway replicas not mapped to pods: %s", e)
        return {}
    names = [str((p.get("metadata") or {}).get("name")) for p in (found or {}).get("items") or []]
    return {rid: name for name in names if (rid := replica_id(name)) is not None}
