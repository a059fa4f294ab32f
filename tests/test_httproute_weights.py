"""HTTPRoute canaries: weights on a rule's backendRefs, the stamp twin rule, its removal, the
refusal fallback and the start-up validation, on the in-memory twin; and once through the
official client on the embedded API."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from meshcore.errors import BackendError, ConfigError
from meshcore.kube import httproute
from meshcore.kube.client import ApiRefusal, MeshClient
from meshcore.stamps import CONFIG_HEADER, REPLICA_HEADER, REPLICA_VALUE, RUN_HEADER, Stamping
from tests.twins import InMemoryMeshClient

TOKEN = "0a1b2c3d"


def route_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "frontend", "namespace": "default", "labels": {"app": "shop"}},
        "spec": {
            "parentRefs": [{"name": "frontend-gateway"}],
            "hostnames": ["*.example.com", "shop.example.com"],
            "rules": [
                {
                    "name": "primary",
                    "filters": [
                        {
                            "type": "ResponseHeaderModifier",
                            "responseHeaderModifier": {"set": [{"name": "x-shop", "value": "a"}]},
                        }
                    ],
                    "backendRefs": [
                        {"name": "frontend-v1", "port": 80, "weight": 100},
                        {"name": "frontend-v2", "port": 80, "weight": 0},
                    ],
                },
                {
                    "name": "cart",
                    "matches": [
                        {"path": {"type": "PathPrefix", "value": "/cart"}, "method": "GET"},
                        {
                            "path": {"type": "Exact", "value": "/basket"},
                            "headers": [{"name": "x-beta", "value": "1"}],
                        },
                    ],  # fmt: skip
                    "backendRefs": [{"name": "frontend-v1", "port": 80}],
                },
            ],
        },
    }


def service(name: str, namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": "frontend", "version": name[-2:]},
                     "ports": [{"port": 80}]}}  # fmt: skip


def objects(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [route_manifest(), service("frontend-v1"), service("frontend-v2"), *extra]


def stored(client: InMemoryMeshClient) -> dict[str, Any]:
    return client.get("HTTPRoute", "default", "frontend")


def weights(route: Mapping[str, Any], index: int) -> dict[str, int]:
    rule = route["spec"]["rules"][index]
    return {b["name"]: b.get("weight", 1) for b in rule["backendRefs"]}


def stamped_route(client: InMemoryMeshClient, rule: str | int = "primary") -> Any:
    route = client.route("frontend", "default", rule, kind="HTTPRoute")
    route.stamping = Stamping(TOKEN, "x-version", replica=True)
    return route


def test_weights_go_on_the_rules_backend_refs_with_409_retries() -> None:
    client = InMemoryMeshClient(objects(), conflicts_to_inject=2)
    route = client.route("frontend", "default", "primary", kind="HTTPRoute")
    assert route.target == "HTTPRoute default/frontend rule primary"
    assert route.subsets() == ["frontend-v1", "frontend-v2"]
    change = route.set_weights({"frontend-v1": 90, "frontend-v2": 10})
    assert change.attempts == 3 and change.requested_ns <= change.accepted_ns
    assert weights(stored(client), 0) == {"frontend-v1": 90, "frontend-v2": 10}
    assert change.resource_version == stored(client)["metadata"]["resourceVersion"]
    assert stored(client)["spec"]["rules"][1] == route_manifest()["spec"]["rules"][1]
    route.set_weights({"frontend-v2": 100})  # a backendRef the plan does not name gets 0
    assert weights(stored(client), 0) == {"frontend-v1": 0, "frontend-v2": 100}
    by_index = client.route("frontend", "default", 1, kind="HTTPRoute")
    by_index.set_weights({"frontend-v1": 5})
    assert weights(stored(client), 1) == {"frontend-v1": 5}
    client.conflicts_to_inject = 10
    with pytest.raises(BackendError, match="HTTPRoute default/frontend: 6 writes got 409"):
        route.set_weights({"frontend-v1": 1})


def test_the_twin_rule_stamps_meshloads_requests_only() -> None:
    client = InMemoryMeshClient(objects())
    route = stamped_route(client)
    route.set_weights({"frontend-v1": 80, "frontend-v2": 20}, step=1)
    rules = stored(client)["spec"]["rules"]
    assert len(rules) == 3 and route.twin == "primary-meshload"
    twin, own = rules[0], rules[1]
    assert twin["name"] == "primary-meshload" and httproute.is_twin(twin)
    run = {"type": "Exact", "name": RUN_HEADER, "value": TOKEN}
    assert twin["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}, "headers": [run]}]
    assert [f["type"] for f in twin["filters"]] == ["ResponseHeaderModifier"]  # one per list
    assert twin["filters"][0]["responseHeaderModifier"]["set"] == [
        {"name": "x-shop", "value": "a"},
        {"name": CONFIG_HEADER, "value": f"{TOKEN}.1"},
        {"name": REPLICA_HEADER, "value": REPLICA_VALUE},
    ]
    for ref in twin["backendRefs"]:
        modifier = {"set": [{"name": "x-version", "value": ref["name"]}]}
        assert ref["filters"] == [{"type": "ResponseHeaderModifier",
                                   "responseHeaderModifier": modifier}]  # fmt: skip
    assert weights({"spec": {"rules": [twin]}}, 0) == {"frontend-v1": 80, "frontend-v2": 20}
    expected = route_manifest()["spec"]["rules"][0]
    expected["backendRefs"][0]["weight"], expected["backendRefs"][1]["weight"] = 80, 20
    assert own == expected, "the user's rule is as written, with the step's weights"
    assert route.stamped == ["frontend-v1", "frontend-v2"]
    route.set_weights({"frontend-v1": 50, "frontend-v2": 50}, step=2)  # the twin is replaced
    rules = stored(client)["spec"]["rules"]
    assert [httproute.is_twin(r) for r in rules] == [True, False, False]
    assert rules[0]["filters"][0]["responseHeaderModifier"]["set"][1]["value"] == f"{TOKEN}.2"
    assert httproute.rule_index(stored(client), 1) == 2, "a twin does not count as a rule"


def test_the_twin_outranks_its_rule_by_one_header_match_per_match() -> None:
    """Gateway API's precedence: equal path and method, then more header matches wins, so
    each twin match is the rule's own plus the run header, whatever the rule's position."""
    client = InMemoryMeshClient(objects())
    route = stamped_route(client, "cart")
    route.set_weights({"frontend-v1": 1}, step=0)
    rules = stored(client)["spec"]["rules"]
    twin, own = rules[1], rules[2]
    assert route.twin == "cart-meshload" and own["name"] == "cart"
    assert len(twin["matches"]) == len(own["matches"]) == 2
    for theirs, ours in zip(own["matches"], twin["matches"], strict=True):
        assert {k: v for k, v in ours.items() if k != "headers"} == {
            k: v for k, v in theirs.items() if k != "headers"
        }
        run = {"type": "Exact", "name": RUN_HEADER, "value": TOKEN}
        assert ours["headers"] == [*(theirs.get("headers") or []), run]


def test_removal_leaves_the_route_field_for_field() -> None:
    client = InMemoryMeshClient(objects())
    route = stamped_route(client)
    route.set_weights({"frontend-v1": 70, "frontend-v2": 30}, step=0)
    route.unstamp()
    after = stored(client)
    expected = route_manifest()
    expected["spec"]["rules"][0]["backendRefs"][0]["weight"] = 70
    expected["spec"]["rules"][0]["backendRefs"][1]["weight"] = 30
    assert after["spec"] == expected["spec"]
    assert {k: v for k, v in after["metadata"].items() if k != "resourceVersion"} == (
        expected["metadata"]
    )
    writes = len(client.writes)
    route.unstamp()  # nothing left to remove: no write
    assert len(client.writes) == writes


def test_a_version_header_the_user_sets_gives_way_to_the_service_name_in_the_twin_only() -> None:
    """The plan names versions by Service; the user's `X-Version: one` stays on their rule."""
    manifest = route_manifest()
    own = {"type": "ResponseHeaderModifier",
           "responseHeaderModifier": {"add": [{"name": "X-Version", "value": "one"}]}}  # fmt: skip
    manifest["spec"]["rules"][0]["backendRefs"][0]["filters"] = [own]
    client = InMemoryMeshClient([manifest, service("frontend-v1"), service("frontend-v2")])
    route = stamped_route(client)
    route.set_weights({"frontend-v1": 50, "frontend-v2": 50}, step=0)
    twin, users = stored(client)["spec"]["rules"][:2]
    assert route.stamped == ["frontend-v1", "frontend-v2"]
    assert twin["backendRefs"][0]["filters"] == [
        {"type": "ResponseHeaderModifier",
         "responseHeaderModifier": {"set": [{"name": "x-version",
                                                         "value": "frontend-v1"}]}}
    ]  # fmt: skip
    assert users["backendRefs"][0]["filters"] == [own]


