"""Gateway API HTTPRoutes -> Envoy routes and route status, without processes."""

from __future__ import annotations

from typing import Any

from meshsim.hosts import Endpoint
from meshsim.httpfilters import MISSING_BACKEND_CLUSTER, precedence
from meshsim.httproutes import CONTROLLER_NAME
from meshsim.resources import Resource, parse_documents
from meshsim.spec import load_spec
from meshsim.translate import build_snapshot

V1 = {"app": "frontend", "version": "v1"}
V2 = {"app": "frontend", "version": "v2"}
ENDPOINTS = [
    Endpoint("frontend-v1", "frontend", "default", V1, 1001),
    Endpoint("frontend-v1", "frontend-v1", "default", V1, 1001),
    Endpoint("frontend-v2", "frontend", "default", V2, 1002),
    Endpoint("frontend-v2", "frontend-v2", "default", V2, 1002),
]
GW = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shop}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""


def route(name: str, spec: str, created: str = "") -> Resource:
    text = f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}"
    if created:
        text += f", creationTimestamp: '{created}'"
    text += "}\nspec:\n  parentRefs: [{name: shop}]\n" + spec
    [r] = parse_documents(text, "route.yaml")
    return r


def snapshot(*routes: Resource, gateway: str = GW) -> Any:
    return build_snapshot([*parse_documents(gateway, "gw.yaml"), *routes], ENDPOINTS)


def vhost(snap: Any, host: str = "*") -> dict[str, Any]:
    return next(v for v in snap.routes["virtual_hosts"] if v["name"] == f"httproute/{host}")


def conditions(snap: Any, name: str) -> dict[str, dict[str, Any]]:
    st = next(s for s in snap.route_status if s.route.name == name)
    [parent] = st.parents
    assert parent["controllerName"] == CONTROLLER_NAME
    return {c["type"]: c for c in parent["conditions"]}


def test_weighted_backendrefs_become_weighted_clusters_and_zero_is_dropped() -> None:
    r = route(
        "w",
        "  rules:\n  - backendRefs:\n"
        "    - {name: frontend-v1, port: 80, weight: 70}\n"
        "    - {name: frontend-v2, port: 80, weight: 30}\n"
        "    - {name: frontend, port: 80, weight: 0}\n",
    )
    snap = snapshot(r)
    [envoy] = vhost(snap)["routes"]
    assert envoy["match"] == {"prefix": "/"}
    assert envoy["route"]["weighted_clusters"]["clusters"] == [
        {"name": "frontend-v1", "weight": 70},
        {"name": "frontend-v2", "weight": 30},
    ]
    assert envoy["route"]["timeout"] == "0s"
    assert {c["name"] for c in snap.clusters} >= {"frontend-v1", "frontend-v2", "frontend"}
    assert conditions(snap, "w")["Accepted"]["status"] == "True"
    assert conditions(snap, "w")["ResolvedRefs"]["reason"] == "ResolvedRefs"


