"""Gateway API HTTPRoutes bound to Gateways of Istio's classes -> Envoy virtual hosts, and the
status a controller writes back for each route.

Istio's classes are `istio` (which Istio creates itself: `istio_gateway_class`) and every
GatewayClass whose `controllerName` is Istio's; a Gateway of another class is another
controller's, and a route attached to it only is not served.

A route attaches to a listener of each Gateway its parentRefs name (sectionName and port narrow
the listeners; `allowedRoutes.namespaces` Same or All decides whether a route of another
namespace may attach). Its hostnames meet the listener's (the more specific one wins; none
means every host); every rule match becomes an Envoy route on that host's virtual host, the
matches of all routes of one host ordered by the Gateway API's precedence (`precedence`), then
the oldest route (creationTimestamp), then namespace/name, then rule and match order. Every
parent gets `Accepted` and `ResolvedRefs` conditions with the reasons the Gateway API defines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from meshcore.kube.istio import service_fqdn
from meshsim.hosts import Endpoint, cluster_name, select
from meshsim.httpfilters import RuleTranslator, precedence
from meshsim.resources import GATEWAY_API_GROUP, Resource

CONTROLLER_NAME = "istio.io/gateway-controller"
GATEWAY_CLASS = "istio"


@dataclass
class RouteStatus:
    """What the controller says of one HTTPRoute: `status.parents`, without timestamps."""

    route: Resource
    parents: list[dict[str, Any]]


@dataclass
class GatewayStatus:
    """What the controller says of one Gateway of Istio's classes: the routes attached to each
    of its listeners (by listener name)."""

    gateway: Resource
    attached: dict[str, int]


@dataclass
class HttpRoutes:
    virtual_hosts: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[RouteStatus] = field(default_factory=list)
    gateways: list[GatewayStatus] = field(default_factory=list)


def _condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


def _host_meet(listener: str | None, route: str) -> str | None:
    """The hostname a route hostname and a listener hostname both match, or None."""
    if not listener or listener == route:
        return route
    if listener.startswith("*.") and route.endswith(listener[1:]):
        return route
    if route.startswith("*.") and listener.endswith(route[1:]):
        return listener
    return None


def istio_gateway_class() -> dict[str, Any]:
    """The GatewayClass Istio creates for its own Gateways, as a cluster with Istio holds it."""
    return {
        "apiVersion": f"{GATEWAY_API_GROUP}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": GATEWAY_CLASS},
        "spec": {
            "controllerName": CONTROLLER_NAME,
            "description": "The default Istio GatewayClass",
        },
    }


def with_istio_class(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects, with Istio's own GatewayClass first unless they define one named `istio`."""
    mine = any(
        o.get("kind") == "GatewayClass" and (o.get("metadata") or {}).get("name") == GATEWAY_CLASS
        for o in objects
    )
    return objects if mine else [istio_gateway_class(), *objects]


def istio_classes(resources: Sequence[Resource]) -> set[str]:
    """The GatewayClasses Istio's controller runs: `istio`, and every class naming it."""
    return {GATEWAY_CLASS} | {
        r.name
        for r in resources
        if r.kind == "GatewayClass" and r.spec.get("controllerName") == CONTROLLER_NAME
    }