class RefusingStamps(InMemoryMeshClient):
    """An API whose admission refuses any rule matching meshload's run header."""

    def replace(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        if any(httproute.is_twin(r) for r in (obj.get("spec") or {}).get("rules") or []):
            raise ApiRefusal("Kubernetes API refused to update HTTPRoute: denied", 422, {})
        return super().replace(obj)


def test_a_refused_stamp_falls_back_to_the_weights_alone() -> None:
    client = RefusingStamps(objects())
    route = stamped_route(client)
    change = route.set_weights({"frontend-v1": 60, "frontend-v2": 40}, step=0)
    assert change.weights == {"frontend-v1": 60, "frontend-v2": 40}
    assert route.refused and "denied" in route.refused
    after = stored(client)
    assert not any(httproute.is_twin(r) for r in after["spec"]["rules"])
    assert weights(after, 0) == {"frontend-v1": 60, "frontend-v2": 40}
    route.set_weights({"frontend-v1": 0, "frontend-v2": 100}, step=1)  # no second try
    assert len(client.writes) == 2


def one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_validation_names_the_field_and_the_fix() -> None:
    missing = InMemoryMeshClient([route_manifest(), service("frontend-v1")])
    route = missing.route("frontend", "default", "primary", kind="HTTPRoute")
    with pytest.raises(ConfigError) as err:
        route.check_subsets(["frontend-v1", "frontend-v2"], "p.yaml")
    assert one_line(err) == (
        "HTTPRoute default/frontend: spec.rules[0].backendRefs[1].name: Service "
        "default/frontend-v2 does not exist; create it or fix the name "
        "(kubectl get services -n default)"
    )
    with pytest.raises(ConfigError, match=r"backendRefs\[1\].name: Service default/frontend-v2"):
        route.set_weights({"frontend-v1": 100})
    client = InMemoryMeshClient(objects())
    route = client.route("frontend", "default", "primary", kind="HTTPRoute")
    route.check_subsets(["frontend-v1", "frontend-v2"], "p.yaml")
    with pytest.raises(ConfigError) as err:
        route.check_subsets(["frontend-v1", "v3"], "p.yaml")
    assert one_line(err) == (
        "p.yaml: weights: 'v3' is not a backendRef of HTTPRoute default/frontend rule primary "
        "(its Services: frontend-v1, frontend-v2); fix the plan's weights"
    )
    with pytest.raises(ConfigError, match=r"weight of subset frontend-v1 is -1; give a whole"):
        route.set_weights({"frontend-v1": -1})
    with pytest.raises(ConfigError, match="weights sum to 0; give at least one"):
        route.set_weights({"frontend-v1": 0, "frontend-v2": 0})
    with pytest.raises(ConfigError, match="has no rule 'nope'; its rules: primary, cart"):
        client.route("frontend", "default", "nope", kind="HTTPRoute").subsets()
    with pytest.raises(ConfigError) as err:
        client.route("gone", "default", kind="HTTPRoute").subsets()
    assert "HTTPRoute default/gone not found; fix the plan's route.name" in one_line(err)
    assert client.writes == []


def test_a_backend_ref_that_is_not_a_service_is_refused() -> None:
    manifest = route_manifest()
    manifest["spec"]["rules"][0]["backendRefs"][1] = {
        "group": "networking.istio.io", "kind": "Hostname", "name": "frontend.example.com"
    }  # fmt: skip
    client = InMemoryMeshClient([manifest, service("frontend-v1")])
    with pytest.raises(ConfigError) as err:
        client.route("frontend", "default", kind="HTTPRoute").check_subsets(["frontend-v1"], "p")
    assert one_line(err) == (
        "HTTPRoute default/frontend: spec.rules[0].backendRefs[1] is a Hostname of group "
        "networking.istio.io; give each version a Service of its own"
    )


def test_the_host_header_is_the_first_hostname_without_a_wildcard() -> None:
    assert httproute.authority(route_manifest()) == "shop.example.com"
    assert httproute.authority({"spec": {"hostnames": ["*.example.com"]}}) is None


# -- through the official client, on the embedded API ----------------------------------------
@pytest.mark.integration
def test_weights_and_twin_through_the_kubernetes_client(tmp_path: Path) -> None:
    from meshsim.kubeapi.kubeconfig import write_kubeconfig
    from tests.kubeapi_thread import serve_in_thread

    route = route_manifest()
    for rule in route["spec"]["rules"]:
        rule.pop("name")  # rule names are optional (and newer than v1.0): twins of unnamed rules
    srv = serve_in_thread(
        objects=[route], core_objects=[service("frontend-v1"), service("frontend-v2")]
    )
    try:
        kubeconfig = write_kubeconfig(tmp_path / "config", srv.url)
        with MeshClient.connect(kubeconfig) as mesh:
            assert mesh.service("default", "frontend-v2") is not None
            assert mesh.service("default", "frontend-v9") is None
            weights_of = mesh.route("frontend", "default", 0, kind="HTTPRoute")
            weights_of.check_subsets(["frontend-v1", "frontend-v2"], "p.yaml")
            weights_of.stamping = Stamping(TOKEN, "x-version", replica=True)
            change = weights_of.set_weights({"frontend-v1": 75, "frontend-v2": 25}, 1)
            live = mesh.get("HTTPRoute", "default", "frontend")
            assert live["metadata"]["resourceVersion"] == change.resource_version
            assert [httproute.is_twin(r) for r in live["spec"]["rules"]] == [True, False, False]
            assert weights(live, 1) == {"frontend-v1": 75, "frontend-v2": 25}
            weights_of.unstamp()
            after = mesh.get("HTTPRoute", "default", "frontend")
        expected = copy.deepcopy(route["spec"])
        expected["rules"][0]["backendRefs"][0]["weight"] = 75
        expected["rules"][0]["backendRefs"][1]["weight"] = 25
        assert _without_defaults(after["spec"]) == _without_defaults(expected)
    finally:
        srv.close()


def _without_defaults(spec: Mapping[str, Any]) -> Any:
    """The spec without what a CRD's defaults add (a match's default path, a ref's group and
    kind, a parentRef's group and kind), as the user wrote it."""
    spec = copy.deepcopy(dict(spec))
    for parent in spec.get("parentRefs") or []:
        for key, default in (("group", "gateway.networking.k8s.io"), ("kind", "Gateway")):
            if parent.get(key) == default:
                parent.pop(key)
    for rule in spec.get("rules") or []:
        if rule.get("matches") == [{"path": {"type": "PathPrefix", "value": "/"}}]:
            rule.pop("matches")
        for ref in rule.get("backendRefs") or []:
            for key, default in (("group", ""), ("kind", "Service")):
                if ref.get(key) == default:
                    ref.pop(key)
    return spec


# -- preflight (loadgen.preflight_gateway) -----------------------------------------------------
def gateway_objects(*, accepted: bool = True, class_name: str = "istio") -> list[dict[str, Any]]:
    route = route_manifest()
    condition = {"type": "Accepted", "status": "True" if accepted else "False",
                 "reason": "Accepted" if accepted else "NotAllowedByListeners",
                 "message": "" if accepted else "hostname does not match"}  # fmt: skip
    route["status"] = {"parents": [{"parentRef": {"name": "frontend-gateway"},
                                    "controllerName": httproute.ISTIO_CONTROLLER,
                                    "conditions": [condition]}]}  # fmt: skip
    gateway = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "frontend-gateway", "namespace": "default"},
               "spec": {"gatewayClassName": class_name}}  # fmt: skip
    other = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
             "metadata": {"name": "envoy"},
             "spec": {"controllerName": "envoyproxy.io/x"}}  # fmt: skip
    pods = [{"kind": "Pod", "metadata": {"name": f"frontend-{v}-0", "namespace": "default",
                                         "labels": {"app": "frontend", "version": v}},
             "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
            for v in ("v1",)]  # fmt: skip
    return [route, gateway, other, *pods, service("frontend-v1"), service("frontend-v2")]


def test_preflight_checks_acceptance_class_and_ready_endpoints() -> None:
    from loadgen.preflight import Target, run_checks
    from tests.twins import StaticReader

    def verdicts(objs: list[dict[str, Any]]) -> dict[str, list[str]]:
        target = Target(http_route="frontend", gateway_url=None)
        checks = run_checks(StaticReader(objs), target, probe=lambda *a: (200, {}))
        out: dict[str, list[str]] = {}
        for c in checks:
            out.setdefault(c.name, []).append(c.line())
        return out

    good = verdicts(gateway_objects())
    assert good["parent"] == ["✓ HTTPRoute default/frontend is Accepted by Gateway "
                              "default/frontend-gateway"]  # fmt: skip
    assert good["gatewayclass"] == ["✓ Gateway default/frontend-gateway is of class istio"]
    assert good["backend"][0] == (
        "✓ Service default/frontend-v1 (app=frontend,version=v1): 1 ready endpoint(s)"
    )
    assert good["backend"][1].startswith(
        "✗ Service default/frontend-v2 (app=frontend,version=v2): no ready endpoint — fix:"
    )
    assert "virtualservice" not in good and good["access"][0].startswith("✓")
    bad = verdicts(gateway_objects(accepted=False, class_name="envoy"))
    assert bad["parent"] == [
        "✗ HTTPRoute default/frontend is not Accepted by Gateway default/frontend-gateway "
        "(NotAllowedByListeners: hostname does not match) — fix: kubectl describe httproute "
        "-n default frontend (status.parents)"
    ]
    assert bad["gatewayclass"] == [
        "✗ Gateway default/frontend-gateway is of class envoy (controller envoyproxy.io/x), "
        "not Istio's — fix: set its spec.gatewayClassName: istio"
    ]
    missing = verdicts([o for o in gateway_objects() if o["kind"] != "Service"])
    assert missing["backend"][0].startswith(
        "✗ HTTPRoute default/frontend spec.rules[0].backendRefs[0]: Service default/frontend-v1 "
        "does not exist — fix: create it"
    )
    gone = verdicts([o for o in gateway_objects() if o["kind"] != "HTTPRoute"])
    assert gone["httproute"][0].startswith("✗ HTTPRoute default/frontend not found")


def test_preflight_finds_the_service_istio_deploys_for_the_gateway() -> None:
    """Istio's automated deployment serves a Gateway from `<gateway>-istio` in its namespace:
    preflight probes that Service's address; without it, istio-ingressgateway's."""
    from loadgen.preflight import Target, run_checks
    from tests.twins import StaticReader

    deployed = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "frontend-gateway-istio", "namespace": "default"},
                "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}  # fmt: skip
    target = Target(http_route="frontend", gateway_url=None)
    probed: list[str] = []

    def probe(url: str, headers: Any, timeout_s: float) -> tuple[int, dict[str, str]]:
        probed.append(url)
        return 200, {}

    checks = run_checks(StaticReader([*gateway_objects(), deployed]), target, probe=probe)
    [ingress] = [c.line() for c in checks if c.name == "ingress"]
    assert ingress.startswith("✓ ingress gateway Service default/frontend-gateway-istio at "
                              "http://203.0.113.7"), ingress  # fmt: skip
    assert probed == ["http://203.0.113.7:80/"], probed
    checks = run_checks(StaticReader(gateway_objects()), target, probe=probe)
    [ingress] = [c.line() for c in checks if c.name == "ingress"]
    assert "istio-system/istio-ingressgateway" in ingress, ingress


