"""`meshload mesh up` as a user runs it: endpoints printed, children watched, stopped by PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshsim.gateway import pod_names
from tests import support

pytestmark = pytest.mark.integration

SPEC = Path(__file__).resolve().parent / "data" / "gateway-spec.yaml"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state letter in /proc says it has exited.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.fixture
def mesh_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], Path]]:
    with support.mesh_up("--spec", str(SPEC), state_dir=tmp_path) as (proc, urls, _):
        yield proc, urls, tmp_path / "mesh.json"


def test_up_prints_endpoints_serves_and_stops_children_on_sigterm(mesh_up: tuple) -> None:
    proc, urls, state_path = mesh_up
    expected = ["gateway", "envoy-admin", "jaeger", "prometheus", "kubernetes", "kubeconfig"]
    if shutil.which("prometheus") is None:
        expected.remove("prometheus")
    assert list(urls) == expected
    for name in ("gateway", "envoy-admin", "jaeger", "kubernetes"):
        assert urls[name].startswith("http://127.0.0.1:")
    assert "server: " + urls["kubernetes"] in Path(urls["kubeconfig"]).read_text()
    with urllib.request.urlopen(urls["gateway"] + "/_healthz", timeout=5) as resp:
        assert resp.status == 200 and resp.headers["x-version"] == "v1"
    state = json.loads(state_path.read_text())
    pids = list(state["pids"].values())
    assert all(pid_alive(p) for p in pids)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert not any(pid_alive(p) for p in pids)
    assert not state_path.exists()


def test_envoy_dying_is_one_line_with_its_log_and_stops_the_rest(mesh_up: tuple) -> None:
    proc, _, state_path = mesh_up
    pids = json.loads(state_path.read_text())["pids"]
    os.kill(pids["envoy"], signal.SIGKILL)
    assert proc.wait(timeout=20) == 1
    _, stderr = proc.communicate(timeout=5)
    err_lines = [line for line in stderr.splitlines() if "error" in line]
    assert len(err_lines) == 1
    assert err_lines[0].startswith("meshload: error: envoy exited unexpectedly")
    assert "last log lines:" in err_lines[0]
    deadline = time.monotonic() + 5
    while pid_alive(pids["workloads"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pids["workloads"])


def test_bad_manifest_at_start_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n"
        "  name: x\nspec:\n  gateways: [g]\n  http:\n  - route:\n"
        "    - destination: {host: frontend, subset: v7}\n"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshload.cli",
            "mesh",
            "up",
            "--manifests",
            str(bad),
            "--spec",
            str(SPEC),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MESHLOAD_STATE_DIR": str(tmp_path)},
    )
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0, run.stderr
    assert (
        f"{bad}: VirtualService default/x: spec.http[0].route[0].destination.subset" in run.stderr
    )


def test_apply_changes_weights_and_refuses_bad_manifests(mesh_up: tuple, tmp_path: Path) -> None:
    _, urls, _ = mesh_up
    env = {**os.environ, "MESHLOAD_STATE_DIR": str(tmp_path)}
    canary = (
        Path(__file__).resolve().parent.parent / "scenarios" / "manifests" / "canary.yaml"
    ).read_text()
    flipped = tmp_path / "flipped.yaml"
    flipped.write_text(
        canary.replace("weight: 100", "weight: 1000")
        .replace("weight: 0", "weight: 100")
        .replace("weight: 1000", "weight: 0")
    )
    done = subprocess.run(
        [sys.executable, "-m", "meshload.cli", "mesh", "apply", str(flipped)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "VirtualService default/frontend applied" in done.stdout
    with urllib.request.urlopen(urls["gateway"] + "/_healthz", timeout=5) as resp:
        assert resp.headers["x-version"] == "v2"
    bad = tmp_path / "bad.yaml"
    bad.write_text(canary.replace("weight: 0", "weight: -5"))
    refused = subprocess.run(
        [sys.executable, "-m", "meshload.cli", "mesh", "apply", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(
        f"meshload: error: {bad}: VirtualService default/frontend: spec.http[0].route[1].weight"
    )
    with urllib.request.urlopen(urls["gateway"] + "/_healthz", timeout=5) as resp:
        assert resp.headers["x-version"] == "v2"


def test_children_do_not_outlive_a_killed_mesh_up(mesh_up: tuple) -> None:
    proc, _, state_path = mesh_up
    pids = list(json.loads(state_path.read_text())["pids"].values())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(p) for p in pids)


def test_up_with_gateway_replicas_prints_them_and_kubectl_lists_their_pods(tmp_path: Path) -> None:
    env = {**os.environ, "MESHLOAD_STATE_DIR": str(tmp_path)}
    argv = [sys.executable, "-m", "meshload.cli", "mesh", "up", "--spec", str(SPEC)]
    argv += ["--gateway-replicas", "2", "--push-skew-ms", "1=50"]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        urls = {}
        for line in proc.stdout:
            if line.startswith("ready"):
                break
            name, _, url = line.strip().partition(" ")
            urls[name] = url
        assert list(urls)[:6] == [
            "gateway", "gateway-0", "envoy-admin-0", "gateway-1", "envoy-admin-1", "balancer-admin"
        ]  # fmt: skip
        for i in (0, 1):
            with urllib.request.urlopen(urls[f"gateway-{i}"] + "/_healthz", timeout=5) as resp:
                assert resp.status == 200
        listed = subprocess.run(
            ["kubectl", "--kubeconfig", urls["kubeconfig"], "get", "pods", "-n", "istio-system"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        header, *rows = (line.split() for line in listed.stdout.splitlines())
        assert header[:2] == ["NAME", "STATUS"]
        assert {row[0]: row[1] for row in rows} == dict.fromkeys(pod_names(2), "Running")
        state_pids = json.loads((tmp_path / "mesh.json").read_text())["pids"]
        assert {"envoy-0", "envoy-1", "gateway-balancer"} <= set(state_pids)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not any(pid_alive(p) for p in state_pids.values())
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=20)


def test_impossible_replica_settings_are_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "MESHLOAD_STATE_DIR": str(tmp_path)}
    base = [sys.executable, "-m", "meshload.cli", "mesh", "up", "--spec", str(SPEC)]
    skewed = subprocess.run(
        [*base, "--gateway-replicas", "2", "--push-skew-ms", "2=100"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert skewed.returncode == 2
    assert skewed.stderr.strip().count("\n") == 0, skewed.stderr
    assert "push skew for replica 2: the gateway has replicas 0-1" in skewed.stderr
    malformed = subprocess.run(
        [*base, "--push-skew-ms", "1:800"], capture_output=True, text=True, timeout=60, env=env
    )
    assert malformed.returncode == 2
    assert "'1:800' is not REPLICA=MS; give e.g. 1=800,2=50" in malformed.stderr
