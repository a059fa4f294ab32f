"""The Gateway API on the running mesh, with the real Envoy and the real kubectl.

kubectl (v1.32) must be on PATH: a test that cannot find it fails. Weighted shares are checked
as the Gateway API conformance suite's weight test does: every backend within 3 binomial
standard errors of its share over >= 10,000 requests, and none for a 0-weight backend.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from meshsim.apply import wait_applied
from meshsim.mesh import Mesh
from meshsim.resources import load_manifests, parse_documents
from tests.gateway_api import CANARY, GROUP, ask, httproute, wait_for, workload_of
from tests.support import Kubectl, hammer, kubectl_runner, within_se

pytestmark = pytest.mark.integration

# -- the running mesh, with the real Envoy -----------------------------------------------------
ROUTES = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matches}
spec:
  parentRefs: [{name: frontend-gateway}]
  hostnames: [match.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: frontend-v1, port: 80}]
  - matches: [{path: {type: Exact, value: /_healthz}, headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: frontend-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /}, queryParams: [{name: v, value: "2"}]}]
    backendRefs: [{name: frontend-v2, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters}
spec:
  parentRefs: [{name: frontend-gateway}]
  hostnames: [filters.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /logout}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: Cookie, value: gw=1}]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-filtered, value: "yes"}]}
    backendRefs: [{name: frontend-v1, port: 80}]
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        hostname: shop.test
        statusCode: 301
        path: {type: ReplaceFullPath, replaceFullPath: /new}
  - matches: [{path: {type: PathPrefix, value: /renamed}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /_healthz}}
    backendRefs: [{name: frontend-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /strip}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: frontend-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /mirrored}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /_healthz}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: frontend-v2, port: 80}}
    backendRefs: [{name: frontend-v1, port: 80}]
"""


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    manifests = load_manifests(CANARY) + parse_documents(ROUTES, "routes.yaml")
    with Mesh(manifests=manifests, prometheus=False, tracing=False) as m:
        yield m


