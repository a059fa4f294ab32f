"""The status a Gateway API controller writes back: each HTTPRoute's `status.parents`, and
`status.conditions` (Accepted) of each GatewayClass Istio's controller runs.

The control plane computes it with every translation (`meshsim.httproutes`: Accepted and
ResolvedRefs per parent, with reason, message and observedGeneration) and writes it through
the API's status subresource once a gateway replica serves the set, as Istio's controller
writes status after programming the proxies: `kubectl get httproute -o yaml` shows why a route
is not accepted, and a watch sees the update. A condition's `lastTransitionTime` moves only
when its status does. A status computed for an older generation than the stored object's is
not written (a newer set is on its way and will say).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from meshsim.httproutes import CONTROLLER_NAME, RouteStatus
from meshsim.kubeapi.store import Store, now_rfc3339
from meshsim.resources import GATEWAY_API_GROUP

PLURAL = "httproutes"
CLASS_ACCEPTED = {"type": "Accepted", "status": "True", "reason": "Accepted"}


def write_route_status(store: Store, statuses: Iterable[RouteStatus]) -> int:
    """Write every route's and Istio's classes' status that changed; how many were written."""
    now = now_rfc3339()
    written = _write_class_status(store, now)
    for st in statuses:
        key = (GATEWAY_API_GROUP, PLURAL, st.route.namespace, st.route.name)
        live = store.get(*key)
        if live is None or not _current(st, live):
            continue
        old = {_parent_key(p): p for p in (live.get("status") or {}).get("parents") or []}
        parents = [_timed(p, old.get(_parent_key(p)), now) for p in st.parents]
        written += store.set_status(key, {"parents": parents})
    return written


def _write_class_status(store: Store, now: str) -> int:
    """Accepted, as Istio's controller says of each GatewayClass naming it (another
    controller's classes are left to it)."""
    written = 0
    for live in store.list_objects(GATEWAY_API_GROUP, "gatewayclasses", ""):
        if (live.get("spec") or {}).get("controllerName") != CONTROLLER_NAME:
            continue
        meta = live["metadata"]
        accepted = {
            **CLASS_ACCEPTED,
            "message": "Handled by Istio controller",
            "observedGeneration": int(meta.get("generation") or 1),
        }
        before = {"conditions": (live.get("status") or {}).get("conditions") or []}
        conditions = _timed({"conditions": [accepted]}, before, now)["conditions"]
        key = (GATEWAY_API_GROUP, "gatewayclasses", "", meta["name"])
        written += store.set_status(key, {**(live.get("status") or {}), "conditions": conditions})
    return written


def _current(st: RouteStatus, live: Mapping[str, Any]) -> bool:
    generation = int((live.get("metadata") or {}).get("generation") or 0)
    seen = {c.get("observedGeneration") for p in st.parents for c in p.get("conditions") or []}
    return not seen or seen == {generation}


def _parent_key(parent: Mapping[str, Any]) -> tuple[str, ...]:
    ref = parent.get("parentRef") or {}
    fields = ("group", "kind", "namespace", "name", "sectionName", "port")
    return (str(parent.get("controllerName")), *(str(ref.get(f)) for f in fields))


def _timed(parent: Mapping[str, Any], before: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    was = {c.get("type"): c for c in (before or {}).get("conditions") or []}
    conditions = []
    for c in parent.get("conditions") or []:
        prev = was.get(c.get("type"))
        same = prev is not None and prev.get("status") == c.get("status")
        since = prev.get("lastTransitionTime") if same and prev else now
        conditions.append({**c, "lastTransitionTime": since})
    return {**parent, "conditions": conditions}
