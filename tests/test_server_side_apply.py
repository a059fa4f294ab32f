"""Server-side apply on the embedded API: field sets and merging on their own, then the real
kubectl (`apply --server-side`, `patch --field-manager`) and the weight client against it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshcore.errors import ManifestError
from meshcore.kube.client import MeshClient
from meshsim.kubeapi import apply_patch
from meshsim.kubeapi import managed_fields as mf
from meshsim.kubeapi.crds import CRD_FILE, load_catalog
from meshsim.kubeapi.kubeconfig import write_kubeconfig
from tests.canary_manifests import by_kind, weights_of
from tests.kubeapi_thread import ThreadedServer, serve_in_thread

KUBECTL = shutil.which("kubectl")
VS_URL = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"
PORTS = {  # a list-map, as ServiceEntry's ports are
    "type": "object",
    "properties": {
        "ports": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["number"],
            "items": {"type": "object", "properties": {"number": {}, "name": {}}},
        },
        "hosts": {"type": "array", "items": {"type": "string"}},
    },
}


def test_a_virtual_service_owns_its_spec_fields_and_atomic_lists_whole() -> None:
    rtype = load_catalog(CRD_FILE).by_kind("networking.istio.io", "VirtualService")
    assert rtype is not None
    schema = mf.object_schema(rtype.schemas["v1"])
    vs = by_kind("VirtualService")
    vs["metadata"]["labels"] = {"app": "frontend"}
    fields = mf.encode(mf.values(vs, schema))
    assert fields == {
        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
        "f:spec": {".": {}, "f:gateways": {}, "f:hosts": {}, "f:http": {}},
    }
    assert mf.decode(fields) == set(mf.values(vs, schema))


def test_list_maps_merge_by_key_and_each_item_is_a_field() -> None:
    live = {"metadata": {}, "ports": [{"number": 80, "name": "http"}], "hosts": ["a"]}
    config = {"ports": [{"number": 80, "name": "web"}, {"number": 443}], "hosts": ["b"]}
    merged = apply_patch.merge(live, config, PORTS)
    assert merged["ports"] == [{"number": 80, "name": "web"}, {"number": 443}]
    assert merged["hosts"] == ["b"]  # atomic: replaced
    paths = set(mf.values(merged, PORTS))
    assert ("f:ports", 'k:{"number":443}', "f:number") in paths
    assert mf.path_text(("f:ports", 'k:{"number":80}', "f:name")) == ".ports[number=80].name"
    apply_patch.remove(merged, ("f:ports", 'k:{"number":80}'))
    assert merged["ports"] == [{"number": 443}]


def mesh_validate(objects: list[dict[str, Any]]) -> list[str]:
    """The embedded mesh's rule this file relies on: weights of a split may not sum to 0."""
    for o in objects:
        routes = [r.get("route") or [] for r in o["spec"].get("http") or []]
        if o["kind"] == "VirtualService" and any(
            len(route) > 1 and not sum(d.get("weight", 0) for d in route) for route in routes
        ):
            raise ManifestError("<api>", o["metadata"]["name"], "spec.http", "weights sum to 0")
    return []


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    srv = serve_in_thread(
        objects=[by_kind("Gateway"), by_kind("DestinationRule")], validate=mesh_validate
    )
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def kubeconfig(server: ThreadedServer, tmp_path_factory: Any) -> Path:
    return write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", server.url)


