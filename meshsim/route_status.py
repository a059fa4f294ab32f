"""The status a Gateway API controller writes back: each HTTPRoute's `status.parents`,
`status.conditions` (Accepted) of each GatewayClass Istio's controller runs, and each of its
Gateways' `addresses`, conditions (Accepted, Programmed) and `listeners` (attachedRoutes), so
`kubectl get gateways` shows ADDRESS and PROGRAMMED as on a cluster.

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

from meshsim.httproutes import CONTROLLER_NAME, GatewayStatus, RouteStatus
from meshsim.kubeapi.store import Store, now_rfc3339
from meshsim.resources import GATEWAY_API_GROUP

PLURAL = "httproutes"
CLASS_ACCEPTED = {"type": "Accepted", "status": "True", "reason": "Accepted"}
# The embedded gateway: every Gateway of Istio's classes is served by the one ingress gateway
# (`meshsim.cluster_objects`), at its address.
INGRESS_ADDRESS = "127.0.0.1"
INGRESS_SERVICE = "istio-ingressgateway.istio-system.svc.cluster.local"
HTTP_PROTOCOLS = ("HTTP", "HTTPS")


def write_route_status(
    store: Store, statuses: Iterable[RouteStatus], gateways: Iterable[GatewayStatus] = ()
) -> int:
    """Write every route's, Istio's classes' and their Gateways' status that changed; how
    many were written."""
    now = now_rfc3339()
    written = _write_class_status(store, now)
    for gw in gateways:
        written += _write_gateway_status(store, gw, now)
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


def _write_gateway_status(store: Store, st: GatewayStatus, now: str) -> int:
    gw = st.gateway
    key = (GATEWAY_API_GROUP, "gateways", gw.namespace, gw.name)
    live = store.get(*key)
    if live is None:
        return 0
    generation = int((live.get("metadata") or {}).get("generation") or 1)
    before = live.get("status") or {}

    def conditions(*given: tuple[str, bool, str, str], was: Any = None) -> list[dict[str, Any]]:
        new = [
            {"type": t, "status": "True" if ok else "False", "reason": reason, "message": message,
             "observedGeneration": generation}
            for t, ok, reason, message in given
        ]  # fmt: skip
        return _timed({"conditions": new}, was, now)["conditions"]

    old_listeners = {str(lst.get("name")): lst for lst in before.get("listeners") or []}
    listeners = []
    for lst in gw.spec.get("listeners") or []:
        name = str(lst.get("name"))
        http = lst.get("protocol") in HTTP_PROTOCOLS
        why = "No errors found" if http else "the embedded mesh serves HTTP listeners only"
        listeners.append({
            "name": name,
            "attachedRoutes": st.attached.get(name, 0),
            "supportedKinds": [{"group": GATEWAY_API_GROUP, "kind": "HTTPRoute"}] if http else [],
            "conditions": conditions(
                ("Accepted", http, "Accepted" if http else "UnsupportedProtocol", why),
                ("Programmed", http, "Programmed" if http else "Invalid", why),
                ("ResolvedRefs", True, "ResolvedRefs", "No errors found"),
                was=old_listeners.get(name),
            ),
        })  # fmt: skip
    programmed = f"Resource programmed, assigned to service(s) {INGRESS_SERVICE}:80"
    status = {
        "addresses": [{"type": "IPAddress", "value": INGRESS_ADDRESS}],
        "conditions": conditions(
            ("Accepted", True, "Accepted", "Resource accepted"),
            ("Programmed", True, "Programmed", programmed),
            was=before,
        ),
        "listeners": listeners,
    }
    return int(store.set_status(key, status))


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
