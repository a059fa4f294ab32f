"""Preflight for a Gateway API canary: the HTTPRoute's side of `loadgen.preflight`.

Pure functions over a `ClusterReader` (Gateway API kinds named as the client names them,
`meshcore.kube.httproute.kind_key`): the HTTPRoute exists and every parent Gateway Accepted it
(its `status.parents`, written by the Gateway's controller), each parent Gateway exists and its
class is Istio's (`gatewayClassName: istio`, or a GatewayClass whose controller is
`istio.io/gateway-controller`), and every backendRef resolves to a Service with ready endpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen.clusterread import ClusterReader, is_ready, selector_text
from loadgen.preflight import (
    Check,
    HttpGet,
    Probe,
    Target,
    check_ingress,
    check_probe,
    check_telemetry,
    failed,
    passed,
)
from meshcore.kube.httproute import GATEWAY, GATEWAY_GROUP, ISTIO_CONTROLLER, authority
from meshcore.kube.istio import namespace_of

APPLY_FIX = "kubectl apply -f scenarios/manifests/gateway-api.yaml"


def route_checks(
    reader: ClusterReader, target: Target, *, get: HttpGet, probe: Probe
) -> list[Check]:
    """`loadgen.preflight.run_checks` after the namespace, for `target.http_route`."""
    assert target.http_route is not None
    route, checks = check_http_route(reader, target.namespace, target.http_route)
    ingress_ns, ingress_name = target.ingress_namespace, target.ingress_service
    deployed = deployed_service(reader, route) if route is not None else None
    if deployed is not None:  # Istio deployed the Gateway's own proxies: its Service
        ingress_ns, ingress_name = deployed
    ingress = check_ingress(reader, ingress_ns, ingress_name)
    checks.append(ingress)
    url = target.gateway_url or ingress.value
    if route is not None:
        checks.append(check_access(reader, route))
        if url:
            host = target.host_header or authority(route)
            checks.append(check_probe(url, host, target.version_header, probe))
    return checks + check_telemetry(target, get)


def deployed_service(reader: ClusterReader, route: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the Service Istio creates for the route's first parent Gateway
    when it deploys that Gateway's proxies itself (`<gateway>-istio` in the Gateway's
    namespace); None when there is none (a Gateway served by istio-ingressgateway)."""
    for parent in (route.get("spec") or {}).get("parentRefs") or []:
        if parent.get("kind", "Gateway") != "Gateway":
            continue
        ns = str(parent.get("namespace") or namespace_of(route))
        name = f"{parent.get('name')}-istio"
        return (ns, name) if reader.service(ns, name) is not None else None
    return None


def check_http_route(
    reader: ClusterReader, namespace: str, name: str
) -> tuple[dict[str, Any] | None, list[Check]]:
    """The HTTPRoute (None when absent) and its checks, in the order a user fixes them."""
    route = reader.istio("HTTPRoute", namespace, name)
    if route is None:
        fix = f"{APPLY_FIX} (or fix the plan's route.name and -n)"
        return None, [failed("httproute", f"HTTPRoute {namespace}/{name} not found", fix)]
    return route, [*check_backends(reader, route), *check_parents(reader, route)]


def check_access(reader: ClusterReader, route: Mapping[str, Any]) -> Check:
    """The credentials may update the HTTPRoute (a SelfSubjectAccessReview)."""
    ns, ref = namespace_of(route), _name(route)
    if reader.can("update", GATEWAY_GROUP, "httproutes", ns, ref.rpartition("/")[2]):
        return passed("access", f"these credentials may update {ref}")
    fix = f"grant update on httproutes.{GATEWAY_GROUP} in namespace {ns} (a Role and RoleBinding)"
    return failed("access", f"these credentials may not update {ref}: no weight can move", fix)