class Kubectl:
    def __init__(self, kubeconfig: Path, tmp: Path) -> None:
        assert KUBECTL is not None, "kubectl is not on PATH: these tests drive the real one"
        self.base = [KUBECTL, "--cache-dir", str(tmp / "cache"), "--request-timeout", "10s"]
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.tmp = tmp

    def run(self, *args: str, ok: bool = True) -> str:
        done = subprocess.run(
            [*self.base, *args], env=self.env, capture_output=True, text=True, timeout=30
        )
        assert (done.returncode == 0) == ok, done.stdout + done.stderr
        return done.stdout + done.stderr

    def apply(self, obj: dict[str, Any], *flags: str, ok: bool = True) -> str:
        path = self.tmp / "applied.yaml"
        path.write_text(yaml.safe_dump(obj))
        return self.run("apply", "--server-side", "-f", str(path), *flags, ok=ok)

    def merge_patch(self, name: str, manager: str, body: dict[str, Any]) -> str:
        patch = json.dumps(body)
        return self.run(
            "patch", "vs", name, "--type", "merge", "--field-manager", manager, "-p", patch
        )

    def get(self, name: str) -> dict[str, Any]:
        out = self.run("get", "vs", name, "-o", "json", "--show-managed-fields")
        got: dict[str, Any] = json.loads(out)
        return got


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Kubectl:
    return Kubectl(kubeconfig, tmp_path)


def vs_named(name: str, weights: tuple[int, int] = (100, 0)) -> dict[str, Any]:
    vs = by_kind("VirtualService")
    vs["metadata"]["name"] = name
    for dest, weight in zip(vs["spec"]["http"][0]["route"], weights, strict=True):
        dest["weight"] = weight
    return vs


def owners(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["manager"], e["operation"]): e["fieldsV1"] for e in obj["metadata"]["managedFields"]}


