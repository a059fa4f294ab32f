"""The embedded Kubernetes API driven by the real `kubernetes` client and kubectl."""

from __future__ import annotations

import copy
import json
import stat
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch

from meshcore.errors import ManifestError
from meshsim.kubeapi.kubeconfig import write_kubeconfig
from tests.kubeapi_thread import ThreadedServer, serve_in_thread
from tests.support import kubectl_runner

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
CANARY = ROOT / "scenarios" / "manifests" / "canary.yaml"
G, V = "networking.istio.io", "v1"
CORE = [
    {"kind": "Namespace", "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}},
    {
        "kind": "Pod",
        "metadata": {
            "name": "frontend-v1-abc",
            "namespace": "default",
            "labels": {"app": "frontend", "version": "v1"},
        },
        "spec": {"containers": [{"name": "server"}, {"name": "istio-proxy"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    },
    {"kind": "Service", "metadata": {"name": "frontend"}, "spec": {"ports": [{"port": 80}]}},
]


def manifests() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(CANARY.read_text()) if d}


def mesh_validate(objects: list[dict[str, Any]]) -> list[str]:
    """A stand-in for the mesh's semantic hook: Istio's weight rules."""
    warnings = []
    for o in objects:
        if o["kind"] != "VirtualService":
            continue
        for i, r in enumerate(o["spec"].get("http") or []):
            weights = [d.get("weight", 0) for d in r.get("route") or []]
            if len(weights) > 1 and sum(weights) == 0:
                raise ManifestError(
                    "<api>",
                    f"VirtualService {o['metadata']['name']}",
                    f"spec.http[{i}].route",
                    "weights sum to 0",
                )
            if len(weights) > 1 and sum(weights) != 100:
                warnings.append(f"http[{i}] weights sum to {sum(weights)}, not 100")
    return warnings


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ThreadedServer, list[int]]]:
    m = manifests()
    changes: list[int] = []
    srv = serve_in_thread(
        objects=[m["Gateway"], m["DestinationRule"]],
        validate=mesh_validate,
        on_change=lambda objs: changes.append(len(objs)),
        core_objects=CORE,
    )
    try:
        yield srv, changes
    finally:
        srv.close()


@pytest.fixture(scope="module")
def kubeconfig(server: tuple[ThreadedServer, list[int]], tmp_path_factory: Any) -> Path:
    return write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", server[0].url)


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    with api_client:
        yield api_client


def fresh_vs(co: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    body = copy.deepcopy(manifests()["VirtualService"])
    body["metadata"]["name"] = name
    created: dict[str, Any] = co.create_namespaced_custom_object(
        G, V, "default", "virtualservices", body
    )
    return created


def status_of(err: client.ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(err.body)
    return body


def test_crud_conflicts_generation_and_patches(server: Any, api: client.ApiClient) -> None:
    co = client.CustomObjectsApi(api)
    vs = fresh_vs(co, "crud")
    assert vs["metadata"]["generation"] == 1
    with pytest.raises(client.ApiException) as err:
        fresh_vs(co, "crud")
    assert (err.value.status, status_of(err.value)["reason"]) == (409, "AlreadyExists")
    listed = co.list_namespaced_custom_object(G, "v1beta1", "default", "virtualservices")
    assert listed["kind"] == "VirtualServiceList" and listed["apiVersion"] == f"{G}/v1beta1"
    assert "crud" in [i["metadata"]["name"] for i in listed["items"]]
    vs["spec"]["http"][0]["route"][0]["weight"] = 60
    vs["spec"]["http"][0]["route"][1]["weight"] = 40
    moved = co.replace_namespaced_custom_object(G, V, "default", "virtualservices", "crud", vs)
    assert moved["metadata"]["generation"] == 2
    assert int(moved["metadata"]["resourceVersion"]) > int(vs["metadata"]["resourceVersion"])
    with pytest.raises(client.ApiException) as err:
        co.replace_namespaced_custom_object(G, V, "default", "virtualservices", "crud", vs)
    assert (err.value.status, status_of(err.value)["reason"]) == (409, "Conflict")
    labelled = co.patch_namespaced_custom_object(
        G, V, "default", "virtualservices", "crud", {"metadata": {"labels": {"step": "2"}}}
    )
    assert labelled["metadata"]["generation"] == 2 and labelled["metadata"]["labels"]
    patched = co.patch_namespaced_custom_object(
        G,
        V,
        "default",
        "virtualservices",
        "crud",
        [
            {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 10},
            {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 90},
        ],
        _content_type="application/json-patch+json",
    )
    assert [d["weight"] for d in patched["spec"]["http"][0]["route"]] == [10, 90]
    assert patched["metadata"]["generation"] == 3
    got = co.get_namespaced_custom_object(G, "v1alpha3", "default", "virtualservices", "crud")
    assert got["apiVersion"] == f"{G}/v1alpha3" and got["spec"] == patched["spec"]
    by_label = co.list_namespaced_custom_object(
        G, V, "default", "virtualservices", label_selector="step=2"
    )
    assert [i["metadata"]["name"] for i in by_label["items"]] == ["crud"]
    co.delete_namespaced_custom_object(G, V, "default", "virtualservices", "crud")
    with pytest.raises(client.ApiException) as err:
        co.get_namespaced_custom_object(G, V, "default", "virtualservices", "crud")
    assert err.value.status == 404 and status_of(err.value)["reason"] == "NotFound"


def test_generate_name_all_namespaces_and_delete_collection(
    server: Any, api: client.ApiClient
) -> None:
    co = client.CustomObjectsApi(api)
    body = manifests()["VirtualService"]
    body["metadata"] = {"generateName": "batch-", "labels": {"batch": "yes"}}
    names = {
        co.create_namespaced_custom_object(G, V, ns, "virtualservices", copy.deepcopy(body))[
            "metadata"
        ]["name"]
        for ns in ("default", "shop", "shop")
    }
    assert len(names) == 3 and all(n.startswith("batch-") and len(n) == 11 for n in names)
    everywhere = co.list_cluster_custom_object(G, V, "virtualservices", label_selector="batch")
    assert sorted(i["metadata"]["namespace"] for i in everywhere["items"]) == [
        "default",
        "shop",
        "shop",
    ]
    gone = co.delete_collection_namespaced_custom_object(
        G, V, "shop", "virtualservices", label_selector="batch=yes"
    )
    assert len(gone["items"]) == 2
    left = co.list_cluster_custom_object(G, V, "virtualservices", label_selector="batch")
    assert [i["metadata"]["namespace"] for i in left["items"]] == ["default"]
    co.delete_namespaced_custom_object(
        G, V, "default", "virtualservices", left["items"][0]["metadata"]["name"]
    )


def test_refusals_name_the_field_and_hook_messages_pass_through(
    server: Any, api: client.ApiClient
) -> None:
    co = client.CustomObjectsApi(api)
    bad = copy.deepcopy(manifests()["VirtualService"])
    bad["metadata"]["name"] = "bad"
    bad["spec"]["http"][0]["route"][0]["weight"] = "100"
    bad["spec"]["http"][0]["route"][1]["colour"] = "blue"
    with pytest.raises(client.ApiException) as err:
        co.create_namespaced_custom_object(G, V, "default", "virtualservices", bad)
    status = status_of(err.value)
    assert (err.value.status, status["reason"]) == (422, "Invalid")
    assert "spec.http[0].route[0].weight" in status["message"]
    assert "spec.http[0].route[1].colour" in status["message"]
    assert {c["field"] for c in status["details"]["causes"]} == {
        "spec.http[0].route[0].weight",
        "spec.http[0].route[1].colour",
    }
    zero = copy.deepcopy(manifests()["VirtualService"])
    zero["metadata"]["name"] = "zero"
    zero["spec"]["http"][0]["route"][0]["weight"] = 0
    with pytest.raises(client.ApiException) as err:
        co.create_namespaced_custom_object(G, V, "default", "virtualservices", zero)
    assert err.value.status == 422
    assert "spec.http[0].route: weights sum to 0" in status_of(err.value)["message"]
    elsewhere = manifests()["VirtualService"]
    del elsewhere["metadata"]["namespace"]
    with pytest.raises(client.ApiException) as err:
        co.create_namespaced_custom_object(G, V, "nowhere", "virtualservices", elsewhere)
    assert err.value.status == 404 and "namespaces" in status_of(err.value)["message"]
    with pytest.raises(client.ApiException) as err:
        co.patch_namespaced_custom_object(
            G,
            V,
            "default",
            "destinationrules",
            "frontend",
            {},
            _content_type="application/strategic-merge-patch+json",
        )
    assert err.value.status == 415


def test_warnings_header_and_on_change(server: Any, api: client.ApiClient) -> None:
    _, changes = server
    co = client.CustomObjectsApi(api)
    before = len(changes)
    vs = fresh_vs(co, "warned")
    vs["spec"]["http"][0]["route"][1]["weight"] = 5
    _, code, headers = co.replace_namespaced_custom_object_with_http_info(
        G, V, "default", "virtualservices", "warned", vs
    )
    assert code == 200
    assert headers.getlist("Warning") == ['299 - "http[0] weights sum to 105, not 100"']
    assert len(changes) == before + 2 and changes[-1] >= 3
    co.delete_namespaced_custom_object(G, V, "default", "virtualservices", "warned")
    assert len(changes) == before + 3


def test_field_validation_warn_prunes_unknown_fields(server: Any, api: client.ApiClient) -> None:
    co = client.CustomObjectsApi(api)
    body = copy.deepcopy(manifests()["VirtualService"])
    body["metadata"]["name"] = "pruned"
    body["spec"]["http"][0]["retrys"] = {"attempts": 3}
    created, _, headers = co.create_namespaced_custom_object_with_http_info(
        G, V, "default", "virtualservices", body, field_validation="Warn"
    )
    assert "retrys" not in created["spec"]["http"][0]
    assert '299 - "unknown field \\"spec.http[0].retrys\\""' in headers.getlist("Warning")
    co.delete_namespaced_custom_object(G, V, "default", "virtualservices", "pruned")


def test_watch_streams_added_modified_deleted(server: Any, api: client.ApiClient) -> None:
    co = client.CustomObjectsApi(api)
    listed = co.list_namespaced_custom_object(G, V, "default", "virtualservices")
    start_rv = listed["metadata"]["resourceVersion"]
    vs = fresh_vs(co, "watched")
    co.patch_namespaced_custom_object(
        G, V, "default", "virtualservices", "watched", {"spec": {"hosts": ["shop.example"]}}
    )
    co.delete_namespaced_custom_object(G, V, "default", "virtualservices", "watched")
    seen = []
    w = watch.Watch()
    t0 = time.monotonic()
    for event in w.stream(
        co.list_namespaced_custom_object,
        G,
        V,
        "default",
        "virtualservices",
        resource_version=start_rv,
        timeout_seconds=1,
    ):
        obj = event["object"]
        if obj["metadata"]["name"] == "watched":
            seen.append((event["type"], obj["metadata"]["resourceVersion"]))
    assert time.monotonic() - t0 < 5
    assert [t for t, _ in seen] == ["ADDED", "MODIFIED", "DELETED"]
    rvs = [int(rv) for _, rv in seen]
    assert rvs == sorted(rvs) and rvs[0] == int(vs["metadata"]["resourceVersion"])


def test_the_kubeconfig_is_private_even_when_it_replaces_an_open_file(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("old")
    path.chmod(0o644)
    write_kubeconfig(path, "http://127.0.0.1:1", "shop")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds a token
    doc = yaml.safe_load(path.read_text())
    assert doc["clusters"][0]["cluster"]["server"] == "http://127.0.0.1:1"
    assert doc["contexts"][0]["context"]["namespace"] == "shop"
    assert [p.name for p in tmp_path.iterdir()] == ["config"]


def test_closing_the_api_ends_an_open_watch_at_once() -> None:
    srv = serve_in_thread(objects=[manifests()["Gateway"]])
    url = f"{srv.url}/apis/{G}/{V}/namespaces/default/gateways?watch=true&timeoutSeconds=60"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert json.loads(resp.readline())["type"] == "ADDED"  # the watch is open
        began = time.monotonic()
        srv.close()
        assert resp.read() == b""  # the stream ended, not cut
    # A watch left open would hold close() for the whole shutdown timeout (2 s).
    assert time.monotonic() - began < 1.0


def test_core_resources_for_preflight(server: Any, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    shop = core.read_namespace("shop")
    assert shop.metadata.labels["istio-injection"] == "enabled"
    assert {"default", "kube-system", "shop"} <= {
        n.metadata.name for n in core.list_namespace().items
    }
    pods = core.list_namespaced_pod("default", label_selector="app=frontend")
    [pod] = pods.items
    assert [c.name for c in pod.spec.containers] == ["server", "istio-proxy"]
    assert pod.status.conditions[0].type == "Ready" and pod.status.phase == "Running"
    assert core.read_namespaced_service("frontend", "default").spec.ports[0].port == 80
    with pytest.raises(client.ApiException) as err:
        core.delete_namespaced_pod("frontend-v1-abc", "default")
    assert err.value.status == 405


def test_kubectl_apply_get_and_merge_patch(server: Any, tmp_path: Path) -> None:
    kubectl = kubectl_runner(server[0].url, tmp_path)  # fails, not skips, without kubectl

    def run(*args: str, ok: bool = True) -> str:
        code, out = kubectl(*args)
        assert (code == 0) == ok, out
        return out

    vs = manifests()["VirtualService"]
    vs["metadata"]["name"] = "kc"
    manifest = tmp_path / "kc.yaml"
    manifest.write_text(yaml.safe_dump(vs))
    # apply reads /openapi/v3, leaves validation to the server and sends a JSON merge patch.
    assert "virtualservice.networking.istio.io/kc created" in run("apply", "-f", str(manifest))
    assert "unchanged" in run("apply", "-f", str(manifest))
    table = run("get", "virtualservices")
    assert table.split("\n")[0].split() == ["NAME", "GATEWAYS", "HOSTS", "AGE"]
    assert any(line.startswith("kc ") for line in table.splitlines())
    route = [
        {"destination": {"host": "frontend", "subset": "v1"}, "weight": 30},
        {"destination": {"host": "frontend", "subset": "v2"}, "weight": 70},
    ]
    patch = {"spec": {"http": [{"name": "primary", "route": route}]}}
    out = run("patch", "vs", "kc", "--type", "merge", "-p", json.dumps(patch))
    assert "virtualservice.networking.istio.io/kc patched" in out
    got = json.loads(run("get", "vs", "kc", "-o", "json"))
    assert [d["weight"] for d in got["spec"]["http"][0]["route"]] == [30, 70]
    assert got["metadata"]["generation"] == 2
    refused = run("patch", "vs", "kc", "-p", json.dumps(patch), ok=False)
    assert "application/strategic-merge-patch+json is not supported" in refused
    vs["spec"]["http"][0]["route"][0]["weight"] = "100"
    manifest.write_text(yaml.safe_dump(vs))
    invalid = run("apply", "-f", str(manifest), ok=False)
    assert "spec.http[0].route[0].weight" in invalid and "must be of type integer" in invalid
    run("delete", "vs", "kc")
