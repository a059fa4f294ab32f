"""The Gateway API kinds through the embedded API alone, with the real kubectl (v1.32, on
PATH: a test that cannot find it fails): apply, get (tables with the CRDs' printer columns),
merge patch, the CRDs' refusals, and GatewayClass served cluster-scoped."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from tests.gateway_api import GROUP, httproute
from tests.kubeapi_thread import ThreadedServer, serve_in_thread
from tests.support import Kubectl, kubectl_runner

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api() -> Iterator[ThreadedServer]:
    with serve_in_thread() as srv:
        yield srv


@pytest.fixture(scope="module")
def kubectl(api: ThreadedServer, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return kubectl_runner(api.url, tmp_path_factory.mktemp("kubectl"))


def test_kubectl_applies_gets_and_patches_an_httproute(kubectl: Kubectl) -> None:
    route = httproute(
        "frontend",
        [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {"name": "frontend-v1", "port": 80, "weight": 100},
                    {"name": "frontend-v2", "port": 80, "weight": 0},
                ],
            }
        ],
        hostnames=["shop.example.com"],
    )
    code, out = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(route))
    assert code == 0, out
    assert f"httproute.{GROUP}/frontend created" in out
    code, out = kubectl("get", "httproutes")
    assert code == 0, out
    assert out.split("\n")[0].split() == ["NAME", "HOSTNAMES", "AGE"]
    assert out.split("\n")[1].split()[:2] == ["frontend", '["shop.example.com"]']
    code, out = kubectl("get", "httproutes", "-o", "yaml")
    assert code == 0, out
    [got] = yaml.safe_load(out)["items"]
    assert got["apiVersion"] == f"{GROUP}/v1" and got["spec"]["hostnames"] == ["shop.example.com"]
    moved = [
        {"name": "frontend-v1", "port": 80, "weight": 30},
        {"name": "frontend-v2", "port": 80, "weight": 70},
    ]
    patch = {"spec": {"rules": [{"backendRefs": moved}]}}
    code, out = kubectl(
        "patch", "httproute", "frontend", "--type", "merge", "-p", json.dumps(patch)
    )
    assert code == 0 and f"httproute.{GROUP}/frontend patched" in out, out
    code, out = kubectl(
        "get", "httproute.v1beta1.gateway.networking.k8s.io", "frontend", "-o", "json"
    )
    assert code == 0, out
    got = json.loads(out)
    assert got["apiVersion"] == f"{GROUP}/v1beta1"
    assert [b["weight"] for b in got["spec"]["rules"][0]["backendRefs"]] == [30, 70]
    assert got["metadata"]["generation"] == 2


def test_kubectl_gets_the_crds_refusal_of_a_bad_httproute(kubectl: Kubectl) -> None:
    bad = httproute("bad", [{"matches": [{"path": {"type": "Glob", "value": "/x"}}]}])
    code, out = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad))
    assert code == 1
    assert "spec.rules[0].matches[0].path.type" in out and 'Unsupported value: "Glob"' in out


def test_gatewayclass_is_served_cluster_scoped_beside_the_namespaced_kinds(
    kubectl: Kubectl,
) -> None:
    code, out = kubectl("api-resources", "--api-group", GROUP)
    assert code == 0, out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert sorted(rows) == ["gatewayclasses", "gateways", "httproutes", "referencegrants"]
    assert rows["gatewayclasses"][-3:] == [f"{GROUP}/v1", "false", "GatewayClass"], rows
    assert rows["httproutes"][-3:] == [f"{GROUP}/v1", "true", "HTTPRoute"], rows
    gateway_class = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": "other", "namespace": "default"},  # dropped, as a cluster does
        "spec": {"controllerName": "example.com/gateway-controller"},
    }
    code, out = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(gateway_class))
    assert code == 0 and f"gatewayclass.{GROUP}/other created" in out, out
    code, out = kubectl("get", "gatewayclass", "other", "-o", "json")
    assert code == 0, out
    got = json.loads(out)
    assert "namespace" not in got["metadata"] and got["metadata"]["generation"] == 1
    code, out = kubectl("get", "gatewayclasses")
    assert code == 0 and out.split("\n")[0].split()[:3] == ["NAME", "CONTROLLER", "ACCEPTED"]
    assert out.split("\n")[1].split()[:2] == ["other", "example.com/gateway-controller"], out
    # a GatewayClass is not found under a namespace, and its schema is the CRD's
    code, out = kubectl("get", "--raw", f"/apis/{GROUP}/v1/namespaces/default/gatewayclasses")
    assert code == 1 and "NotFound" in out, out
    bad = {**gateway_class, "metadata": {"name": "bad"}, "spec": {"controllerName": "no-slash"}}
    code, out = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad))
    assert code == 1 and "spec.controllerName" in out, out
    code, out = kubectl("patch", "gatewayclass", "other", "--type", "merge",
                        "-p", json.dumps({"spec": {"description": "not Istio's"}}))  # fmt: skip
    assert code == 0 and "patched" in out, out
    code, out = kubectl("delete", "gatewayclass", "other")
    assert code == 0 and "deleted" in out, out
    gateway = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gateway",
        "metadata": {"name": "shop"},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
        },
    }
    code, out = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(gateway))
    assert code == 0 and f"gateway.{GROUP}/shop created" in out, out
    code, out = kubectl("get", "gateways.gateway.networking.k8s.io", "shop")
    assert code == 0 and out.split("\n")[0].split()[:3] == ["NAME", "CLASS", "ADDRESS"], out
