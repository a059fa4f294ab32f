"""Istio's resources as the Kubernetes API holds them: names, hosts, routes and their weights.

Pure functions over objects in the API's JSON form (`{"apiVersion", "kind", "metadata",
"spec"}`), used by the weight changes of a rollout, preflight and the embedded mesh alike.

Hosts resolve as Istio resolves them: `frontend`, `frontend.default` and
`frontend.default.svc.cluster.local` name one service; a short name is read relative to the
namespace of the resource that wrote it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from meshcore.errors import ConfigError

GROUP = "networking.istio.io"
# v1 first; Istio < 1.22 serves only v1beta1 (v1alpha3 is the oldest still served).
VERSIONS = ("v1", "v1beta1", "v1alpha3")
ROUTING_KINDS = ("VirtualService", "DestinationRule", "Gateway")
PLURALS = {
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "Gateway": "gateways",
}
CLUSTER_DOMAIN = "svc.cluster.local"


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "default")


def ref(obj: Mapping[str, Any]) -> str:
    """How messages name an object: `VirtualService default/frontend`."""
    name = (obj.get("metadata") or {}).get("name", "?")
    return f"{obj.get('kind', '?')} {namespace_of(obj)}/{name}"


# -- hosts ---------------------------------------------------------------------------------
def service_fqdn(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.{CLUSTER_DOMAIN}"


def resolve_host(host: str, namespace: str) -> str:
    """The fully qualified service name a host of a resource in `namespace` refers to."""
    parts = host.strip().lower().split(".")
    if len(parts) == 1:
        return service_fqdn(parts[0], namespace)
    if len(parts) == 2 or (len(parts) == 3 and parts[2] == "svc"):
        return service_fqdn(parts[0], parts[1])
    return ".".join(parts)


def service_name(fqdn: str) -> tuple[str, str] | None:
    """(namespace, name) of a cluster-local host; None for hosts outside the cluster."""
    parts = fqdn.split(".")
    if fqdn.endswith("." + CLUSTER_DOMAIN) and len(parts) == 5:
        return parts[1], parts[0]
    return None


# -- routes --------------------------------------------------------------------------------
def route_index(vs: Mapping[str, Any], route: str | int) -> int:
    """Index of the http route named `route` (or the index itself); ConfigError naming the
    routes there are."""
    http = (vs.get("spec") or {}).get("http") or []
    names = [r.get("name") or f"#{i}" for i, r in enumerate(http)]
    if isinstance(route, int) and not isinstance(route, bool) and 0 <= route < len(http):
        return route
    if isinstance(route, str) and route in names:
        return names.index(route)
    known = ", ".join(names) or "none"
    raise ConfigError(
        f"{ref(vs)} has no http route {route!r}; its routes: {known} (or an index); fix `route`"
    )


def route_subsets(vs: Mapping[str, Any], index: int) -> list[str]:
    """The subsets route `index` sends to, in the manifest's order."""
    dests = ((vs.get("spec") or {}).get("http") or [])[index].get("route") or []
    return [str((d.get("destination") or {}).get("subset")) for d in dests]


def route_destinations(vs: Mapping[str, Any]) -> dict[str, set[str]]:
    """Destination FQDN -> subsets the VirtualService's HTTP routes send to."""
    ns = namespace_of(vs)
    found: dict[str, set[str]] = {}
    for route in (vs.get("spec") or {}).get("http") or []:
        for d in route.get("route") or []:
            dest = d.get("destination") or {}
            subsets = found.setdefault(resolve_host(str(dest.get("host", "")), ns), set())
            if dest.get("subset"):
                subsets.add(str(dest["subset"]))
    return found


def check_weights(weights: Mapping[str, int]) -> dict[str, int]:
    if not weights:
        raise ConfigError("weights are empty; map each subset to a weight, e.g. {v1: 90, v2: 10}")
    clean: dict[str, int] = {}
    for subset, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise ConfigError(f"weight of subset {subset} is {w!r}; give a whole number >= 0")
        clean[str(subset)] = w
    if sum(clean.values()) == 0:
        raise ConfigError("weights sum to 0; give at least one subset a positive weight")
    return clean


def apply_weights(
    vs: Mapping[str, Any],
    rules: Iterable[Mapping[str, Any]],
    weights: Mapping[str, int],
    *,
    route: str | int = 0,
    host: str | None = None,
) -> dict[str, Any]:
    """A copy of `vs` whose route `route` carries `weights`; ConfigError if refused.

    - every subset named in `weights` must be defined by a DestinationRule (among `rules`) for
      the route's host and have a destination in the route: meshload never invents
      destinations (each carries its own response headers marking the serving version);
    - a destination whose subset is not named gets weight 0, so `{"v2": 100}` moves all traffic;
    - the route must send to one host; `host=` only asserts which one.
    """
    clean = check_weights(weights)
    ns = namespace_of(vs)
    new = copy.deepcopy(dict(vs))
    index = route_index(new, route)
    target = new["spec"]["http"][index]
    label = f"{ref(vs)} route {target.get('name') or index}"
    dests = target.get("route") or []
    if not dests:
        raise ConfigError(f"{label} has no destinations; give it one per subset")
    hosts = sorted({resolve_host(str((d.get("destination") or {})["host"]), ns) for d in dests})
    if len(hosts) > 1:
        many = ", ".join(hosts)
        raise ConfigError(f"{label} sends to several hosts ({many}); use a one-host route")
    fqdn = hosts[0]
    if host is not None and resolve_host(host, ns) != fqdn:
        raise ConfigError(f"{label} sends to {fqdn}, not {resolve_host(host, ns)}; fix the host")
    defined = {
        str(s.get("name"))
        for r in rules
        if resolve_host(str((r.get("spec") or {}).get("host", "")), namespace_of(r)) == fqdn
        for s in (r.get("spec") or {}).get("subsets") or []
    }
    if not defined:
        wanted = ", ".join(clean)
        raise ConfigError(f"no DestinationRule defines subsets for {fqdn}; apply one ({wanted})")
    for subset in clean:
        if subset not in defined:
            known = ", ".join(sorted(defined))
            raise ConfigError(f"subset {subset} is not defined for {fqdn}; defined: {known}")
    by_subset: dict[str, dict[str, Any]] = {}
    for i, d in enumerate(dests):
        sub = str((d.get("destination") or {}).get("subset") or "")
        if not sub or sub in by_subset:
            why = f"subset {sub} used twice" if sub else "no subset"
            raise ConfigError(f"{label} destination {i}: {why}; give each its own subset")
        by_subset[sub] = d
    for subset in clean:
        if subset not in by_subset:
            fix = "add one (weight 0, with its response header) to the manifest"
            raise ConfigError(f"{label} has no destination for subset {subset}; {fix}")
    for sub, d in by_subset.items():
        d["weight"] = clean.get(sub, 0)
    return new
