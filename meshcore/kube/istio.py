"""Istio's resources as the Kubernetes API holds them: names, hosts, routes and their weights.

Pure functions over objects in the API's JSON form (`{"apiVersion", "kind", "metadata",
"spec"}`), used by the weight changes of a rollout, preflight and the embedded mesh alike.

Hosts resolve as Istio resolves them: `frontend`, `frontend.default` and
`frontend.default.svc.cluster.local` name one service; a short name is read relative to the
namespace of the resource that wrote it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from meshcore.errors import ConfigError
from meshcore.stamps import RUN_HEADER, TWIN_SUFFIX, Stamping, twin_name

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


def host_matches(gateway_host: str, vs_host: str) -> bool:
    """A Gateway server's host (`ns/host` or `host`, wildcards allowed) accepts a
    VirtualService host, as Istio binds them."""
    g = gateway_host.split("/", 1)[-1].lower()  # "ns/host": the namespace part scopes, not names
    v = vs_host.lower()
    if "*" in (g, v) or g == v:
        return True
    return (g.startswith("*.") and v.endswith(g[1:])) or (v.startswith("*.") and g.endswith(v[1:]))


def authority(vs: Mapping[str, Any], gateways: Sequence[Mapping[str, Any]]) -> str | None:
    """The Host a client must send to reach `vs` through its gateways: None when it names a
    `*` host (any will do), else its first host a server of those gateways accepts."""
    hosts = [str(h) for h in (vs.get("spec") or {}).get("hosts") or []]
    if not hosts or "*" in hosts:
        return None
    served = [
        str(h) for gw in gateways for s in (gw.get("spec") or {}).get("servers") or []
        for h in s.get("hosts") or []
    ]  # fmt: skip
    return next((h for h in hosts if any(host_matches(g, h) for g in served)), None)


def service_name(fqdn: str) -> tuple[str, str] | None:
    """(namespace, name) of a cluster-local host; None for hosts outside the cluster."""
    parts = fqdn.split(".")
    if fqdn.endswith("." + CLUSTER_DOMAIN) and len(parts) == 5:
        return parts[1], parts[0]
    return None


# -- routes --------------------------------------------------------------------------------
def route_index(vs: Mapping[str, Any], route: str | int) -> int:
    """Index of the http route named `route` (or the index among the user's routes: a stamp
    twin does not count); ConfigError naming the routes there are."""
    return own_index(vs, "http", route, is_twin, "http route", "route")


def own_index(
    obj: Mapping[str, Any],
    key: str,
    wanted: str | int,
    twin: Callable[[Any], bool],
    noun: str,
    fix: str,
) -> int:
    """Where, in the spec's list `key`, the item named `wanted` (or the `wanted`-th) of the
    user's own items is, stamp twins skipped; a ConfigError naming the user's items (`#k`
    unnamed) when there is none (`noun`: what an item is, `fix`: the plan field to fix)."""
    items = (obj.get("spec") or {}).get(key) or []
    own = [i for i, r in enumerate(items) if not twin(r)]
    names = [items[i].get("name") or f"#{n}" for n, i in enumerate(own)]
    if isinstance(wanted, int) and not isinstance(wanted, bool) and 0 <= wanted < len(own):
        return own[wanted]
    if isinstance(wanted, str) and wanted in names:
        return own[names.index(wanted)]
    known = ", ".join(names) or "none"
    plural = noun.split()[-1] + "s"
    raise ConfigError(
        f"{ref(obj)} has no {noun} {wanted!r}; its {plural}: {known} (or an index); fix `{fix}`"
    )


def to_weight(
    obj: Mapping[str, Any], key: str, index: int, noun: str
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A copy of `obj`, the item `index` of its spec's list `key` in that copy (whose weights
    are to be set), and how errors name that item (`<ref> route primary`)."""
    new = copy.deepcopy(dict(obj))
    target = new["spec"][key][index]
    return new, target, f"{ref(obj)} {noun} {target.get('name') or index}"


def without_twins(obj: Mapping[str, Any], key: str, twin: Callable[[Any], bool]) -> dict[str, Any]:
    """A copy of `obj` whose spec's list `key` has no stamp twin: as the user wrote it."""
    new = copy.deepcopy(dict(obj))
    spec = new.get("spec") or {}
    if spec.get(key):
        spec[key] = [r for r in spec[key] if not twin(r)]
    return new


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
    new, target, label = to_weight(vs, "http", route_index(vs, route), "route")
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


# -- stamps (meshcore.stamps) ----------------------------------------------------------------
def is_twin(route: Mapping[str, Any]) -> bool:
    """A route meshload placed to stamp its own requests: named `...-meshload`, matching the
    run header."""
    if not str(route.get("name") or "").endswith(TWIN_SUFFIX):
        return False
    return any(RUN_HEADER in (m.get("headers") or {}) for m in route.get("match") or [])


def without_twin(vs: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `vs` without any stamp twin: the routes exactly as the user wrote them."""
    return without_twins(vs, "http", is_twin)


def with_twin(
    vs: Mapping[str, Any], index: int, stamping: Stamping, step: int
) -> tuple[dict[str, Any], list[str]]:
    """A copy of `vs` (without twins) whose route `index` gets a twin placed before it: the
    same route, each match also requiring the run header, and the stamps of `step` as
    response headers. Returns it and the subsets whose version header the twin adds (the user
    set none)."""
    new = copy.deepcopy(dict(vs))
    http = new["spec"]["http"]
    route = copy.deepcopy(http[index])
    twin: dict[str, Any] = {**route, "name": twin_name(route.get("name"), index)}
    wanted = {RUN_HEADER: {"exact": stamping.token}}
    twin["match"] = [{**m, "headers": {**(m.get("headers") or {}), **wanted}}
                     for m in route.get("match") or [{}]]  # fmt: skip
    stamped = []
    header = stamping.version_header
    own = _sets(route.get("headers"), header)
    for d in twin.get("route") or []:
        subset = (d.get("destination") or {}).get("subset")
        if subset and not own and not _sets(d.get("headers"), header):
            response = d.setdefault("headers", {}).setdefault("response", {})
            response.setdefault("set", {})[header] = str(subset)
            stamped.append(str(subset))
    response = twin.setdefault("headers", {}).setdefault("response", {})
    response["set"] = {**(response.get("set") or {}), **stamping.headers(step)}
    http.insert(index, twin)
    return new, stamped


def _sets(headers: Any, name: str) -> bool:
    """Response header operations that give `name` a value."""
    response = (headers or {}).get("response") or {}
    return any(
        name.lower() == str(k).lower() for op in ("set", "add") for k in response.get(op) or {}
    )
