"""scenarios/manifests/cluster/: valid for Istio's CRDs, and the embedded mesh takes them as is."""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from meshsim.controld import to_resources
from meshsim.hosts import Endpoint
from meshsim.kubeapi.crds import load_catalog
from meshsim.kubeapi.kubeconfig import write_kubeconfig
from meshsim.kubeapi.schema import check_metadata, check_object
from meshsim.resources import load_manifests
from meshsim.spec import load_spec
from meshsim.translate import build_snapshot
from tests.kubeapi_thread import serve_in_thread

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "scenarios" / "manifests" / "cluster"
ISTIO_GROUPS = ("networking.istio.io", "telemetry.istio.io")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_docs() -> list[tuple[Path, dict[str, Any]]]:
    files = sorted(CLUSTER.glob("*.yaml")) + sorted(CLUSTER.glob("locust/*.yaml"))
    return [(f, d) for f in files for d in docs(f)]


def istio_docs() -> list[dict[str, Any]]:
    return [d for _, d in all_docs() if d["apiVersion"].split("/")[0] in ISTIO_GROUPS]


def by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in all_docs() if d["kind"] == kind]
    return next(d for d in found if name is None or d["metadata"]["name"] == name)


def endpoints() -> list[Endpoint]:
    spec = load_spec()
    return [
        Endpoint(w.name, w.service, w.namespace, dict(w.labels), 20000 + i)
        for i, w in enumerate(spec.workloads)
    ]


def test_every_istio_resource_is_valid_for_the_crds() -> None:
    catalog = load_catalog()
    kinds = []
    for doc in istio_docs():
        group, version = doc["apiVersion"].split("/")
        rtype = catalog.by_kind(group, doc["kind"])
        assert rtype is not None and version in rtype.versions, doc["apiVersion"]
        assert check_metadata(doc) + check_object(rtype, version, doc) == []
        kinds.append(doc["kind"])
    assert sorted(kinds) == ["DestinationRule", "Gateway", "Telemetry", "VirtualService"]


def test_the_validator_would_catch_a_broken_one() -> None:
    catalog = load_catalog()
    vs = copy.deepcopy(by_kind("VirtualService"))
    vs["spec"]["http"][0]["route"][0]["weight"] = "ninety"
    rtype = catalog.by_kind("networking.istio.io", "VirtualService")
    assert rtype is not None
    [(field, _)] = check_object(rtype, "v1", vs)
    assert field == "spec.http[0].route[0].weight"


def test_routing_is_the_embedded_default() -> None:
    def objects(path: Path) -> list[dict[str, Any]]:
        return [r.to_object() for r in load_manifests(path)]

    assert objects(CLUSTER / "canary.yaml") == objects(REPO / "scenarios/manifests/canary.yaml")


def test_the_translator_takes_them_unchanged() -> None:
    resources = load_manifests(CLUSTER)  # the directory, as `kubectl apply -f` reads it
    assert sorted(r.kind for r in resources) == ["DestinationRule", "Gateway", "VirtualService"]
    snapshot = build_snapshot(resources, endpoints())
    assert snapshot.warnings == []
    [host] = snapshot.routes["virtual_hosts"]
    clusters = host["routes"][0]["route"]["weighted_clusters"]["clusters"]
    weights = {c["name"]: c["weight"] for c in clusters}
    headers = {c["name"]: c["response_headers_to_add"][0]["header"] for c in clusters}
    assert weights == {"frontend_v1": 100}
    assert headers["frontend_v1"] == {"key": "x-version", "value": "v1"}


@pytest.mark.integration
def test_the_embedded_api_accepts_them_through_the_kubernetes_client(tmp_path: Path) -> None:
    eps = endpoints()

    def validate(objects: list[dict[str, Any]]) -> list[str]:  # the embedded mesh's own hook
        return build_snapshot(to_resources(objects), eps).warnings

    with serve_in_thread(validate=validate) as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        custom = client.CustomObjectsApi(api_client)
        catalog = load_catalog()
        for doc in istio_docs():
            group, version = doc["apiVersion"].split("/")
            rtype = catalog.by_kind(group, doc["kind"])
            assert rtype is not None
            ns = doc["metadata"]["namespace"]
            custom.create_namespaced_custom_object(group, version, ns, rtype.plural, doc)
            name = doc["metadata"]["name"]
            back: Any = custom.get_namespaced_custom_object(group, version, ns, rtype.plural, name)
            assert back["spec"] == doc["spec"]
        api_client.close()
        stored = sorted(o["kind"] for o in api.objects())
    assert stored == ["DestinationRule", "Gateway", "Telemetry", "VirtualService"]