def test_precedence_exact_then_longest_prefix_then_method_headers_query_then_age() -> None:
    old = route(
        "old",
        "  rules:\n"
        "  - matches: [{path: {type: PathPrefix, value: /}}]\n"
        "    backendRefs: [{name: frontend-v1, port: 80}]\n"
        "  - matches:\n"
        "    - {path: {type: PathPrefix, value: /cart}, headers: [{name: X-A, value: a}]}\n"
        "    backendRefs: [{name: frontend-v1, port: 80}]\n",
        created="2026-01-01T00:00:00Z",
    )
    new = route(
        "new",
        "  rules:\n"
        "  - matches:\n"
        "    - {path: {type: PathPrefix, value: /cart}, method: POST}\n"
        "    - {path: {type: Exact, value: /cart/checkout}}\n"
        "    - {path: {type: PathPrefix, value: /cart}, queryParams: [{name: q, value: '1'}]}\n"
        "    - {path: {type: PathPrefix, value: /cart/}}\n"
        "    backendRefs: [{name: frontend-v2, port: 80}]\n",
        created="2026-02-01T00:00:00Z",
    )
    routes = vhost(snapshot(new, old))["routes"]
    got = [(r["name"], r["match"]) for r in routes]
    assert got == [
        ("default/new/0", {"path": "/cart/checkout"}),
        (
            "default/new/0",
            {
                "path_separated_prefix": "/cart",
                "headers": [{"name": ":method", "string_match": {"exact": "POST"}}],
            },
        ),
        (
            "default/old/1",
            {
                "path_separated_prefix": "/cart",
                "headers": [{"name": "x-a", "string_match": {"exact": "a"}}],
            },
        ),
        (
            "default/new/0",
            {
                "path_separated_prefix": "/cart",
                "query_parameters": [{"name": "q", "string_match": {"exact": "1"}}],
            },
        ),
        # /cart/ is /cart: after the /cart matches that ask for more.
        ("default/new/0", {"path_separated_prefix": "/cart"}),
        ("default/old/0", {"prefix": "/"}),
    ]
    assert precedence({"path": {"type": "Exact", "value": "/a"}}) < precedence(
        {"path": {"type": "PathPrefix", "value": "/very/long"}}
    )
    assert precedence({"path": {"type": "PathPrefix", "value": "/zz"}}) < precedence(
        {"path": {"type": "RegularExpression", "value": "/.*"}}
    )


def test_hostnames_meet_the_listener_hostname() -> None:
    gw = GW.replace("protocol: HTTP}", "protocol: HTTP, hostname: '*.example.com'}")
    r = route(
        "h",
        "  hostnames: [shop.example.com, other.test]\n"
        "  rules: [{backendRefs: [{name: frontend, port: 80}]}]\n",
    )
    snap = snapshot(r, gateway=gw)
    assert [v["domains"] for v in snap.routes["virtual_hosts"]] == [
        ["shop.example.com", "shop.example.com:*"]
    ]
    none = route("n", "  hostnames: [other.test]\n  rules: [{backendRefs: [{name: frontend}]}]\n")
    c = conditions(snapshot(none, gateway=gw), "n")["Accepted"]
    assert (c["status"], c["reason"]) == ("False", "NoMatchingListenerHostname")