class _Binder:
    def __init__(self, resources: Sequence[Resource], endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = endpoints
        self.classes = istio_classes(resources)
        self.gateways = {
            (r.namespace, r.name): r
            for r in resources
            if r.kind == "Gateway" and r.spec.get("gatewayClassName") in self.classes
        }
        self.grants = [r for r in resources if r.kind == "ReferenceGrant"]
        self.attached = {
            key: {str(lst.get("name")): 0 for lst in gw.spec.get("listeners") or []}
            for key, gw in self.gateways.items()
        }

    def hostnames(self, route: Resource, ref: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        """The hostnames the route serves through one parentRef, and its Accepted condition."""
        kind = (ref.get("group", GATEWAY_API_GROUP), ref.get("kind", "Gateway"))
        ns = str(ref.get("namespace", route.namespace))
        gw = self.gateways.get((ns, str(ref.get("name")))) if kind[1] == "Gateway" else None
        if kind[0] != GATEWAY_API_GROUP or gw is None:
            classes = ", ".join(sorted(self.classes))
            why = f"no Gateway {ns}/{ref.get('name')} of a class Istio runs ({classes})"
            return [], _condition("Accepted", False, "NoMatchingParent", why)
        listeners = [
            lst
            for lst in gw.spec.get("listeners") or []
            if ref.get("sectionName") in (None, lst.get("name"))
            and ref.get("port") in (None, lst.get("port"))
            and lst.get("protocol") in ("HTTP", "HTTPS")
        ]
        if not listeners:
            why = f"Gateway {ns}/{gw.name} has no HTTP listener the parentRef names"
            return [], _condition("Accepted", False, "NoMatchingParent", why)
        allowed = [lst for lst in listeners if self._allows(lst, gw, route)]
        if not allowed:
            why = f"no listener of Gateway {ns}/{gw.name} allows routes from {route.namespace}"
            return [], _condition("Accepted", False, "NotAllowedByListeners", why)
        hosts: list[str] = []
        for lst in allowed:
            met_here = False
            for h in route.spec.get("hostnames") or [lst.get("hostname") or "*"]:
                met = _host_meet(lst.get("hostname"), str(h))
                met_here |= met is not None
                if met is not None and met not in hosts:
                    hosts.append(met)
            if met_here:
                self.attached[(ns, gw.name)][str(lst.get("name"))] += 1
        if not hosts:
            why = "no hostname of the route matches a listener hostname"
            return [], _condition("Accepted", False, "NoMatchingListenerHostname", why)
        return hosts, _condition("Accepted", True, "Accepted", "Route was valid")

    @staticmethod
    def _allows(listener: dict[str, Any], gw: Resource, route: Resource) -> bool:
        allowed = listener.get("allowedRoutes") or {}
        kinds = allowed.get("kinds")
        if kinds and not any(k.get("kind") == "HTTPRoute" for k in kinds):
            return False
        frm = (allowed.get("namespaces") or {}).get("from", "Same")
        return frm == "All" or (frm == "Same" and route.namespace == gw.namespace)

    def backend(self, route: Resource, ref: dict[str, Any]) -> tuple[str | None, str, str]:
        """A backendRef's cluster (None if it does not resolve), reason and message."""
        group, kind = ref.get("group", ""), ref.get("kind", "Service")
        ns, name = ref.get("namespace", route.namespace), str(ref.get("name"))
        if (group, kind) != ("", "Service"):
            return None, "InvalidKind", f"backendRef {group}/{kind} {name} is not a Service"
        if ns != route.namespace and not self._granted(route, ns, name):
            why = f"backendRef to Service {ns}/{name} is not allowed by a ReferenceGrant in {ns}"
            return None, "RefNotPermitted", why
        fqdn = service_fqdn(name, ns)
        if not select(self.endpoints, fqdn):
            return None, "BackendNotFound", f"backend Service {ns}/{name} not found"
        return cluster_name(fqdn), "ResolvedRefs", "All references resolved"

    def _granted(self, route: Resource, ns: str, name: str) -> bool:
        for g in self.grants:
            if g.namespace != ns:
                continue
            froms = g.spec.get("from") or []
            tos = g.spec.get("to") or []
            if any(
                f.get("group") == GATEWAY_API_GROUP
                and f.get("kind") == "HTTPRoute"
                and f.get("namespace") == route.namespace
                for f in froms
            ) and any(
                t.get("group") == ""
                and t.get("kind") == "Service"
                and t.get("name") in (None, name)
                for t in tos
            ):
                return True
        return False


def _created(r: Resource) -> str:
    return str(r.metadata.get("creationTimestamp") or "")


def route_virtual_hosts(
    resources: Sequence[Resource],
    endpoints: Sequence[Endpoint],
    taken: dict[str, str],
    warnings: list[str],
) -> HttpRoutes:
    """The virtual hosts of every HTTPRoute, one per hostname, and each route's status.
    `taken`: domains already routed (by VirtualServices); they are left to their owner."""
    binder = _Binder(resources, endpoints)
    routes = sorted(
        (r for r in resources if r.kind == "HTTPRoute"),
        key=lambda r: (_created(r), r.namespace, r.name),
    )
    per_host: dict[str, list[tuple[Any, ...]]] = {}
    out = HttpRoutes()
    for order, route in enumerate(routes):
        refs_reason = ("ResolvedRefs", "All references resolved")

        def resolve(ref: dict[str, Any], route: Resource = route) -> str | None:
            nonlocal refs_reason
            cluster, reason, message = binder.backend(route, ref)
            if cluster is None and refs_reason[0] == "ResolvedRefs":
                refs_reason = (reason, message)
            return cluster

        translator = RuleTranslator(route, resolve)
        envoy_routes: list[tuple[tuple[int, ...], dict[str, Any]]] = []
        for i, rule in enumerate(route.spec.get("rules") or [{}]):
            for j, match in enumerate(rule.get("matches") or [{}]):
                key = (*precedence(match), order, i, j)
                envoy_routes.append((key, translator.envoy_route(rule, i, match)))
        warnings.extend(n for n in translator.notes if n not in warnings)
        if translator.unresolved is not None and refs_reason[0] == "ResolvedRefs":
            refs_reason = translator.unresolved
        parents = []
        generation = int(route.metadata.get("generation") or 1)
        for ref in route.spec.get("parentRefs") or []:
            hosts, accepted = binder.hostnames(route, ref)
            for h in hosts:
                per_host.setdefault(h, []).extend((k, order, r) for k, r in envoy_routes)
            ok = refs_reason[0] == "ResolvedRefs"
            conditions = [accepted, _condition("ResolvedRefs", ok, *refs_reason)]
            for c in conditions:
                c["observedGeneration"] = generation
            parent_ref = {"group": GATEWAY_API_GROUP, "kind": "Gateway", **ref}
            parents.append(
                {
                    "parentRef": parent_ref,
                    "controllerName": CONTROLLER_NAME,
                    "conditions": conditions,
                }
            )
        out.statuses.append(RouteStatus(route, parents))
    out.gateways = [GatewayStatus(gw, binder.attached[key]) for key, gw in binder.gateways.items()]
    for host, entries in per_host.items():
        domains = [host] if host == "*" else [host, f"{host}:*"]
        owned = [d for d in domains if d in taken]
        if owned:
            warnings.append(
                f"HTTPRoute hostname {host} is already routed by VirtualService "
                f"{taken[owned[0]]}; the VirtualService wins"
            )
            continue
        seen: set[int] = set()
        ordered = []
        for _key, _, r in sorted(entries, key=lambda e: e[0]):
            if id(r) not in seen:  # a route attached through two listeners counts once
                seen.add(id(r))
                ordered.append(r)
        out.virtual_hosts.append(
            {"name": f"httproute/{host}", "domains": domains, "routes": ordered}
        )
    return out
