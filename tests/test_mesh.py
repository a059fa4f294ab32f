"""The embedded mesh driven through its Kubernetes API with the official client, as on a cluster."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from meshcore.stamps import REPLICA_HEADER, REPLICA_VALUE
from meshsim.mesh import Mesh
from tests.support import hammer, within_se

pytestmark = pytest.mark.integration

SPEC = Path(__file__).resolve().parent / "data" / "gateway-spec.yaml"
JSON_PATCH = "application/json-patch+json"
ARGS = ("networking.istio.io", "v1", "default", "virtualservices")


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with Mesh(spec=SPEC, prometheus=False, tracing=False) as m:
        yield m


@pytest.fixture(scope="module")
def api(mesh: Mesh) -> Any:
    return client.CustomObjectsApi(config.new_client_from_config(config_file=str(mesh.kubeconfig)))


def settle(mesh: Mesh, expect: set[str]) -> None:
    """Wait (bounded) until the gateway serves only versions in `expect`."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if set(hammer(mesh.gateway_url + "/_healthz", 50).header) <= expect:
            return
        time.sleep(0.05)


def test_merge_patch_moves_the_served_split(mesh: Mesh, api: Any) -> None:
    vs = api.get_namespaced_custom_object(*ARGS, "frontend")
    http = vs["spec"]["http"]
    http[0]["route"][0]["weight"], http[0]["route"][1]["weight"] = 70, 30
    api.patch_namespaced_custom_object(*ARGS, "frontend", {"spec": {"http": http}})
    time.sleep(0.5)  # the control plane answers first and pushes right after
    tally = hammer(mesh.gateway_url + "/_healthz", 10_000)
    assert tally.statuses == {200: 10_000}
    assert within_se(tally.header["v2"], 10_000, 0.30), tally.header


def test_json_patch_stale_replace_and_watch(mesh: Mesh, api: Any) -> None:
    before = api.get_namespaced_custom_object(*ARGS, "frontend")
    seen: list[tuple[str, int]] = []

    def follow() -> None:
        stream = watch.Watch().stream(
            api.list_namespaced_custom_object,
            *ARGS,
            resource_version=before["metadata"]["resourceVersion"],
            timeout_seconds=5,
        )
        for event in stream:
            weights = [d.get("weight", 0) for d in event["object"]["spec"]["http"][0]["route"]]
            seen.append((event["type"], weights[1]))
            if weights[1] == 100:
                return

    watcher = threading.Thread(target=follow)
    watcher.start()
    api.patch_namespaced_custom_object(
        *ARGS,
        "frontend",
        [
            {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 0},
            {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 100},
        ],
        _content_type=JSON_PATCH,
    )
    watcher.join(timeout=10)
    assert ("MODIFIED", 100) in seen
    settle(mesh, {"v2"})
    assert hammer(mesh.gateway_url + "/_healthz", 500).header == {"v2": 500}
    stale = dict(before)
    with pytest.raises(ApiException) as info:
        api.replace_namespaced_custom_object(*ARGS, "frontend", stale)
    assert info.value.status == 409


def test_invalid_patch_is_422_naming_the_field_and_the_old_config_serves(
    mesh: Mesh, api: Any
) -> None:
    vs = api.get_namespaced_custom_object(*ARGS, "frontend")
    http = vs["spec"]["http"]
    http[0]["route"][0]["weight"], http[0]["route"][1]["weight"] = 100, 0
    api.patch_namespaced_custom_object(*ARGS, "frontend", {"spec": {"http": http}})
    settle(mesh, {"v1"})
    http[0]["route"][1]["destination"]["subset"] = "v9"
    http[0]["route"][1]["weight"] = 50
    with pytest.raises(ApiException) as info:
        api.patch_namespaced_custom_object(*ARGS, "frontend", {"spec": {"http": http}})
    assert info.value.status == 422
    assert "spec.http[0].route[1].destination.subset" in info.value.body
    with pytest.raises(ApiException) as schema:
        api.patch_namespaced_custom_object(
            *ARGS,
            "frontend",
            [{"op": "replace", "path": "/spec/http/0/route/0/weight", "value": "lots"}],
            _content_type=JSON_PATCH,
        )
    assert schema.value.status == 422 and "weight" in schema.value.body
    assert hammer(mesh.gateway_url + "/_healthz", 1_000).header == {"v1": 1_000}


def test_a_control_plane_without_its_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "controlplane-config.json"
    proc = subprocess.run(
        [sys.executable, "-m", "meshsim.controld", "--config", str(missing)]
        + ["--ports-file", str(tmp_path / "controlplane.json")],
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.decode().splitlines()
    assert line.startswith(f"{missing}: not a control-plane config (") and "Mesh" in line
    assert not (tmp_path / "controlplane.json").exists()


def test_the_one_gateway_pod_listed_is_the_replica_that_stamps_responses(
    mesh: Mesh, api: Any
) -> None:
    core = client.CoreV1Api(api.api_client)
    (pod,) = core.list_namespaced_pod("istio-system", label_selector="istio=ingressgateway").items
    assert pod.status.phase == "Running" and pod.status.container_statuses[1].ready
    vs = api.get_namespaced_custom_object(*ARGS, "frontend")
    http = vs["spec"]["http"]
    http[0]["headers"] = {"response": {"set": {REPLICA_HEADER: REPLICA_VALUE}}}
    api.patch_namespaced_custom_object(*ARGS, "frontend", {"spec": {"http": http}})
    deadline = time.monotonic() + 5
    stamps: set[str | None] = {None}
    while None in stamps and time.monotonic() < deadline:
        stamps = set(hammer(mesh.gateway_url + "/_healthz", 20, header=REPLICA_HEADER).header)
    assert stamps == {pod.metadata.name}
