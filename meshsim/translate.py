"""A set of Istio and Gateway API resources -> the Envoy configuration of the ingress gateway,
or a refusal. HTTPRoutes (`meshsim.httproutes`) land in the same route configuration, after the
VirtualServices; a domain a VirtualService routes stays its."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from meshcore.errors import ManifestError
from meshsim.clusters import build_clusters, read_destination_rules
from meshsim.fields import SUPPORTED, unsupported
from meshsim.hosts import Endpoint
from meshsim.httproutes import GatewayStatus, RouteStatus, route_virtual_hosts
from meshsim.resources import GATEWAY_API_GROUP, Resource
from meshsim.routes import ROUTE_CONFIG_TYPE, RouteBuilder
from meshsim.tls import TlsServer, tls_servers

ROUTE_CONFIG_NAME = "ingress"


@dataclass
class Snapshot:
    """What Envoy is given: one route configuration and the clusters it names."""

    routes: dict[str, Any]
    clusters: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    route_status: list[RouteStatus] = field(default_factory=list)
    gateway_status: list[GatewayStatus] = field(default_factory=list)
    tls_servers: list[TlsServer] = field(default_factory=list)  # served from the start only


def build_snapshot(resources: Sequence[Resource], endpoints: Sequence[Endpoint]) -> Snapshot:
    """Validate the whole set and translate it; raises ManifestError on the first refusal."""
    warnings: list[str] = []
    _check_unique(resources)
    gateway_api = [r for r in resources if r.group == GATEWAY_API_GROUP]
    istio = [r for r in resources if r.group != GATEWAY_API_GROUP]
    for r in istio:
        warnings.extend(
            f"{r.source}: {r.ref}: {path} is not supported by the embedded mesh and is ignored"
            for path in unsupported(r.spec, SUPPORTED[r.kind])
        )
    by_kind: dict[str, list[Resource]] = {
        "VirtualService": [],
        "DestinationRule": [],
        "Gateway": [],
    }
    for r in istio:
        by_kind[r.kind].append(r)
    subsets = read_destination_rules(by_kind["DestinationRule"], endpoints, warnings)
    gateways = {(g.namespace, g.name): g for g in by_kind["Gateway"]}
    builder = RouteBuilder(endpoints, subsets)
    virtual_hosts: list[dict[str, Any]] = []
    taken: dict[str, str] = {}
    for vs in by_kind["VirtualService"]:
        bound = _bound_gateways(vs, gateways, warnings)
        vhost = builder.virtual_host(vs, [])  # validates even what the gateway does not serve
        if not bound:
            continue
        domains = []
        for d in _domains(vs):
            if d in taken:
                warnings.append(
                    f"{vs.source}: {vs.ref}: spec.hosts: {d} is already routed by "
                    f"VirtualService {taken[d]}; the first one wins"
                )
            else:
                taken[d] = f"{vs.namespace}/{vs.name}"
                domains.append(d)
        if domains:
            vhost["domains"] = domains
            virtual_hosts.append(vhost)
    http_routes = route_virtual_hosts(gateway_api, endpoints, taken, warnings)
    virtual_hosts.extend(http_routes.virtual_hosts)
    if not virtual_hosts:
        warnings.append(
            "no VirtualService is bound to a Gateway: the gateway answers 404 "
            "to every request; add `gateways: [<gateway name>]` to a VirtualService"
        )
    routes = {"@type": ROUTE_CONFIG_TYPE, "name": ROUTE_CONFIG_NAME, "virtual_hosts": virtual_hosts}
    return Snapshot(
        routes=routes,
        clusters=build_clusters(endpoints, subsets),
        warnings=warnings,
        resources=list(resources),
        route_status=http_routes.statuses,
        gateway_status=http_routes.gateways,
        tls_servers=tls_servers(resources, warnings),
    )


def _check_unique(resources: Sequence[Resource]) -> None:
    seen: dict[tuple[str, str, str, str], Resource] = {}
    for r in resources:
        if r.key in seen:
            raise ManifestError(
                r.source,
                r.ref,
                "metadata.name",
                f"is also defined in {seen[r.key].source}; give each resource a unique name",
            )
        seen[r.key] = r


def _bound_gateways(
    vs: Resource, gateways: dict[tuple[str, str], Resource], warnings: list[str]
) -> list[Resource]:
    names = vs.spec.get("gateways") or []
    bound = []
    for name in names:
        if name == "mesh":
            continue
        ns, _, short = str(name).rpartition("/")
        gw = gateways.get((ns or vs.namespace, short))
        if gw is None:
            warnings.append(
                f"{vs.source}: {vs.ref}: spec.gateways: Gateway {name} does not "
                "exist; traffic entering the gateway does not use this route"
            )
        else:
            bound.append(gw)
    if not names or names == ["mesh"]:
        warnings.append(
            f"{vs.source}: {vs.ref}: spec.gateways: binds no Gateway, so it governs "
            "mesh-internal traffic only, which the embedded mesh does not route "
            "through Envoy; add the gateway's name to route traffic entering it"
        )
    return bound


def _domains(vs: Resource) -> list[str]:
    out: list[str] = []
    for host in vs.spec.get("hosts") or ["*"]:
        host = str(host).lower()
        for d in [host] if host == "*" else [host, f"{host}:*"]:
            if d not in out:
                out.append(d)
    return out
