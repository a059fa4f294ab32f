"""VirtualServices bound to the ingress Gateway -> one Envoy RouteConfiguration."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from meshcore.errors import ManifestError
from meshcore.kube.istio import resolve_host
from meshsim.clusters import Subsets
from meshsim.envoy_format import problem as format_problem
from meshsim.fields import duration_s, envoy_duration, fraction, percentage
from meshsim.hosts import Endpoint, cluster_name, select
from meshsim.resources import Resource

ROUTE_CONFIG_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
FAULT_FILTER = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
# Istio's retry policy for a route that names none: two retries of connection-level failures
# and 503s. Kept so the embedded gateway retries what an Istio gateway retries.
ISTIO_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
ISTIO_DEFAULT_RETRIES = {
    "retry_on": ISTIO_RETRY_ON,
    "num_retries": 2,
    "retriable_status_codes": [503],
}

Where = tuple[str, str, str]


class RouteBuilder:
    """Translates the routes of VirtualServices, checking every destination on the way."""

    def __init__(self, endpoints: Sequence[Endpoint], subsets: Subsets) -> None:
        self.endpoints = endpoints
        self.subsets = subsets
        self.services = sorted({e.fqdn for e in endpoints})

    def virtual_host(self, vs: Resource, domains: list[str]) -> dict[str, Any]:
        routes: list[dict[str, Any]] = []
        http = vs.spec.get("http") or []
        if not isinstance(http, list) or not http:
            raise ManifestError(
                vs.source,
                vs.ref,
                "spec.http",
                "is empty; give at least one HTTP route (the embedded mesh routes HTTP only)",
            )
        for i, rule in enumerate(http):
            routes.extend(self._routes(vs, rule, f"spec.http[{i}]"))
        return {"name": f"{vs.namespace}/{vs.name}", "domains": domains, "routes": routes}

    def _routes(self, vs: Resource, rule: dict[str, Any], path: str) -> list[dict[str, Any]]:
        def at(field: str) -> Where:
            return (vs.source, vs.ref, f"{path}.{field}")

        action = self._action(vs, rule, path)
        extra: dict[str, Any] = {}
        headers = rule.get("headers") or {}
        extra.update(_header_ops(headers.get("request"), "request", at("headers.request")))
        extra.update(_header_ops(headers.get("response"), "response", at("headers.response")))
        fault = self._fault(rule.get("fault"), at("fault"))
        if fault:
            extra["typed_per_filter_config"] = {FAULT_FILTER: fault}
        matches = rule.get("match") or [{}]
        name = rule.get("name") or f"{vs.name}-{path.rpartition('[')[2].rstrip(']')}"
        return [
            {"name": name, "match": _match(m, at(f"match[{j}]")), "route": action, **extra}
            for j, m in enumerate(matches)
        ]

    def _action(self, vs: Resource, rule: dict[str, Any], path: str) -> dict[str, Any]:
        def at(field: str) -> Where:
            return (vs.source, vs.ref, f"{path}.{field}")

        dests = rule.get("route")
        if not isinstance(dests, list) or not dests:
            raise ManifestError(*at("route"), "names no destination; add one under route:")
        weights = [
            self._weight(d, len(dests), at(f"route[{k}].weight")) for k, d in enumerate(dests)
        ]
        if sum(weights) == 0:
            raise ManifestError(
                *at("route"), "weights sum to 0; give at least one destination a positive weight"
            )
        clusters = []
        for k, (dest, weight) in enumerate(zip(dests, weights, strict=True)):
            name = self._cluster(vs, dest.get("destination"), at(f"route[{k}].destination"))
            entry: dict[str, Any] = {"name": name, "weight": weight}
            h = dest.get("headers") or {}
            for direction in ("request", "response"):
                entry.update(
                    _header_ops(h.get(direction), direction, at(f"route[{k}].headers.{direction}"))
                )
            # Checked all the same: the rollout's next step may give it weight.
            if weight == 0:
                continue  # Envoy refuses a zero-weight entry in some versions; Istio drops it
            clusters.append(entry)
        action: dict[str, Any] = {"weighted_clusters": {"clusters": clusters}}
        timeout = rule.get("timeout")
        action["timeout"] = envoy_duration(duration_s(timeout, at("timeout")) if timeout else 0)
        action["retry_policy"] = _retries(rule.get("retries"), at("retries"))
        if action["retry_policy"] is None:
            del action["retry_policy"]
        mirrors = self._mirrors(vs, rule, at)
        if mirrors:
            action["request_mirror_policies"] = mirrors
        hash_policy = self._hash_policy(vs, dests)
        if hash_policy:
            action["hash_policy"] = hash_policy
        rewrite = rule.get("rewrite") or {}
        if "uri" in rewrite:
            action["prefix_rewrite"] = str(rewrite["uri"])
        if "authority" in rewrite:
            action["host_rewrite_literal"] = str(rewrite["authority"])
        return action

    def _weight(self, dest: Any, count: int, where: Where) -> int:
        if not isinstance(dest, dict):
            raise ManifestError(*where[:2], where[2].rpartition(".")[0], "must be a mapping")
        # Istio: a lone destination takes all traffic; among several, an unset weight is 0.
        value = dest.get("weight", 100 if count == 1 else 0)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ManifestError(*where, f"{value!r} is not an integer")
        if value < 0:
            raise ManifestError(*where, f"{value} is negative; weights are 0 or more")
        return value

    def _cluster(self, vs: Resource, dest: Any, where: Where) -> str:
        if not isinstance(dest, dict) or not dest.get("host"):
            raise ManifestError(*where[:2], f"{where[2]}.host", "is missing; name a service")
        fqdn = resolve_host(str(dest["host"]), vs.namespace)
        if not select(self.endpoints, fqdn):
            raise ManifestError(
                *where[:2],
                f"{where[2]}.host",
                f"no workload serves {fqdn}; known services: {', '.join(self.services)}",
            )
        subset = dest.get("subset")
        if subset is None:
            return cluster_name(fqdn)
        known = self.subsets.names(fqdn)
        if subset not in known:
            defined = ", ".join(known) if known else "none (no DestinationRule for this host)"
            raise ManifestError(
                *where[:2],
                f"{where[2]}.subset",
                f"subset {subset!r} of {fqdn} "
                f"is not defined by any DestinationRule; defined: {defined}",
            )
        return cluster_name(fqdn, subset)

    def _mirrors(self, vs: Resource, rule: dict[str, Any], at: Any) -> list[dict[str, Any]]:
        out = []
        if rule.get("mirror"):
            pct_spec = rule.get("mirrorPercentage", rule.get("mirrorPercent"))
            pct = percentage(pct_spec, at("mirrorPercentage"))
            out.append(
                {
                    "cluster": self._cluster(vs, rule["mirror"], at("mirror")),
                    "runtime_fraction": {"default_value": fraction(pct)},
                }
            )
        for k, m in enumerate(rule.get("mirrors") or []):
            pct = percentage(m.get("percentage"), at(f"mirrors[{k}].percentage"))
            out.append(
                {
                    "cluster": self._cluster(
                        vs, m.get("destination"), at(f"mirrors[{k}].destination")
                    ),
                    "runtime_fraction": {"default_value": fraction(pct)},
                }
            )
        return out

    def _hash_policy(self, vs: Resource, dests: list[Any]) -> list[dict[str, Any]]:
        for dest in dests:
            d = dest.get("destination") or {}
            fqdn = resolve_host(str(d.get("host", "")), vs.namespace)
            lb = self.subsets.traffic_policy(fqdn, d.get("subset")).get("loadBalancer") or {}
            ch = lb.get("consistentHash")
            if not ch:
                continue
            if "httpHeaderName" in ch:
                return [{"header": {"header_name": str(ch["httpHeaderName"])}}]
            if "httpCookie" in ch:
                cookie = ch["httpCookie"] or {}
                policy: dict[str, Any] = {"name": str(cookie.get("name", ""))}
                if "ttl" in cookie:
                    where = (vs.source, vs.ref, "consistentHash.httpCookie.ttl")
                    policy["ttl"] = envoy_duration(duration_s(cookie["ttl"], where))
                if "path" in cookie:
                    policy["path"] = str(cookie["path"])
                return [{"cookie": policy}]
            if "httpQueryParameterName" in ch:
                return [{"query_parameter": {"name": str(ch["httpQueryParameterName"])}}]
        return []

    @staticmethod
    def _fault(fault: Any, where: Where) -> dict[str, Any] | None:
        if not fault:
            return None
        out: dict[str, Any] = {"@type": FAULT_TYPE}
        delay = fault.get("delay")
        if delay:
            d_at = (where[0], where[1], f"{where[2]}.delay")
            pct = percentage(
                delay.get("percentage", delay.get("percent")),
                (d_at[0], d_at[1], f"{d_at[2]}.percentage"),
            )
            if "fixedDelay" not in delay:
                raise ManifestError(*d_at, 'has no fixedDelay; give one, e.g. "100ms"')
            seconds = duration_s(delay["fixedDelay"], (d_at[0], d_at[1], f"{d_at[2]}.fixedDelay"))
            out["delay"] = {"fixed_delay": envoy_duration(seconds), "percentage": fraction(pct)}
        abort = fault.get("abort")
        if abort:
            a_at = (where[0], where[1], f"{where[2]}.abort")
            status = abort.get("httpStatus")
            if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
                raise ManifestError(
                    a_at[0],
                    a_at[1],
                    f"{a_at[2]}.httpStatus",
                    f"{status!r} is not an HTTP status 200-599",
                )
            pct = percentage(abort.get("percentage"), (a_at[0], a_at[1], f"{a_at[2]}.percentage"))
            out["abort"] = {"http_status": status, "percentage": fraction(pct)}
        return out


def _retries(spec: Any, where: Where) -> dict[str, Any] | None:
    if spec is None:
        return dict(ISTIO_DEFAULT_RETRIES)
    attempts = spec.get("attempts", 0)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
        raise ManifestError(
            where[0],
            where[1],
            f"{where[2]}.attempts",
            f"{attempts!r} is not a non-negative integer",
        )
    if attempts == 0:
        return None
    policy: dict[str, Any] = {"num_retries": attempts}
    conditions, codes = [], []
    for cond in str(spec.get("retryOn") or ISTIO_RETRY_ON).split(","):
        cond = cond.strip()
        if cond.isdigit():
            codes.append(int(cond))
        elif cond:
            conditions.append(cond)
    if codes:
        conditions.append("retriable-status-codes")
    elif "retriable-status-codes" in conditions:
        codes = [503]
    policy["retry_on"] = ",".join(dict.fromkeys(conditions))
    if codes:
        policy["retriable_status_codes"] = codes
    if "perTryTimeout" in spec:
        per_try = duration_s(
            spec["perTryTimeout"], (where[0], where[1], f"{where[2]}.perTryTimeout")
        )
        policy["per_try_timeout"] = envoy_duration(per_try)
    return policy


def _string_match(spec: Any, where: Where, ignore_case: bool = False) -> dict[str, Any]:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ManifestError(*where, "must hold exactly one of exact, prefix, regex")
    ((kind, value),) = spec.items()
    if kind == "regex":
        try:
            re.compile(str(value))
        except re.error as exc:
            raise ManifestError(*where, f"regex {value!r} does not compile: {exc}") from None
        return {"safe_regex": {"regex": str(value)}}
    if kind not in ("exact", "prefix"):
        raise ManifestError(*where, f"{kind!r} is not one of exact, prefix, regex")
    out: dict[str, Any] = {kind: str(value)}
    if ignore_case:
        out["ignore_case"] = True
    return out


def _match(spec: Any, where: Where) -> dict[str, Any]:
    def at(field: str) -> Where:
        return (where[0], where[1], f"{where[2]}.{field}")

    if not isinstance(spec, dict):
        raise ManifestError(*where, "must be a mapping")
    out: dict[str, Any] = {"prefix": "/"}
    uri = spec.get("uri")
    if uri:
        sm = _string_match(uri, at("uri"))
        out = (
            {"path": sm["exact"]}
            if "exact" in sm
            else ({"prefix": sm["prefix"]} if "prefix" in sm else {"safe_regex": sm["safe_regex"]})
        )
        if spec.get("ignoreUriCase"):
            out["case_sensitive"] = False
    headers = [
        {"name": name, "string_match": _string_match(m, at(f"headers.{name}"))}
        for name, m in (spec.get("headers") or {}).items()
    ]
    if spec.get("method"):
        headers.append(
            {"name": ":method", "string_match": _string_match(spec["method"], at("method"))}
        )
    if headers:
        out["headers"] = headers
    params = [
        {"name": name, "string_match": _string_match(m, at(f"queryParams.{name}"))}
        for name, m in (spec.get("queryParams") or {}).items()
    ]
    if params:
        out["query_parameters"] = params
    return out


def _header_ops(spec: Any, direction: str, where: Where) -> dict[str, Any]:
    """Istio's set/add/remove as Envoy header options (set overwrites, add appends). Values go
    to Envoy as they are, so `%ENVIRONMENT(POD_NAME)%` (meshcore.stamps) names the replica that
    answers; one Envoy would refuse (a stray `%`, an unknown command) is refused here first."""
    if not spec:
        return {}
    out: dict[str, Any] = {}
    add = []
    for op, action in (("set", "OVERWRITE_IF_EXISTS_OR_ADD"), ("add", "APPEND_IF_EXISTS_OR_ADD")):
        for k, v in (spec.get(op) or {}).items():
            why = format_problem(str(v))
            if why is not None:
                raise ManifestError(where[0], where[1], f"{where[2]}.{op}.{k}", why)
            add.append({"header": {"key": str(k), "value": str(v)}, "append_action": action})
    if add:
        out[f"{direction}_headers_to_add"] = add
    remove = spec.get("remove") or []
    if not isinstance(remove, list):
        raise ManifestError(*where, "remove must be a list of header names")
    if remove:
        out[f"{direction}_headers_to_remove"] = [str(h) for h in remove]
    return out