def _name(route: Mapping[str, Any]) -> str:
    return f"HTTPRoute {namespace_of(route)}/{(route.get('metadata') or {}).get('name', '?')}"


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def check_parents(reader: ClusterReader, route: Mapping[str, Any]) -> list[Check]:
    """Each parent Gateway Accepted the route, exists, and is of Istio's class."""
    ns, ref = namespace_of(route), _name(route)
    parents = [
        p for p in (route.get("spec") or {}).get("parentRefs") or []
        if p.get("group", GATEWAY_GROUP) == GATEWAY_GROUP and p.get("kind", "Gateway") == "Gateway"
    ]  # fmt: skip
    if not parents:
        fix = "add `parentRefs: [{name: <the Gateway>}]` to its spec"
        return [failed("parent", f"{ref} names no parent Gateway: no traffic reaches it", fix)]
    statuses = (route.get("status") or {}).get("parents") or []
    checks = []
    for parent in parents:
        gw_ns, gw_name = str(parent.get("namespace") or ns), str(parent.get("name"))
        where = f"Gateway {gw_ns}/{gw_name}"
        status: Mapping[str, Any] = next(
            (s for s in statuses
             if (s.get("parentRef") or {}).get("name") == gw_name
             and ((s.get("parentRef") or {}).get("namespace") or ns) == gw_ns),
            {},
        )  # fmt: skip
        accepted = _condition(status, "Accepted")
        if accepted is not None and accepted.get("status") == "True":
            checks.append(passed("parent", f"{ref} is Accepted by {where}"))
        else:
            why = (
                f"{accepted.get('reason')}: {accepted.get('message') or ''}".strip(": ")
                if accepted is not None
                else "no status from its controller"
            )
            fix = f"kubectl describe httproute -n {ns} {ref.rpartition('/')[2]} (status.parents)"
            checks.append(failed("parent", f"{ref} is not Accepted by {where} ({why})", fix))
        checks.append(check_class(reader, gw_ns, gw_name))
    return checks


def check_class(reader: ClusterReader, namespace: str, name: str) -> Check:
    """The Gateway exists and Istio runs it."""
    where = f"Gateway {namespace}/{name}"
    gateway = reader.istio(GATEWAY, namespace, name)
    if gateway is None:
        return failed("gatewayclass", f"{where} does not exist", APPLY_FIX)
    class_name = str((gateway.get("spec") or {}).get("gatewayClassName") or "")
    if class_name == "istio":
        return passed("gatewayclass", f"{where} is of class istio")
    gateway_class = reader.istio("GatewayClass", "", class_name) if class_name else None
    controller = str(((gateway_class or {}).get("spec") or {}).get("controllerName") or "")
    if controller == ISTIO_CONTROLLER:
        return passed("gatewayclass", f"{where} is of class {class_name} ({controller})")
    run_by = f" (controller {controller})" if controller else ""
    detail = f"{where} is of class {class_name or 'none'}{run_by}, not Istio's"
    return failed("gatewayclass", detail, "set its spec.gatewayClassName: istio")


def check_backends(reader: ClusterReader, route: Mapping[str, Any]) -> list[Check]:
    """Every backendRef of every rule names a Service with ready endpoints."""
    ns, ref = namespace_of(route), _name(route)
    checks: list[Check] = []
    seen: set[tuple[str, str]] = set()
    for i, rule in enumerate((route.get("spec") or {}).get("rules") or []):
        for j, backend in enumerate(rule.get("backendRefs") or []):
            field = f"{ref} spec.rules[{i}].backendRefs[{j}]"
            if backend.get("group") not in (None, "", "core") or backend.get("kind") not in (
                None,
                "Service",
            ):
                fix = "give each version a Service of its own"
                checks.append(failed("backend", f"{field} is a {backend.get('kind')}", fix))
                continue
            key = (str(backend.get("namespace") or ns), str(backend.get("name")))
            if key not in seen:
                seen.add(key)
                checks.append(_check_service(reader, field, *key))
    if not checks:
        fix = "give its rule one backendRef per version (frontend-v1, frontend-v2)"
        checks.append(failed("backend", f"{ref} has no backendRefs", fix))
    return checks


def _check_service(reader: ClusterReader, field: str, namespace: str, name: str) -> Check:
    svc = reader.service(namespace, name)
    raw = ((svc or {}).get("spec") or {}).get("selector") or {}
    selector = {str(k): str(v) for k, v in raw.items()}
    if svc is None:
        fix = f"create it or fix the backendRef's name (kubectl get services -n {namespace})"
        return failed("backend", f"{field}: Service {namespace}/{name} does not exist", fix)
    if not selector:
        fix = "give it a selector of the version's pods"
        return failed("backend", f"{field}: Service {namespace}/{name} has no selector", fix)
    ready = [p for p in reader.pods(namespace, selector) if is_ready(p)]
    where = f"Service {namespace}/{name} ({selector_text(selector)})"
    if not ready:
        wait = f"kubectl get pods -n {namespace} -l {selector_text(selector)}"
        return failed("backend", f"{where}: no ready endpoint", f"{APPLY_FIX}; then `{wait}`")
    return passed("backend", f"{where}: {len(ready)} ready endpoint(s)")