def apply_raw(server: ThreadedServer, name: str, body: dict[str, Any], query: str) -> Any:
    req = urllib.request.Request(
        f"{server.url}{VS_URL}/{name}?{query}",
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.integration
def test_kubectl_server_side_apply_creates_then_updates(kubectl: Kubectl) -> None:
    assert "virtualservice.networking.istio.io/ssa serverside-applied" in kubectl.apply(
        vs_named("ssa")
    )
    first = kubectl.get("ssa")
    assert owners(first) == {
        ("kubectl", "Apply"): {
            "f:spec": {".": {}, "f:gateways": {}, "f:hosts": {}, "f:http": {}},
        }
    }
    assert first["metadata"]["managedFields"][0]["apiVersion"] == "networking.istio.io/v1"
    # Applying the same manifest again writes nothing.
    assert "serverside-applied" in kubectl.apply(vs_named("ssa"))
    assert kubectl.get("ssa")["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    changed = vs_named("ssa", (60, 40))
    changed["metadata"]["labels"] = {"team": "shop"}
    kubectl.apply(changed)
    second = kubectl.get("ssa")
    assert weights_of(second) == {"v1": 60, "v2": 40}
    assert second["metadata"]["generation"] == 2
    assert owners(second)[("kubectl", "Apply")]["f:metadata"] == {
        "f:labels": {".": {}, "f:team": {}}
    }


@pytest.mark.integration
def test_a_second_applier_conflicts_until_it_forces(
    server: ThreadedServer, kubectl: Kubectl
) -> None:
    kubectl.apply(vs_named("contested"))
    kubectl.merge_patch("contested", "other", {"spec": {"gateways": ["mesh"]}})
    patched = owners(kubectl.get("contested"))
    assert patched[("other", "Update")] == {"f:spec": {"f:gateways": {}}}
    assert "f:gateways" not in patched[("kubectl", "Apply")]["f:spec"]
    # flux sends the same hosts (shared, no conflict) and other weights (kubectl's .spec.http).
    flux = vs_named("contested", (50, 50))
    del flux["spec"]["gateways"]
    refused = kubectl.apply(flux, "--field-manager", "flux", ok=False)
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .spec.http' in refused
    code, answer = apply_raw(server, "contested", flux, "fieldManager=flux")
    assert code == 409 and answer["reason"] == "Conflict"
    assert answer["details"]["causes"] == [
        {
            "type": "FieldManagerConflict",
            "message": 'conflict with "kubectl"',
            "field": ".spec.http",
        }
    ]
    kubectl.apply(flux, "--field-manager", "flux", "--force-conflicts")
    forced = kubectl.get("contested")
    assert weights_of(forced) == {"v1": 50, "v2": 50}
    fields = owners(forced)
    assert fields[("flux", "Apply")] == {"f:spec": {".": {}, "f:hosts": {}, "f:http": {}}}
    assert fields[("kubectl", "Apply")] == {"f:spec": {".": {}, "f:hosts": {}}}
    # Changing a field an Update manager owns names it with its apiVersion.
    taken = vs_named("contested")
    taken["spec"]["gateways"] = ["frontend-gateway"]
    del taken["spec"]["http"]
    refused = kubectl.apply(taken, ok=False)
    assert 'conflict with "other" using networking.istio.io/v1: .spec.gateways' in refused


@pytest.mark.integration
def test_an_omitted_field_is_removed_unless_someone_else_owns_it(kubectl: Kubectl) -> None:
    vs = vs_named("pruned")
    vs["metadata"]["labels"] = {"a": "1", "b": "2"}
    vs["spec"]["exportTo"] = ["."]
    kubectl.apply(vs)
    kubectl.merge_patch("pruned", "other", {"metadata": {"labels": {"team": "shop"}}})
    del vs["spec"]["exportTo"]
    vs["metadata"]["labels"] = {"b": "2"}
    kubectl.apply(vs)
    after = kubectl.get("pruned")
    assert "exportTo" not in after["spec"]
    assert after["metadata"]["labels"] == {"b": "2", "team": "shop"}
    assert owners(after)[("kubectl", "Apply")]["f:metadata"] == {"f:labels": {".": {}, "f:b": {}}}


@pytest.mark.integration
def test_bad_applies_are_refused_as_other_writes_are(
    server: ThreadedServer, kubectl: Kubectl
) -> None:
    bad = vs_named("badly")
    bad["spec"]["http"][0]["route"][0]["weight"] = "100"
    refused = kubectl.apply(bad, ok=False)
    assert "spec.http[0].route[0].weight" in refused and "must be of type integer" in refused
    refused = kubectl.apply(vs_named("badly", (0, 0)), ok=False)
    assert 'VirtualService "badly" is invalid' in refused and "weights sum to 0" in refused
    code, answer = apply_raw(server, "badly", vs_named("badly", (0, 0)), "fieldManager=x")
    assert code == 422 and answer["message"].startswith(
        'admission webhook "validation.istio.io" denied the request'
    )
    assert not any(o["metadata"]["name"] == "badly" for o in server.objects())
    code, answer = apply_raw(server, "badly", vs_named("badly"), "")
    assert code == 422 and "fieldManager: Required value" in answer["message"]
    with_fields = vs_named("badly")
    with_fields["metadata"]["managedFields"] = []
    code, answer = apply_raw(server, "badly", with_fields, "fieldManager=x")
    assert code == 400 and answer["message"] == "metadata.managedFields must be nil"
    code, answer = apply_raw(server, "badly", vs_named("badly"), "fieldManager=x&dryRun=All")
    assert code == 201 and answer["metadata"]["managedFields"][0]["manager"] == "x"
    assert not any(o["metadata"]["name"] == "badly" for o in server.objects())


@pytest.mark.integration
def test_the_weight_client_writes_over_a_server_side_applied_object(
    kubeconfig: Path, kubectl: Kubectl
) -> None:
    kubectl.apply(vs_named("weighted"))
    with MeshClient.connect(kubeconfig) as mesh:
        mesh.set_weights("weighted", "default", {"v1": 80, "v2": 20}, route="primary")
        stored = mesh.get("VirtualService", "default", "weighted")
    assert weights_of(stored) == {"v1": 80, "v2": 20}
    fields = owners(stored)
    assert fields[("kubectl", "Apply")] == {"f:spec": {".": {}, "f:gateways": {}, "f:hosts": {}}}
    (writer,) = [m for m, op in fields if op == "Update"]
    assert writer == "meshload", "named after meshload's User-Agent, as the API server names it"
    assert fields[(writer, "Update")] == {"f:spec": {"f:http": {}}}
    # Re-applying the manifest now would undo the rollout's weights: the server says so.
    refused = kubectl.apply(vs_named("weighted"), ok=False)
    assert f'conflict with "{writer}" using networking.istio.io/v1: .spec.http' in refused
