"""DestinationRules and workloads -> Envoy clusters, one per service and one per subset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from meshcore.errors import ManifestError
from meshcore.kube.istio import resolve_host
from meshsim.fields import duration_s, envoy_duration, percentage
from meshsim.hosts import Endpoint, cluster_name, select
from meshsim.resources import Resource

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# Istio lifts Envoy's circuit breakers (1024 connections, 3 concurrent retries) to the maximum
# unless a DestinationRule says otherwise; the embedded mesh does the same.
UNLIMITED = 4294967295
SIMPLE_LB = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
    "UNSPECIFIED": "LEAST_REQUEST",
    "PASSTHROUGH": "LEAST_REQUEST",
}


@dataclass
class Subsets:
    """What the DestinationRules define: subsets per service and their traffic policies."""

    by_host: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    policy: dict[str, dict[str, Any]] = field(default_factory=dict)
    owner: dict[str, Resource] = field(default_factory=dict)

    def names(self, fqdn: str) -> list[str]:
        return sorted(self.by_host.get(fqdn, {}))

    def traffic_policy(self, fqdn: str, subset: str | None) -> dict[str, Any]:
        """The subset's policy over the rule's own, field group by field group, as Istio merges."""
        merged = dict(self.policy.get(fqdn, {}))
        if subset is not None:
            merged.update(self.by_host.get(fqdn, {}).get(subset, {}).get("trafficPolicy") or {})
        return merged


def read_destination_rules(
    rules: Sequence[Resource], endpoints: Sequence[Endpoint], warnings: list[str]
) -> Subsets:
    out = Subsets()
    for dr in rules:
        host = dr.spec.get("host")
        if not isinstance(host, str) or not host:
            raise ManifestError(dr.source, dr.ref, "spec.host", "is missing; name the service")
        fqdn = resolve_host(host, dr.namespace)
        if fqdn in out.owner:
            warnings.append(
                f"{dr.source}: {dr.ref}: spec.host: {fqdn} already has "
                f"{out.owner[fqdn].ref}; the first rule wins, this one is ignored"
            )
            continue
        if not select(endpoints, fqdn):
            warnings.append(f"{dr.source}: {dr.ref}: spec.host: no workload serves {fqdn}")
        subsets: dict[str, dict[str, Any]] = {}
        for i, sub in enumerate(dr.spec.get("subsets") or []):
            where = f"spec.subsets[{i}]"
            name = sub.get("name") if isinstance(sub, dict) else None
            if not isinstance(name, str) or not name:
                raise ManifestError(dr.source, dr.ref, f"{where}.name", "is missing")
            if name in subsets:
                raise ManifestError(
                    dr.source,
                    dr.ref,
                    f"{where}.name",
                    f"subset {name!r} is defined twice; give each a unique name",
                )
            labels = sub.get("labels") or {}
            if not isinstance(labels, dict):
                raise ManifestError(dr.source, dr.ref, f"{where}.labels", "must be a mapping")
            if not select(endpoints, fqdn, labels):
                warnings.append(
                    f"{dr.source}: {dr.ref}: {where}.labels: no workload of {fqdn} "
                    f"has labels {labels}; subset {name} has no endpoints"
                )
            subsets[name] = sub
        out.by_host[fqdn] = subsets
        out.policy[fqdn] = dr.spec.get("trafficPolicy") or {}
        out.owner[fqdn] = dr
        for sub_name in [None, *subsets]:
            _check_policy(out.traffic_policy(fqdn, sub_name), dr, sub_name)
    return out


def _check_policy(policy: dict[str, Any], dr: Resource, subset: str | None) -> None:
    where = "spec.trafficPolicy" if subset is None else f"spec.subsets[{subset}].trafficPolicy"
    simple = (policy.get("loadBalancer") or {}).get("simple")
    if simple is not None and simple not in SIMPLE_LB:
        raise ManifestError(
            dr.source,
            dr.ref,
            f"{where}.loadBalancer.simple",
            f"{simple!r} is not one of {', '.join(SIMPLE_LB)}",
        )
    _cluster_options(policy, (dr.source, dr.ref, where))


def build_clusters(endpoints: Sequence[Endpoint], subsets: Subsets) -> list[dict[str, Any]]:
    """Every service gets a cluster of all its workloads, every subset one of its selection."""
    clusters = []
    for fqdn in sorted({e.fqdn for e in endpoints} | set(subsets.by_host)):
        dr = subsets.owner.get(fqdn)
        where = (dr.source, dr.ref, "spec.trafficPolicy") if dr else ("", "", "")
        clusters.append(
            _cluster(
                cluster_name(fqdn),
                select(endpoints, fqdn),
                subsets.traffic_policy(fqdn, None),
                where,
            )
        )
        for name, sub in subsets.by_host.get(fqdn, {}).items():
            clusters.append(
                _cluster(
                    cluster_name(fqdn, name),
                    select(endpoints, fqdn, sub.get("labels") or {}),
                    subsets.traffic_policy(fqdn, name),
                    where,
                )
            )
    return clusters


def _cluster(
    name: str, members: Sequence[Endpoint], policy: dict[str, Any], where: tuple[str, str, str]
) -> dict[str, Any]:
    lb_endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": e.host, "port_value": e.port}}}}
        for e in members
    ]
    cluster: dict[str, Any] = {
        "@type": CLUSTER_TYPE,
        "name": name,
        "type": "STATIC",
        "connect_timeout": "10s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]},
    }
    cluster.update(_cluster_options(policy, where))
    return cluster


def _cluster_options(policy: dict[str, Any], where: tuple[str, str, str]) -> dict[str, Any]:
    """Load balancing, circuit breakers, HTTP options and outlier detection of one cluster."""
    out: dict[str, Any] = {}
    lb = policy.get("loadBalancer") or {}
    consistent = lb.get("consistentHash")
    if consistent:
        out["lb_policy"] = "MAGLEV" if "maglev" in consistent else "RING_HASH"
    else:
        out["lb_policy"] = SIMPLE_LB.get(lb.get("simple", "UNSPECIFIED"), "LEAST_REQUEST")
    pool = policy.get("connectionPool") or {}
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
    at_tcp, at_http = _at(where, ".connectionPool.tcp"), _at(where, ".connectionPool.http")
    limits = {
        "max_connections": _count(tcp, "maxConnections", at_tcp, UNLIMITED),
        "max_pending_requests": _count(http, "http1MaxPendingRequests", at_http, UNLIMITED),
        "max_requests": _count(http, "http2MaxRequests", at_http, UNLIMITED),
        "max_retries": _count(http, "maxRetries", at_http, UNLIMITED),
    }
    out["circuit_breakers"] = {"thresholds": [{"priority": "DEFAULT", **limits}]}
    if "connectTimeout" in tcp:
        out["connect_timeout"] = envoy_duration(
            duration_s(tcp["connectTimeout"], _at(at_tcp, ".connectTimeout"))
        )
    common: dict[str, Any] = {}
    if "maxRequestsPerConnection" in http:
        common["max_requests_per_connection"] = _count(http, "maxRequestsPerConnection", at_http, 0)
    if "idleTimeout" in http:
        common["idle_timeout"] = envoy_duration(
            duration_s(http["idleTimeout"], _at(at_http, ".idleTimeout"))
        )
    if common:
        out["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS_TYPE,
                "common_http_protocol_options": common,
                "explicit_http_config": {"http_protocol_options": {}},
            }
        }
    od = policy.get("outlierDetection")
    if od:
        out["outlier_detection"] = _outlier(od, where)
        if "minHealthPercent" in od:
            out["common_lb_config"] = {
                "healthy_panic_threshold": {
                    "value": percentage(
                        od["minHealthPercent"], _at(where, ".outlierDetection.minHealthPercent")
                    )
                }
            }
    return out


def _outlier(od: dict[str, Any], where: tuple[str, str, str]) -> dict[str, Any]:
    where = _at(where, ".outlierDetection")

    def at(key: str) -> tuple[str, str, str]:
        return _at(where, f".{key}")

    # As Istio does: only the failure kinds the rule names eject hosts; success-rate never.
    out: dict[str, Any] = {
        "enforcing_success_rate": 0,
        "enforcing_consecutive_5xx": 0,
        "enforcing_consecutive_gateway_failure": 0,
    }
    if "consecutive5xxErrors" in od:
        out["consecutive_5xx"] = _count(od, "consecutive5xxErrors", where, 0)
        out["enforcing_consecutive_5xx"] = 100 if out["consecutive_5xx"] else 0
    if "consecutiveGatewayErrors" in od:
        out["consecutive_gateway_failure"] = _count(od, "consecutiveGatewayErrors", where, 0)
        out["enforcing_consecutive_gateway_failure"] = 100
    if "interval" in od:
        out["interval"] = envoy_duration(duration_s(od["interval"], at("interval")))
    if "baseEjectionTime" in od:
        out["base_ejection_time"] = envoy_duration(
            duration_s(od["baseEjectionTime"], at("baseEjectionTime"))
        )
    if "maxEjectionPercent" in od:
        out["max_ejection_percent"] = _count(od, "maxEjectionPercent", where, 10)
    return out


def _at(where: tuple[str, str, str], suffix: str) -> tuple[str, str, str]:
    return (where[0], where[1], where[2] + suffix)


def _count(spec: dict[str, Any], key: str, where: tuple[str, str, str], default: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ManifestError(*_at(where, f".{key}"), f"{value!r} is not a non-negative integer")
    return value