@pytest.fixture(scope="module")
def mesh_kubectl(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return kubectl_runner(mesh.api_url, tmp_path_factory.mktemp("mesh-kubectl"))


def patch_weights(kubectl: Kubectl, mesh: Mesh, refs: list[dict[str, Any]]) -> None:
    """`kubectl patch --type merge`, then wait until the gateway serves that resourceVersion
    (the control plane answers first and pushes right after)."""
    patch = {"spec": {"rules": [{"name": "primary", "backendRefs": refs}]}}
    code, out = kubectl(
        "patch", "httproute", "frontend", "--type", "merge", "-p", json.dumps(patch), "-o", "json"
    )
    assert code == 0, out
    wait_applied(mesh.applied_file, int(json.loads(out)["metadata"]["resourceVersion"]))


def test_the_canary_manifest_serves_frontend_v1_alone(mesh: Mesh) -> None:
    tally = hammer(mesh.gateway_url + "/_healthz", 500, header="x-workload")
    assert tally.statuses == {200: 500} and tally.header == {"frontend-v1": 500}
    assert ask(mesh, "/_healthz", "shop.example").getheader("x-version") == "frontend-v1"


def test_weights_70_30_0_hold_within_3_standard_errors_and_patch_moves_them(
    mesh: Mesh, mesh_kubectl: Kubectl
) -> None:
    refs = [
        {"name": "frontend-v1", "port": 80, "weight": 70},
        {"name": "frontend-v2", "port": 80, "weight": 30},
        {"name": "currencyservice", "port": 80, "weight": 0},
    ]
    patch_weights(mesh_kubectl, mesh, refs)
    n = 10_000
    tally = hammer(mesh.gateway_url + "/_healthz", n, header="x-workload")
    assert tally.statuses == {200: n}
    assert within_se(tally.header["frontend-v1"], n, 0.7), tally.header
    assert within_se(tally.header["frontend-v2"], n, 0.3), tally.header
    assert tally.header["currencyservice-v1"] == 0, tally.header
    print(f"70/30/0 over {n}: {dict(tally.header)}")
    for r, w in zip(refs, (0, 0, 100), strict=True):
        r["weight"] = w
    patch_weights(mesh_kubectl, mesh, refs)
    tally = hammer(mesh.gateway_url + "/_healthz", 1000, header="x-workload")
    assert tally.header == {"currencyservice-v1": 1000}, tally.header
    refs[0]["weight"], refs[2]["weight"] = 100, 0
    patch_weights(mesh_kubectl, mesh, refs)


def test_matches_follow_the_gateway_api_precedence(mesh: Mesh, mesh_kubectl: Kubectl) -> None:
    assert workload_of(mesh, "/_healthz", "match.test") == "frontend-v1"
    assert workload_of(mesh, "/_healthz", "match.test", **{"x-canary": "yes"}) == "frontend-v2"
    assert workload_of(mesh, "/_healthz?v=2", "match.test") == "frontend-v2"
    assert workload_of(mesh, "/robots.txt", "match.test", **{"x-canary": "yes"}) == "frontend-v1"
    # An equal match of a newer route loses to the older route's, whatever its name.
    time.sleep(1.1)  # creationTimestamp counts seconds
    newer = httproute(
        "a-newer",
        [
            {
                "matches": [
                    {
                        "path": {"type": "Exact", "value": "/_healthz"},
                        "headers": [{"name": "x-canary", "value": "yes"}],
                    }
                ],
                "backendRefs": [{"name": "currencyservice", "port": 80}],
            },
            {
                "matches": [{"path": {"type": "Exact", "value": "/robots.txt"}}],
                "backendRefs": [{"name": "currencyservice", "port": 80}],
            },
        ],
        hostnames=["match.test"],
    )
    newer["spec"]["parentRefs"] = [{"name": "frontend-gateway"}]
    code, out = mesh_kubectl("apply", "-f", "-", stdin=yaml.safe_dump(newer))
    assert code == 0, out
    until = time.monotonic() + 10
    while workload_of(mesh, "/robots.txt", "match.test") != "currencyservice-v1":
        assert time.monotonic() < until, "the newer route never took effect"
        time.sleep(0.05)
    assert workload_of(mesh, "/_healthz", "match.test", **{"x-canary": "yes"}) == "frontend-v2"
    mesh_kubectl("delete", "httproute", "a-newer")


def test_each_filter_acts_in_envoy(mesh: Mesh) -> None:
    resp = ask(mesh, "/logout", "filters.test")
    assert resp.status == 302 and resp.getheader("x-filtered") == "yes"
    # The frontend expires every cookie it was sent: the one the filter set.
    assert "gw=1; Expires=" in resp.getheader("Set-Cookie", "")
    resp = ask(mesh, "/old", "filters.test")
    assert (resp.status, resp.getheader("Location")) == (301, "http://shop.test/new")
    resp = ask(mesh, "/renamed/anything", "filters.test")
    assert resp.status == 200 and resp.getheader("x-workload") == "frontend-v1"
    # the prefix replaced by `/`: /strip/_healthz reaches /_healthz (not //_healthz)
    assert ask(mesh, "/strip/_healthz", "filters.test").status == 200
    assert ask(mesh, "/strip//_healthz", "filters.test").status == 200
    assert ask(mesh, "/_healthz/strip", "filters.test").status == 404
    admin = mesh.gateway.replicas[0].admin_url if mesh.gateway else ""

    def mirrored() -> int:
        url = f"{admin}/stats?filter=^cluster.frontend-v2.upstream_rq_total$"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        return int(text.split(":")[1]) if ":" in text else 0

    before = mirrored()
    for _ in range(20):
        resp = ask(mesh, "/mirrored", "filters.test")
        assert resp.status == 200 and resp.getheader("x-workload") == "frontend-v1"
    until = time.monotonic() + 5
    while mirrored() - before < 20 and time.monotonic() < until:
        time.sleep(0.05)
    assert mirrored() - before == 20


def test_a_missing_backend_answers_500_for_its_share_and_the_status_says_why(
    mesh: Mesh, mesh_kubectl: Kubectl
) -> None:
    broken = httproute(
        "broken",
        [
            {
                "backendRefs": [
                    {"name": "frontend-v1", "port": 80, "weight": 50},
                    {"name": "frontend-v9", "port": 80, "weight": 50},
                ]
            }
        ],
        hostnames=["broken.test"],
    )
    broken["spec"]["parentRefs"] = [{"name": "frontend-gateway"}]
    code, out = mesh_kubectl("apply", "-f", "-", stdin=yaml.safe_dump(broken))
    assert code == 0, out
    n = 2000
    until = time.monotonic() + 10
    while ask(mesh, "/_healthz", "broken.test").status == 404:
        assert time.monotonic() < until
        time.sleep(0.05)
    tally = hammer(mesh.gateway_url + "/_healthz", n, headers={"Host": "broken.test"})
    assert set(tally.statuses) == {200, 500}
    assert within_se(tally.statuses[500], n, 0.5), tally.statuses
    print(f"50/50 with a missing backend over {n}: {dict(tally.statuses)}")
    # The controller wrote why: the route is Accepted, its refs are not resolved.
    until = time.monotonic() + 10
    while True:
        code, out = mesh_kubectl("get", "httproute", "broken", "-o", "json")
        assert code == 0, out
        parents = (json.loads(out).get("status") or {}).get("parents") or []
        if parents or time.monotonic() > until:
            break
        time.sleep(0.1)
    (parent,) = parents
    assert parent["controllerName"] == "istio.io/gateway-controller"
    assert parent["parentRef"]["name"] == "frontend-gateway"
    conditions = {c["type"]: c for c in parent["conditions"]}
    assert conditions["Accepted"]["status"] == "True"
    refs = conditions["ResolvedRefs"]
    assert (refs["status"], refs["reason"]) == ("False", "BackendNotFound"), refs
    assert "frontend-v9" in refs["message"] and refs["observedGeneration"] == 1
    assert refs["lastTransitionTime"].endswith("Z")
    # Fixed, the route's refs resolve; Accepted keeps its transition time.
    broken["spec"]["rules"][0]["backendRefs"][1]["name"] = "frontend-v2"
    code, out = mesh_kubectl("apply", "-f", "-", stdin=yaml.safe_dump(broken))
    assert code == 0, out
    until = time.monotonic() + 10
    while True:
        code, out = mesh_kubectl("get", "httproute", "broken", "-o", "json")
        fixed = {c["type"]: c for c in json.loads(out)["status"]["parents"][0]["conditions"]}
        if fixed["ResolvedRefs"]["status"] == "True" or time.monotonic() > until:
            break
        time.sleep(0.1)
    assert (
        fixed["ResolvedRefs"]["status"] == "True"
        and fixed["ResolvedRefs"]["observedGeneration"] == 2
    )
    assert fixed["Accepted"]["lastTransitionTime"] == conditions["Accepted"]["lastTransitionTime"]


def test_istio_runs_its_own_gatewayclass_and_no_other_controllers(
    mesh: Mesh, mesh_kubectl: Kubectl
) -> None:
    def accepted(name: str) -> dict[str, Any] | None:
        code, out = mesh_kubectl("get", "gatewayclass", name, "-o", "json")
        assert code == 0, out
        conditions = (json.loads(out).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Accepted"), None)

    istio = wait_for(lambda: accepted("istio"))
    assert istio and (istio["status"], istio["reason"]) == ("True", "Accepted"), istio
    assert istio["message"] == "Handled by Istio controller" and istio["observedGeneration"] == 1
    code, out = mesh_kubectl("get", "gatewayclasses")
    assert code == 0 and out.splitlines()[1].split()[:3] == [
        "istio", "istio.io/gateway-controller", "True"
    ], out  # fmt: skip
    # a Gateway of another controller's class is not Istio's: its routes are not served
    foreign = f"""
apiVersion: {GROUP}/v1
kind: GatewayClass
metadata: {{name: elsewhere}}
spec: {{controllerName: example.com/gateway-controller}}
---
apiVersion: {GROUP}/v1
kind: Gateway
metadata: {{name: foreign}}
spec:
  gatewayClassName: elsewhere
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: {GROUP}/v1
kind: HTTPRoute
metadata: {{name: foreign}}
spec:
  parentRefs: [{{name: foreign}}]
  hostnames: [foreign.test]
  rules: [{{backendRefs: [{{name: frontend-v2, port: 80}}]}}]
"""
    code, out = mesh_kubectl("apply", "-f", "-", stdin=foreign)
    assert code == 0, out

    def parent_accepted() -> dict[str, Any] | None:
        code, out = mesh_kubectl("get", "httproute", "foreign", "-o", "json")
        parents = (json.loads(out).get("status") or {}).get("parents") or []
        return next((c for p in parents for c in p["conditions"] if c["type"] == "Accepted"), None)

    said = wait_for(parent_accepted)
    assert said and (said["status"], said["reason"]) == ("False", "NoMatchingParent"), said
    # foreign.test falls to the canary route, which serves every host: frontend-v1
    assert workload_of(mesh, "/_healthz", "foreign.test") == "frontend-v1"
    assert accepted("elsewhere") is None  # another controller's to accept
    # a class of Istio's controller under another name is Istio's: the route is served
    # (applied the way `meshload mesh apply` applies, which names a Gateway API Gateway apart
    # from Istio's and writes a GatewayClass at its cluster-scoped path)
    mine = foreign.replace("example.com/gateway-controller", "istio.io/gateway-controller")
    mesh.apply(parse_documents(mine, "mine.yaml"))
    assert wait_for(lambda: workload_of(mesh, "/_healthz", "foreign.test") == "frontend-v2")
    assert (wait_for(lambda: accepted("elsewhere")) or {}).get("status") == "True"

    def gateway_status() -> dict[str, Any] | None:
        code, out = mesh_kubectl("get", f"gateways.{GROUP}", "foreign", "-o", "json")
        return (json.loads(out).get("status") or {}).get("listeners") and json.loads(out)

    got = wait_for(gateway_status)
    assert got, "the controller writes the Gateway's status"
    status = got["status"]
    assert status["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Accepted": "True", "Programmed": "True"}, status
    [listener] = status["listeners"]
    assert (listener["name"], listener["attachedRoutes"]) == ("http", 1), listener
    code, out = mesh_kubectl("get", f"gateways.{GROUP}", "foreign")
    assert code == 0 and out.splitlines()[1].split()[:4] == [
        "foreign", "elsewhere", "127.0.0.1", "True"
    ], out  # fmt: skip
    mesh_kubectl("delete", "httproute", "foreign")
    mesh_kubectl("delete", "gateways.gateway.networking.k8s.io", "foreign")
    mesh_kubectl("delete", "gatewayclass", "elsewhere")


def test_an_extension_filter_answers_500_and_cors_is_named_as_not_simulated(
    mesh: Mesh, mesh_kubectl: Kubectl
) -> None:
    route = httproute(
        "extended",
        [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "filters": [
                    {"type": "CORS", "cors": {"allowOrigins": ["https://shop.test"]}},
                    {
                        "type": "ExtensionRef",
                        "extensionRef": {"group": "example.com", "kind": "Auth", "name": "jwt"},
                    },
                ],
                "backendRefs": [{"name": "frontend-v1", "port": 80}],
            }
        ],
        hostnames=["extended.test"],
    )
    route["spec"]["parentRefs"] = [{"name": "frontend-gateway"}]
    code, out = mesh_kubectl("apply", "-f", "-", stdin=yaml.safe_dump(route))
    assert code == 0, out
    assert "CORS is not simulated" in out and "HTTPRoute default/extended" in out, out
    # a filter that cannot be resolved is not skipped: its requests get an error
    assert wait_for(lambda: ask(mesh, "/_healthz", "extended.test").status == 500)

    def refs() -> dict[str, Any] | None:
        code, out = mesh_kubectl("get", "httproute", "extended", "-o", "json")
        parents = (json.loads(out).get("status") or {}).get("parents") or []
        found = [c for p in parents for c in p["conditions"] if c["type"] == "ResolvedRefs"]
        return found[0] if found and found[0]["status"] == "False" else None

    said = wait_for(refs)
    assert said and said["reason"] == "InvalidKind", said
    assert "example.com/Auth jwt" in said["message"], said
    mesh_kubectl("delete", "httproute", "extended")