def test_each_filter_translates() -> None:
    r = route(
        "f",
        "  rules:\n"
        "  - matches: [{path: {type: PathPrefix, value: /old}}]\n"
        "    filters:\n"
        "    - type: RequestHeaderModifier\n"
        "      requestHeaderModifier: {set: [{name: x-s, value: s}], add: [{name: x-a, value: a}],"
        " remove: [x-r]}\n"
        "    - type: ResponseHeaderModifier\n"
        "      responseHeaderModifier: {set: [{name: x-version, value: v2}]}\n"
        "    - type: URLRewrite\n"
        "      urlRewrite: {hostname: shop.internal, path: {type: ReplacePrefixMatch,"
        " replacePrefixMatch: /new}}\n"
        "    - type: RequestMirror\n"
        "      requestMirror: {backendRef: {name: frontend-v2, port: 80}, percent: 25}\n"
        "    backendRefs: [{name: frontend-v1, port: 80}]\n"
        "    timeouts: {request: 1500ms}\n"
        "  - matches: [{path: {type: Exact, value: /moved}}]\n"
        "    filters:\n"
        "    - type: RequestRedirect\n"
        "      requestRedirect: {hostname: example.org, statusCode: 301, path: {type: "
        "ReplaceFullPath, replaceFullPath: /here}}\n",
    )
    rewrite, redirect = sorted(vhost(snapshot(r))["routes"], key=lambda e: "redirect" in e)
    assert rewrite["request_headers_to_add"] == [
        {"header": {"key": "x-s", "value": "s"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-a", "value": "a"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"},
    ]
    assert rewrite["request_headers_to_remove"] == ["x-r"]
    assert rewrite["response_headers_to_add"][0]["header"] == {"key": "x-version", "value": "v2"}
    action = rewrite["route"]
    assert action["host_rewrite_literal"] == "shop.internal"
    assert action["prefix_rewrite"] == "/new"
    assert action["timeout"] == "1.5s"
    [mirror] = action["request_mirror_policies"]
    assert mirror["cluster"] == "frontend-v2"
    assert mirror["runtime_fraction"]["default_value"]["numerator"] > 0
    assert redirect["redirect"] == {
        "response_code": "MOVED_PERMANENTLY",
        "host_redirect": "example.org",
        "path_redirect": "/here",
    }
    assert "route" not in redirect


def test_a_missing_backend_keeps_its_share_as_500_and_says_backend_not_found() -> None:
    r = route(
        "m",
        "  rules:\n  - backendRefs:\n"
        "    - {name: frontend-v1, port: 80, weight: 50}\n"
        "    - {name: frontend-v9, port: 80, weight: 50}\n",
    )
    snap = snapshot(r)
    [envoy] = vhost(snap)["routes"]
    assert envoy["route"]["weighted_clusters"]["clusters"][1]["name"] == MISSING_BACKEND_CLUSTER
    assert envoy["route"]["cluster_not_found_response_code"] == "INTERNAL_SERVER_ERROR"
    assert MISSING_BACKEND_CLUSTER not in {c["name"] for c in snap.clusters}
    c = conditions(snap, "m")
    assert c["Accepted"]["status"] == "True"
    assert (c["ResolvedRefs"]["status"], c["ResolvedRefs"]["reason"]) == (
        "False",
        "BackendNotFound",
    )
    assert c["ResolvedRefs"]["message"] == "backend Service default/frontend-v9 not found"
    assert c["ResolvedRefs"]["observedGeneration"] == 1


def test_parent_and_namespace_refusals() -> None:
    lost = route("lost", "  rules: [{backendRefs: [{name: frontend, port: 80}]}]\n")
    lost = Resource(**{**lost.__dict__, "spec": {**lost.spec, "parentRefs": [{"name": "nope"}]}})
    c = conditions(snapshot(lost), "lost")["Accepted"]
    assert (c["status"], c["reason"]) == ("False", "NoMatchingParent")
    other = route("x", "  rules: [{backendRefs: [{name: frontend, port: 80, namespace: shop}]}]\n")
    c = conditions(snapshot(other), "x")["ResolvedRefs"]
    assert (c["status"], c["reason"]) == ("False", "RefNotPermitted")
    all_zero = route("z", "  rules: [{backendRefs: [{name: frontend, port: 80, weight: 0}]}]\n")
    assert vhost(snapshot(all_zero))["routes"][0]["direct_response"] == {"status": 500}


def test_the_default_spec_serves_frontend_v1_and_v2_beside_frontend() -> None:
    spec = load_spec()
    served = {w.name: spec.services_of(w) for w in spec.workloads}
    assert served["frontend-v1"] == ["frontend", "frontend-v1"]
    assert served["frontend-v2"] == ["frontend", "frontend-v2"]
    assert served["cartservice-v1"] == ["cartservice"]


def test_equal_matches_go_to_the_oldest_route_then_by_namespace_and_name() -> None:
    rule = "  rules: [{backendRefs: [{name: frontend-v1, port: 80}]}]\n"
    b_old = route("b", rule, created="2026-01-01T00:00:00Z")
    a_new = route("a", rule, created="2026-03-01T00:00:00Z")
    c_new = route("c", rule, created="2026-03-01T00:00:00Z")
    routes = vhost(snapshot(c_new, a_new, b_old))["routes"]
    assert [r["name"] for r in routes] == ["default/b/0", "default/a/0", "default/c/0"]