def test_frontend_v2_is_the_demo_frontend_labelled_v2() -> None:
    dep = by_kind("Deployment", "frontend-v2")
    template = dep["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert labels == {"app": "frontend", "version": "v2"}
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [server] = template["spec"]["containers"]
    image = "us-central1-docker.pkg.dev/google-samples/microservices-demo/frontend:"
    assert server["image"].startswith(image)
    assert re.fullmatch(r"v0\.10\.\d+", server["image"].rsplit(":", 1)[1])
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env["FRONTEND_MESSAGE"] and env["PORT"] == "8080"
    subsets = {s["name"]: s["labels"] for s in by_kind("DestinationRule")["spec"]["subsets"]}
    assert subsets["v2"].items() <= labels.items()


def test_v1_patch_gives_the_stock_frontend_the_v1_subset_label() -> None:
    patch_file = CLUSTER / "patches" / "frontend-v1.yaml"
    [patch] = docs(patch_file)
    assert patch == {"spec": {"template": {"metadata": {"labels": {"version": "v1"}}}}}
    subsets = {s["name"]: s["labels"] for s in by_kind("DestinationRule")["spec"]["subsets"]}
    assert subsets["v1"] == {"version": "v1"}
    command = "kubectl patch deployment frontend -n default --type strategic --patch-file"
    assert f"{command} scenarios/manifests/cluster/patches/frontend-v1.yaml" in (
        patch_file.read_text()
    )


def test_telemetry_samples_every_request() -> None:
    tel = by_kind("Telemetry")
    [tracing] = tel["spec"]["tracing"]
    assert tracing["randomSamplingPercentage"] == 100.0
    assert tel["metadata"]["namespace"] == by_kind("VirtualService")["metadata"]["namespace"]


@pytest.mark.integration
def test_locust_manifests_fit_together() -> None:
    master = by_kind("Deployment", "meshload-locust-master")
    workers = by_kind("Deployment", "meshload-locust-worker")
    service = by_kind("Service", "meshload-locust-master")
    master_pod, worker_pod = master["spec"]["template"], workers["spec"]["template"]
    assert service["spec"]["selector"].items() <= master_pod["metadata"]["labels"].items()
    assert not service["spec"]["selector"].items() <= worker_pod["metadata"]["labels"].items()
    assert 5557 in [p["port"] for p in service["spec"]["ports"]]
    [m], [w] = master_pod["spec"]["containers"], worker_pod["spec"]["containers"]
    assert m["image"] == w["image"]
    assert w["args"][w["args"].index("--master-host") + 1] == service["metadata"]["name"]
    claim = by_kind("PersistentVolumeClaim")
    # the master alone holds the run folder: workers send it their records
    volumes = {v["name"]: v for v in master_pod["spec"]["volumes"]}
    mounts = {v["name"]: v["mountPath"] for v in m["volumeMounts"]}
    assert volumes["results"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert mounts["results"] == "/results" and mounts["scenarios"] == "/scenarios"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert [v["mountPath"] for v in w["volumeMounts"]] == ["/scenarios"]
    for pod in (master_pod, worker_pod):
        assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert master_pod["spec"]["serviceAccountName"] == by_kind("ServiceAccount")["metadata"]["name"]
    # the pod's in-cluster configuration, not a kubeconfig holding (or pointing at) a token
    assert not any(
        d["kind"] == "ConfigMap" and "kubeconfig" in d.get("data", {}) for _, d in all_docs()
    )
    assert "--kubeconfig" not in " ".join(m["args"])


# Every call the master makes to the Kubernetes API: (group, resource, verb, namespace; "" for a
# cluster-scoped one). The rollout (VirtualService or HTTPRoute), its checks at start (subsets,
# backend Services), preflight, and the gateway replicas' pods.
MASTER_CALLS = [
    ("networking.istio.io", "virtualservices", "get", "default"),
    ("networking.istio.io", "virtualservices", "update", "default"),
    ("networking.istio.io", "destinationrules", "list", "default"),
    ("networking.istio.io", "gateways", "get", "default"),
    ("gateway.networking.k8s.io", "httproutes", "get", "default"),
    ("gateway.networking.k8s.io", "httproutes", "update", "default"),
    ("gateway.networking.k8s.io", "gateways", "get", "default"),
    ("gateway.networking.k8s.io", "gatewayclasses", "get", ""),
    ("", "services", "get", "default"),
    ("", "pods", "list", "default"),
    ("", "namespaces", "get", ""),
    ("", "pods", "list", "istio-system"),
    ("", "services", "get", "istio-system"),
]


def test_the_masters_service_account_may_make_every_call_it_makes() -> None:
    account = by_kind("ServiceAccount", "meshload-locust")["metadata"]
    grants: dict[str, list[dict[str, Any]]] = {}  # namespace ("" cluster-wide) -> rules
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
             for _, d in all_docs() if d["kind"] in ("Role", "ClusterRole")}  # fmt: skip
    for _, b in all_docs():
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if {"kind": "ServiceAccount", **account} not in b["subjects"]:
            continue
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace", "") if b["kind"] == "RoleBinding" else ""
        role = roles[(ref["kind"], ns if ref["kind"] == "Role" else "", ref["name"])]
        grants.setdefault(ns, []).extend(role["rules"])

    def allowed(group: str, resource: str, verb: str, ns: str) -> bool:
        # a cluster-scoped resource ("" namespace) only through a ClusterRoleBinding
        rules = grants.get(ns, []) + (grants.get("", []) if ns else [])
        return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
                   for r in rules)  # fmt: skip

    missing = [call for call in MASTER_CALLS if not allowed(*call)]
    assert not missing, missing
    # and not more than it needs: it never deletes or creates a route
    assert not allowed("networking.istio.io", "virtualservices", "delete", "default")
    assert not allowed("gateway.networking.k8s.io", "httproutes", "create", "default")


