"""One HTTPRoute rule match -> one Envoy route: matches, backendRefs and filters, as Istio's
gateway controller translates them.

A backendRef that does not resolve keeps its share of the weight and points at a cluster that
does not exist, answered 500 (`cluster_not_found_response_code`), as Istio does; a rule whose
weights are all 0 (or that has no backendRefs) answers 500 itself, as the Gateway API says.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from meshcore.durations import DurationError, parse_duration_ns
from meshcore.errors import ManifestError
from meshsim.envoy_format import problem as format_problem
from meshsim.fields import envoy_duration, fraction
from meshsim.resources import Resource
from meshsim.routes import ISTIO_DEFAULT_RETRIES

# Resolves a backendRef at a field path to an Envoy cluster name, or None when it does not
# resolve (the status says why).
Resolve = Callable[[dict[str, Any]], str | None]

MISSING_BACKEND_CLUSTER = "gateway-api-backend-not-found"
_REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}


def envoy_match(match: dict[str, Any]) -> dict[str, Any]:
    """A Gateway API HTTPRouteMatch as an Envoy RouteMatch; the absent path is PathPrefix /."""
    path = match.get("path") or {}
    kind, value = path.get("type", "PathPrefix"), str(path.get("value", "/"))
    out: dict[str, Any]
    if kind == "Exact":
        out = {"path": value}
    elif kind == "RegularExpression":
        out = {"safe_regex": {"regex": value}}
    elif value.rstrip("/") == "":
        out = {"prefix": "/"}
    else:
        # `/shop` matches /shop and /shop/cart, never /shopping: a prefix of path elements.
        out = {"path_separated_prefix": value.rstrip("/")}
    headers = [
        {"name": str(h["name"]).lower(), "string_match": _string_match(h)}
        for h in match.get("headers") or []
    ]
    if match.get("method"):
        headers.append({"name": ":method", "string_match": {"exact": str(match["method"])}})
    if headers:
        out["headers"] = headers
    params = [
        {"name": str(q["name"]), "string_match": _string_match(q)}
        for q in match.get("queryParams") or []
    ]
    if params:
        out["query_parameters"] = params
    return out


def _string_match(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("type", "Exact") == "RegularExpression":
        return {"safe_regex": {"regex": str(spec["value"])}}
    return {"exact": str(spec["value"])}


def precedence(match: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """Sort key of the Gateway API's match precedence (smaller first), as Istio orders it: exact
    path, then prefix, then regular expression, each longest first; then a method; then the
    most headers; then the most query parameters."""
    path = match.get("path") or {}
    rank = {"Exact": 0, "PathPrefix": 1, "RegularExpression": 2}[path.get("type", "PathPrefix")]
    return (
        rank,
        -len(str(path.get("value", "/")).rstrip("/")),  # /cart/ is /cart
        0 if match.get("method") else 1,
        -len(match.get("headers") or []),
        -len(match.get("queryParams") or []),
    )


class RuleTranslator:
    """The Envoy route of one rule's match, with every filter of the rule.

    A CORS filter is not simulated (no CORS headers are added): `notes` says so. An ExtensionRef
    filter names a filter the embedded mesh does not have; as the Gateway API requires of a
    filter that cannot be resolved, its rule answers 500 rather than skip it, and `unresolved`
    gives the ResolvedRefs reason and message."""

    def __init__(self, route: Resource, resolve: Resolve) -> None:
        self.route = route
        self.resolve = resolve
        self.notes: list[str] = []
        self.unresolved: tuple[str, str] | None = None

    def envoy_route(self, rule: dict[str, Any], i: int, match: dict[str, Any]) -> dict[str, Any]:
        at = f"spec.rules[{i}]"
        name = str(rule.get("name") or f"{self.route.namespace}/{self.route.name}/{i}")
        out: dict[str, Any] = {"name": name, "match": envoy_match(match)}
        redirect: dict[str, Any] | None = None
        rewrite: dict[str, Any] = {}
        mirrors: list[dict[str, Any]] = []
        broken = False
        for k, f in enumerate(rule.get("filters") or []):
            kind = f.get("type")
            where = f"{at}.filters[{k}]"
            if kind == "ExtensionRef":
                broken = True
                ext = f.get("extensionRef") or {}
                named = f"{ext.get('group')}/{ext.get('kind')} {ext.get('name')}"
                why = f"{where}: ExtensionRef {named} is not a filter the embedded mesh has"
                self.unresolved = ("InvalidKind", why)
            elif kind == "CORS":
                said = f"{self.route.ref}: {where}: CORS is not simulated (no CORS headers)"
                if said not in self.notes:
                    self.notes.append(said)
            if kind == "RequestHeaderModifier":
                out.update(self._headers(f.get("requestHeaderModifier"), "request", where))
            elif kind == "ResponseHeaderModifier":
                out.update(self._headers(f.get("responseHeaderModifier"), "response", where))
            elif kind == "RequestRedirect":
                redirect = _redirect(f.get("requestRedirect") or {}, match)
            elif kind == "URLRewrite":
                rewrite = _rewrite(f.get("urlRewrite") or {}, match)
            elif kind == "RequestMirror":
                mirror = self._mirror(f.get("requestMirror") or {})
                if mirror is not None:
                    mirrors.append(mirror)
        if broken:
            out["direct_response"] = {"status": 500}
            return out
        if redirect is not None:
            out["redirect"] = redirect
            return out
        action = self._backends(rule.get("backendRefs") or [], at)
        if action is None:
            out["direct_response"] = {"status": 500}
            return out
        action["timeout"] = envoy_duration(self._timeout(rule, at))
        action["retry_policy"] = dict(ISTIO_DEFAULT_RETRIES)
        action.update(rewrite)
        if mirrors:
            action["request_mirror_policies"] = mirrors
        out["route"] = action
        return out

    def _backends(self, refs: list[dict[str, Any]], at: str) -> dict[str, Any] | None:
        clusters = []
        missing = False
        for k, ref in enumerate(refs):
            weight = int(ref.get("weight", 1))
            name = self.resolve(ref)
            if name is None:
                name, missing = MISSING_BACKEND_CLUSTER, True
            entry: dict[str, Any] = {"name": name, "weight": weight}
            for m, f in enumerate(ref.get("filters") or []):  # per backend: header modifiers
                where = f"{at}.backendRefs[{k}].filters[{m}]"
                for direction in ("request", "response"):
                    entry.update(
                        self._headers(f.get(f"{direction}HeaderModifier"), direction, where)
                    )
            if weight > 0:
                clusters.append(entry)
        if not clusters:
            return None
        action: dict[str, Any] = {"weighted_clusters": {"clusters": clusters}}
        if missing:
            action["cluster_not_found_response_code"] = "INTERNAL_SERVER_ERROR"
        return action

    def _mirror(self, spec: dict[str, Any]) -> dict[str, Any] | None:
        cluster = self.resolve(spec.get("backendRef") or {})
        if cluster is None:
            return None
        if "fraction" in spec:
            frac = spec["fraction"]
            percent = 100.0 * frac["numerator"] / frac.get("denominator", 100)
        else:
            percent = float(spec.get("percent", 100))
        return {"cluster": cluster, "runtime_fraction": {"default_value": fraction(percent)}}

    def _timeout(self, rule: dict[str, Any], at: str) -> float:
        text = (rule.get("timeouts") or {}).get("request")
        if not text:
            return 0.0  # Istio: no request timeout unless one is given
        try:
            return parse_duration_ns(str(text)) / 1e9
        except DurationError as exc:
            raise ManifestError(
                self.route.source, self.route.ref, f"{at}.timeouts.request", str(exc)
            ) from None

    def _headers(self, spec: Any, direction: str, where: str) -> dict[str, Any]:
        if not spec:
            return {}
        add = []
        for op, action in (
            ("set", "OVERWRITE_IF_EXISTS_OR_ADD"),
            ("add", "APPEND_IF_EXISTS_OR_ADD"),
        ):
            for k, h in enumerate(spec.get(op) or []):
                value = str(h["value"])
                why = format_problem(value)
                if why is not None:
                    field = f"{where}.{direction}HeaderModifier.{op}[{k}].value"
                    raise ManifestError(self.route.source, self.route.ref, field, why)
                entry = {"key": str(h["name"]), "value": value}
                add.append({"header": entry, "append_action": action})
        out: dict[str, Any] = {}
        if add:
            out[f"{direction}_headers_to_add"] = add
        if spec.get("remove"):
            out[f"{direction}_headers_to_remove"] = [str(h) for h in spec["remove"]]
        return out


def _prefix_replaced(match: dict[str, Any], replacement: str) -> dict[str, Any]:
    """ReplacePrefixMatch as the Gateway API defines it: the matched prefix, by path element,
    replaced, with one `/` between the replacement and the rest (`/foo` -> `/` makes
    `/foo/bar` `/bar`; Envoy's prefix_rewrite alone would give `//bar`)."""
    prefix = str((match.get("path") or {}).get("value", "/")).rstrip("/")
    if not replacement.endswith("/"):
        return {"prefix_rewrite": replacement}
    return {
        "regex_rewrite": {
            "pattern": {"regex": f"^{re.escape(prefix)}/*"},
            "substitution": replacement,
        }
    }


def _redirect(spec: dict[str, Any], match: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"response_code": _REDIRECT_CODES[int(spec.get("statusCode", 302))]}
    if "scheme" in spec:
        out["scheme_redirect"] = str(spec["scheme"])
    if "hostname" in spec:
        out["host_redirect"] = str(spec["hostname"])
    if "port" in spec:
        out["port_redirect"] = int(spec["port"])
    path = spec.get("path") or {}
    if path.get("type") == "ReplaceFullPath":
        out["path_redirect"] = str(path["replaceFullPath"])
    elif path.get("type") == "ReplacePrefixMatch":
        out.update(_prefix_replaced(match, str(path["replacePrefixMatch"])))
    return out


def _rewrite(spec: dict[str, Any], match: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "hostname" in spec:
        out["host_rewrite_literal"] = str(spec["hostname"])
    path = spec.get("path") or {}
    if path.get("type") == "ReplaceFullPath":
        out["regex_rewrite"] = {
            "pattern": {"regex": "^/.*$"},
            "substitution": str(path["replaceFullPath"]),
        }
    elif path.get("type") == "ReplacePrefixMatch":
        out.update(_prefix_replaced(match, str(path["replacePrefixMatch"])))
    return out