def test_workload_versions_name_the_plans_versions_by_their_pods_labels() -> None:
    """An HTTPRoute's backends by their Services' selectors; a VirtualService's subsets by
    their DestinationRule's labels (Argo-style `stable`/`canary` over v1/v2)."""
    client = InMemoryMeshClient(objects())
    assert client.route("frontend", "default", "primary", kind="HTTPRoute").workload_versions() == {
        "frontend-v1": "v1", "frontend-v2": "v2"
    }  # fmt: skip
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "frontend", "namespace": "default"},
          "spec": {"hosts": ["frontend"], "http": [{"name": "primary", "route": [
              {"destination": {"host": "frontend", "subset": "stable"}, "weight": 100},
              {"destination": {"host": "frontend.default.svc.cluster.local", "subset": "canary"},
               "weight": 0}]}]}}  # fmt: skip
    dr = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
          "metadata": {"name": "frontend", "namespace": "default"},
          "spec": {"host": "frontend.default.svc.cluster.local", "subsets": [
              {"name": "stable", "labels": {"version": "v1"}},
              {"name": "canary", "labels": {"version": "v2"}},
              {"name": "unused", "labels": {"version": "v9"}}]}}  # fmt: skip
    other = {**dr, "metadata": {"name": "cart", "namespace": "default"},
             "spec": {"host": "cartservice", "subsets": [{"name": "stable", "labels": {"version": "x"}}]}}  # fmt: skip  # noqa: E501
    client = InMemoryMeshClient([vs, dr, other])
    found = client.route("frontend", "default", "primary").workload_versions()
    assert found == {"stable": "v1", "canary": "v2"}, found
