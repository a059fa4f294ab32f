"""Gateway API HTTPRoutes as the Kubernetes API holds them: rules, backendRefs and weights.

Pure functions over objects in the API's JSON form, the HTTPRoute counterpart of
`meshcore.kube.istio`. A Gateway API canary is written as one Service per version
(`frontend-v1`/`frontend-v2`, or Flagger's and Argo Rollouts' `frontend-primary`/
`frontend-canary`) behind one rule's `backendRefs`, so a plan's versions are those Service
names: the names the route itself uses, with no label to guess.

The stamps (`meshcore.stamps`) go on a **twin rule**: the moved rule's matches, each with one
more header match on meshload's run header, its backendRefs and weights, and
ResponseHeaderModifier filters: the version per backendRef, the configuration and replica at
rule level. Gateway API ranks matches across rules by path, then method, then the largest
number of header matches, and only then by list order (HTTPRouteRule `matches`, "Proxy or Load
Balancer routing configuration generated from HTTPRoutes MUST prioritize matches based on the
following criteria", gateway-api apis/v1/httproute_types.go), so the twin wins for meshload's
requests wherever it stands; it is placed before the moved rule all the same.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from meshcore.errors import ConfigError
from meshcore.kube.istio import (
    check_weights,
    namespace_of,
    own_index,
    ref,
    to_weight,
    without_twins,
)
from meshcore.stamps import RUN_HEADER, TWIN_SUFFIX, Stamping, twin_name

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSIONS = ("v1", "v1beta1")
# Istio has a Gateway kind of its own: Gateway API kinds other than HTTPRoute and GatewayClass
# are named `Kind.group`, as kubectl names them.
GATEWAY = f"Gateway.{GATEWAY_GROUP}"
# kind -> (plural, namespaced)
GATEWAY_KINDS = {
    "HTTPRoute": ("httproutes", True),
    GATEWAY: ("gateways", True),
    "GatewayClass": ("gatewayclasses", False),
}
ISTIO_CONTROLLER = "istio.io/gateway-controller"
_DEFAULT_MATCH = {"path": {"type": "PathPrefix", "value": "/"}}
_MODIFIER = "ResponseHeaderModifier"


def kind_key(obj: Mapping[str, Any]) -> str:
    """How the client names an object's kind: `HTTPRoute`, `Gateway.gateway.networking.k8s.io`
    (a Gateway API Gateway), `Gateway` (Istio's)."""
    kind = str(obj.get("kind") or "")
    group = str(obj.get("apiVersion") or "").rpartition("/")[0]
    return f"{kind}.{group}" if group == GATEWAY_GROUP and kind not in GATEWAY_KINDS else kind


# -- rules ---------------------------------------------------------------------------------
def rule_index(route: Mapping[str, Any], rule: str | int) -> int:
    """Index of the rule named `rule` (or the index among the user's rules: a stamp twin does
    not count); ConfigError naming the rules there are."""
    return own_index(route, "rules", rule, is_twin, "rule", "route.rule")


def rule_backends(route: Mapping[str, Any], index: int) -> list[str]:
    """The Service names rule `index` sends to, in the manifest's order."""
    refs = ((route.get("spec") or {}).get("rules") or [])[index].get("backendRefs") or []
    return [str(b.get("name")) for b in refs]


def backend_services(route: Mapping[str, Any], index: int) -> list[tuple[str, str, str]]:
    """(field, namespace, name) of each Service rule `index` sends to; ConfigError for a
    backendRef that is not a Service (meshload moves Services' weights only)."""
    ns = namespace_of(route)
    out = []
    rule = ((route.get("spec") or {}).get("rules") or [])[index]
    for i, b in enumerate(rule.get("backendRefs") or []):
        where = f"{ref(route)}: spec.rules[{index}].backendRefs[{i}]"
        if b.get("group") not in (None, "", "core") or b.get("kind") not in (None, "Service"):
            kind = f"{b.get('kind') or 'Service'} of group {b.get('group') or 'core'}"
            raise ConfigError(f"{where} is a {kind}; give each version a Service of its own")
        out.append((f"{where}.name", str(b.get("namespace") or ns), str(b.get("name"))))
    return out


def apply_weights(
    route: Mapping[str, Any],
    weights: Mapping[str, int],
    *,
    rule: str | int = 0,
    service_exists: Callable[[str, str], bool] = lambda ns, name: True,
) -> dict[str, Any]:
    """A copy of `route` whose rule `rule` carries `weights` on its backendRefs; ConfigError
    if refused, as `meshcore.kube.istio.apply_weights`: every Service named in `weights` must be
    a backendRef of the rule (meshload never invents one), every backendRef must name a Service
    that exists (`service_exists(namespace, name)`), a backendRef not named gets weight 0."""
    clean = check_weights(weights)
    index = rule_index(route, rule)
    new, target, label = to_weight(route, "rules", index, "rule")
    refs = target.get("backendRefs") or []
    if not refs:
        raise ConfigError(f"{label} has no backendRefs; give it one Service per version")
    seen: dict[str, dict[str, Any]] = {}
    for b, (field, ns, name) in zip(refs, backend_services(new, index), strict=True):
        if name in seen:
            raise ConfigError(f"{field}: Service {name} named twice; give each version its own")
        if not service_exists(ns, name):
            fix = f"create it or fix the name (kubectl get services -n {ns})"
            raise ConfigError(f"{field}: Service {ns}/{name} does not exist; {fix}")
        seen[name] = b
    for name in clean:
        if name not in seen:
            known = ", ".join(seen)
            raise ConfigError(
                f"{label} has no backendRef {name} (its Services: {known}); name one of them "
                "in the plan's weights, or add a backendRef (weight 0) to the route"
            )
    for name, b in seen.items():
        b["weight"] = clean.get(name, 0)
    return new


def authority(route: Mapping[str, Any]) -> str | None:
    """The Host a client must send: the route's first hostname without a wildcard; None when
    it names none (any Host the listener accepts will do)."""
    names = [str(h) for h in (route.get("spec") or {}).get("hostnames") or []]
    return next((h for h in names if "*" not in h), None)


# -- stamps (meshcore.stamps) ----------------------------------------------------------------
def _is_run_match(match: Mapping[str, Any]) -> bool:
    return any(str(h.get("name", "")).lower() == RUN_HEADER for h in match.get("headers") or [])


def is_twin(rule: Mapping[str, Any]) -> bool:
    """A rule meshload placed to stamp its own requests: every match needs the run header,
    which only meshload's requests carry (rule names are optional in Gateway API)."""
    matches = rule.get("matches") or []
    return bool(matches) and all(_is_run_match(m) for m in matches)


def without_twin(route: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `route` without any stamp twin: the rules exactly as the user wrote them."""
    return without_twins(route, "rules", is_twin)


def twin_label(route: Mapping[str, Any], index: int) -> str:
    """How run.json names the twin at `index`: its name (`<rule>-meshload`), or
    `rule<index>-meshload` for a twin of an unnamed rule (which gets no name)."""
    twin = ((route.get("spec") or {}).get("rules") or [])[index]
    return str(twin.get("name") or f"rule{index}{TWIN_SUFFIX}")


def with_twin(
    route: Mapping[str, Any], index: int, stamping: Stamping, step: int
) -> tuple[dict[str, Any], list[str]]:
    """A copy of `route` (without twins) whose rule `index` gets a twin placed before it, with
    the stamps of `step`. Returns it and the Services whose version header the twin sets:
    every backendRef, to its Service's name, the plan's name of the version (a version header
    the user's rule sets, at rule or backendRef level, gives way to it in the twin only)."""
    new = copy.deepcopy(dict(route))
    rules = new["spec"]["rules"]
    rule = copy.deepcopy(rules[index])
    twin: dict[str, Any] = {k: v for k, v in rule.items() if k != "name"}
    if rule.get("name"):  # a rule name must be unique within the route
        twin["name"] = twin_name(str(rule["name"]), index)
    run = {"type": "Exact", "name": RUN_HEADER, "value": stamping.token}
    twin["matches"] = [{**m, "headers": [*(m.get("headers") or []), run]}
                       for m in rule.get("matches") or [_DEFAULT_MATCH]]  # fmt: skip
    stamped = []
    header = stamping.version_header
    twin["filters"] = _without(twin.get("filters"), header)
    for b in twin.get("backendRefs") or []:
        filters = _without(b.get("filters"), header)
        b["filters"] = _with_set(filters, {header: str(b.get("name"))})
        stamped.append(str(b.get("name")))
    twin["filters"] = _with_set(twin.get("filters"), stamping.headers(step))
    rules.insert(index, twin)
    return new, stamped


def _with_set(filters: Any, headers: Mapping[str, str]) -> list[dict[str, Any]]:
    """`filters` with `headers` set by their ResponseHeaderModifier (a filter list may hold one
    only: the user's, when there is one, takes them)."""
    out = copy.deepcopy(list(filters or []))
    found = next((f for f in out if f.get("type") == _MODIFIER), None)
    if found is None:
        found = {"type": _MODIFIER, _modifier_key(): {}}
        out.append(found)
    modifier = found.setdefault(_modifier_key(), {})
    lower = {k.lower() for k in headers}
    kept = [h for h in modifier.get("set") or [] if str(h.get("name", "")).lower() not in lower]
    modifier["set"] = kept + [{"name": k, "value": v} for k, v in headers.items()]
    return out


def _without(filters: Any, name: str) -> list[dict[str, Any]]:
    """`filters` whose ResponseHeaderModifier no longer sets or adds `name`."""
    out = copy.deepcopy(list(filters or []))
    for f in out:
        modifier = f.get(_modifier_key()) if f.get("type") == _MODIFIER else None
        for op in ("set", "add"):
            if modifier and op in modifier:
                kept = [
                    h for h in modifier[op] or [] if str(h.get("name", "")).lower() != name.lower()
                ]
                if kept:
                    modifier[op] = kept
                else:
                    del modifier[op]
    return out


def _modifier_key() -> str:
    return _MODIFIER[0].lower() + _MODIFIER[1:]


def _sets(filters: Any, name: str) -> bool:
    """ResponseHeaderModifier filters that give `name` a value."""
    return any(
        name.lower() == str(h.get("name", "")).lower()
        for f in filters or []
        if f.get("type") == _MODIFIER
        for op in ("set", "add")
        for h in (f.get(_modifier_key()) or {}).get(op) or []
    )