# Locust monkey-patches the standard library on import: its parser runs in a child process.
PARSE = """
import json, sys
from locust.argument_parser import get_parser
from loadgen import options
parser = get_parser()
options.add_arguments(parser)
print(json.dumps(vars(parser.parse_args(json.loads(sys.argv[1])))))
"""


@pytest.mark.integration
def test_master_command_parses_with_locust_and_meshload_options() -> None:
    master = by_kind("Deployment", "meshload-locust-master")
    [container] = master["spec"]["template"]["spec"]["containers"]
    script = container["args"][0].split(";")[0].replace('"$WORKERS"', "4")
    argv = shlex.split(script)
    assert argv[0] == "locust"
    done = subprocess.run(
        [sys.executable, "-c", PARSE, json.dumps(argv[1:])],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    parsed = json.loads(done.stdout)
    assert parsed["mesh"] == "kubernetes" and parsed["results_dir"] == "/results"
    assert parsed["expect_workers"] == 4 and parsed["master"] and parsed["headless"]
    volume = next(
        v for v in master["spec"]["template"]["spec"]["volumes"] if v["name"] == "scenarios"
    )
    paths = {i["path"] for i in volume["configMap"]["items"]}
    assert parsed["locustfile"].removeprefix("/scenarios/") in paths
    assert not parsed["kubeconfig"], "in a pod meshload uses the in-cluster configuration"


def test_dockerfile_copies_what_exists() -> None:
    dockerfile = (CLUSTER / "locust" / "Dockerfile").read_text()
    copies = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    sources = [s for srcs in copies for s in srcs]
    assert {"pyproject.toml", "meshcore", "meshload", "loadgen", "meshsim", "analysis"} <= set(
        sources
    )
    assert all((REPO / s).exists() for s in sources)
