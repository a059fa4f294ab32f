"""meshcore.kube.client: connecting, one-line errors, 409 retries, weights and apply, on the
in-memory twin and through the official client on the embedded API."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshcore.errors import BackendError, ConfigError
from meshcore.kube.client import MeshClient, warning_texts
from meshcore.kube.config import connect
from meshsim.kubeapi.kubeconfig import write_kubeconfig
from tests.canary_manifests import manifests, weights_of
from tests.kubeapi_thread import ThreadedServer, serve_in_thread
from tests.twins import InMemoryMeshClient


def test_in_memory_twin_retries_injected_conflicts() -> None:
    mesh = InMemoryMeshClient(objects=manifests(), conflicts_to_inject=2)
    t0 = time.time_ns()
    change = mesh.set_weights("frontend", "default", {"v1": 90, "v2": 10})
    assert change.attempts == 3
    assert t0 <= change.requested_ns <= change.accepted_ns <= time.time_ns()
    assert weights_of(mesh.get("VirtualService", "default", "frontend")) == {"v1": 90, "v2": 10}
    assert len(mesh.writes) == 1
    assert change.resource_version == mesh.writes[0]["metadata"]["resourceVersion"]
    mesh.conflicts_to_inject = 10
    with pytest.raises(BackendError, match="6 writes got 409 Conflict"):
        mesh.set_weights("frontend", "default", {"v1": 50, "v2": 50})
    with pytest.raises(ConfigError, match="VirtualService default/nope not found"):
        mesh.set_weights("nope", "default", {"v1": 1})


def test_kubeconfig_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        MeshClient.connect(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\ncontexts: []\nclusters: []\nusers: []\n")
    with pytest.raises(ConfigError) as err:
        MeshClient.connect(broken, context="nowhere")
    assert "\n" not in str(err.value) and "nowhere" in str(err.value)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: Any) -> Iterator[tuple[ThreadedServer, Path]]:
    srv = serve_in_thread(objects=manifests(), validate=lambda objs: ["the mesh read the weights"])
    try:
        yield srv, write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", srv.url)
    finally:
        srv.close()


@pytest.mark.integration
def test_set_weights_round_trip_through_the_kubernetes_client(
    embedded: tuple[ThreadedServer, Path], caplog: pytest.LogCaptureFixture
) -> None:
    srv, kubeconfig = embedded
    caplog.set_level(logging.WARNING)
    with MeshClient.connect(kubeconfig) as mesh:
        before = mesh.get("VirtualService", "default", "frontend")
        t0 = time.time_ns()
        change = mesh.set_weights("frontend", "default", {"v1": 80, "v2": 20}, route="primary")
        assert t0 <= change.requested_ns <= change.accepted_ns <= time.time_ns()
        assert change.attempts == 1 and change.warnings == ("the mesh read the weights",)
        stored = {o["metadata"]["name"]: o for o in srv.objects() if o["kind"] == "VirtualService"}
        assert weights_of(stored["frontend"]) == {"v1": 80, "v2": 20}
        assert stored["frontend"]["metadata"]["resourceVersion"] == change.resource_version
        assert stored["frontend"]["metadata"]["generation"] == before["metadata"]["generation"] + 1
        assert [r["metadata"]["name"] for r in mesh.list_of("DestinationRule", "default")] == [
            "frontend"
        ]
        assert mesh.get("DestinationRule", "default", "frontend")["spec"]["host"] == "frontend"
        with pytest.raises(ConfigError, match="subset canary is not defined"):
            mesh.set_weights("frontend", "default", {"canary": 1})
        with pytest.raises(ConfigError, match="not found"):
            mesh.get("VirtualService", "default", "missing")
    assert "the mesh read the weights" in caplog.text


@pytest.mark.integration
def test_a_concurrent_writer_causes_a_409_then_success(
    embedded: tuple[ThreadedServer, Path],
) -> None:
    srv, kubeconfig = embedded
    with (
        MeshClient.connect(kubeconfig) as mesh,
        MeshClient.connect(kubeconfig) as other,
    ):
        reads = 0
        real_get = mesh.get

        def get_then_race(kind: str, namespace: str, name: str) -> dict[str, Any]:
            nonlocal reads
            vs = real_get(kind, namespace, name)
            reads += 1
            if reads == 1:  # another writer lands between our read and our write
                other.set_weights(name, namespace, {"v1": 50, "v2": 50})
            return vs

        mesh.get = get_then_race  # type: ignore[method-assign]
        change = mesh.set_weights("frontend", "default", {"v1": 10, "v2": 90})
    assert (change.attempts, reads) == (2, 2)
    stored = next(o for o in srv.objects() if o["kind"] == "VirtualService")
    assert weights_of(stored) == {"v1": 10, "v2": 90}


@pytest.mark.integration
def test_unreachable_api_is_a_backend_error(tmp_path: Path) -> None:
    srv = serve_in_thread()
    kubeconfig = write_kubeconfig(tmp_path / "config", srv.url)
    srv.close()
    with (
        MeshClient.connect(kubeconfig, timeout_s=2.0) as mesh,
        pytest.raises(BackendError) as err,
    ):
        mesh.get("VirtualService", "default", "frontend")
    message = str(err.value)
    assert "unreachable" in message and "\n" not in message
    assert "meshload-embedded-no-auth" not in message


def test_warning_headers_are_read_as_their_texts() -> None:
    assert warning_texts(['299 - "a \\"quoted\\" word"', "junk"]) == ('a "quoted" word',)


def test_kubeconfig_comes_from_the_flag_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flagged = write_kubeconfig(tmp_path / "flag", "http://127.0.0.1:1")
    from_env = write_kubeconfig(tmp_path / "env", "http://127.0.0.1:2")
    monkeypatch.setenv("KUBECONFIG", str(from_env))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # a kubeconfig still wins
    assert connect(flagged).configuration.host == "http://127.0.0.1:1"
    assert connect().configuration.host == "http://127.0.0.1:2"


# In a private mount namespace, a service-account token where a pod has it; the client then
# uses the in-cluster configuration, as a Locust master in a pod does.
IN_CLUSTER = """
import os, sys
from meshcore.kube.config import connect
cfg = connect().configuration
print(cfg.host, *cfg.api_key.values(), cfg.ssl_ca_cert)
"""


@pytest.mark.integration
def test_in_a_pod_the_service_account_is_used(tmp_path: Path) -> None:
    secrets = "/var/run/secrets/kubernetes.io/serviceaccount"
    script = tmp_path / "in_cluster.py"
    script.write_text(IN_CLUSTER)
    shell = (
        f"mkdir -p {secrets} && mount -t tmpfs tmpfs {secrets} && "
        f"printf sa-token-123 > {secrets}/token && printf x > {secrets}/ca.crt && "
        f"exec {sys.executable} {script}"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
    }
    env.update(
        KUBERNETES_SERVICE_HOST="10.96.0.1", KUBERNETES_SERVICE_PORT="443", HOME=str(tmp_path)
    )
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", shell],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0 and "unshare" in done.stderr and "ermission" in done.stderr:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    host, token, ca = done.stdout.split()[0], done.stdout.split()[1:3], done.stdout.split()[3]
    assert host == "https://10.96.0.1:443"
    assert [token[0].lower(), token[1]] == ["bearer", "sa-token-123"]
    assert ca.endswith("ca.crt")


def test_a_route_is_the_weight_interface_of_a_rollout() -> None:
    client = InMemoryMeshClient(objects=manifests())
    route = client.route("frontend", "default", "primary")
    assert route.subsets() == ["v1", "v2"]
    change = route.set_weights({"v1": 75, "v2": 25})
    assert change.requested_ns <= change.accepted_ns and change.weights == {"v1": 75, "v2": 25}
    assert weights_of(client.writes[-1]) == {"v1": 75, "v2": 25}
    route.check_subsets(["v1", "v2"], "p.yaml")
    with pytest.raises(ConfigError, match="subset 'v3' is not a destination"):
        route.check_subsets(["v1", "v3"], "p.yaml")
    with pytest.raises(ConfigError, match="--virtual-service"):
        client.route("nope", "default").subsets()
