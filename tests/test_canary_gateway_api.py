"""`locust -f scenarios/canary_gateway_api.py`: a canary on a Gateway API HTTPRoute, its weights
on backendRefs (one Service per version), measured exactly from the stamps, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analysis.report import build_report
from meshsim.mesh import Mesh
from tests.support import REPO, canary_against

pytestmark = pytest.mark.integration

SCENARIO = REPO / "scenarios" / "canary_gateway_api.py"
PLAN = """route: {kind: HTTPRoute, name: frontend, rule: primary}
users: 20
steps:
  - {weights: {frontend-v1: 100, frontend-v2: 0}, hold_s: 6}
  - {weights: {frontend-v1: 90, frontend-v2: 10}, hold_s: 6}
  - {weights: {frontend-v1: 50, frontend-v2: 50}, hold_s: 6}
  - {weights: {frontend-v1: 0, frontend-v2: 100}, hold_s: 6}
"""
# ≈ 290 requests a step (6 s at ≈ 50 requests/s): a 50 % share's 95 % interval is ±5.8 pp and
# its standard error 2.9 pp. A step passes when its whole interval lies inside the tolerance, so
# at 18 pp a true split misses only when its share is 4.2 standard errors off: 1 step in 33,000.
# (At 12 pp it missed 1 step in 30: a CI run's unstamped 50/50 step had 124 of 294 on v1.)
TOLERANCE_PP = 18.0


BACKENDS = {"frontend-v1", "frontend-v2"}


def run_scenario(tmp_path: Path, *options: str) -> Path:
    """One headless run of the scenario with PLAN; its run folder."""
    (tmp_path / "plan.yaml").write_text(PLAN)
    cmd = [
        sys.executable, "-m", "locust", "-f", str(SCENARIO), "--headless",
        "--plan", str(tmp_path / "plan.yaml"), "--results-dir", str(tmp_path / "results"),
        "--run-time", "60", *options,
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / "results").iterdir()
    return folder


def assert_named_by_backend(summary: dict[str, Any]) -> None:
    """Traces and Prometheus name the pods' versions (v1, v2); the report names them as the
    plan does, by backend Service, in every table."""
    versions = {r["version"] for r in summary["consistency"]["counts"]}
    assert versions == BACKENDS, summary["consistency"]["counts"]
    for version in BACKENDS:
        rows = [r for r in summary["consistency"]["counts"] if r["version"] == version]
        client = sum(r["client"] for r in rows)
        sent = {"metrics": client + sum(r["probes"] for r in rows), "traces": client}
        for source, expected in sent.items():
            counted = sum(r[source] or 0 for r in rows)
            assert abs(counted - expected) <= max(3, 0.01 * client), (version, source, rows)
    assert set(summary["mesh_latency"]) == BACKENDS, summary["mesh_latency"]
    hops = summary["hops"]
    assert (hops["baseline"], hops["canary"]) == ("frontend-v1", "frontend-v2")
    assert hops["table"], "the hop table compares the backends' spans"


def test_an_httproute_canary_on_the_embedded_mesh_splits_exactly(tmp_path: Path) -> None:
    folder = run_scenario(tmp_path)
    info = json.loads((folder / "run.json").read_text())
    assert info["route_kind"] == "HTTPRoute" and info["http_route"] == "frontend"
    assert info["stamps"]["removed"] is True
    assert info["backend_versions"] == {"frontend-v1": "v1", "frontend-v2": "v2"}
    summary = build_report(folder, tolerance_pp=TOLERANCE_PP, progress=False).summary
    assert_named_by_backend(summary)
    steps = summary["split"]
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    for s in steps:
        assert s["method"] == "stamped" and s["n_unknown"] == 0, s
        assert set(s["counts"]) <= {"frontend-v1", "frontend-v2"}, s["counts"]
        assert s["verdict"] == "pass", s
    assert steps[0]["counts"].get("frontend-v2", 0) == 0
    assert steps[3]["counts"].get("frontend-v1", 0) == 0
    changes = [p for p in summary["propagation"] if p["step"] > 0]
    assert len(changes) == 3 and all(p["method"] == "stamped" and p["detected"] for p in changes)


def test_an_unstamped_httproute_canary_takes_its_versions_from_traces_by_backend(
    tmp_path: Path,
) -> None:
    """No stamps and a version header no response carries: every version comes from the
    trace (v1, v2) and is named by its backend, so the split is measured, not 'unknown'."""
    folder = run_scenario(tmp_path, "--no-stamp", "--version-header", "x-not-sent")
    summary = build_report(folder, tolerance_pp=TOLERANCE_PP, progress=False).summary
    assert any("took their trace's" in n for n in summary["notes"]), summary["notes"]
    assert any("v1 as frontend-v1" in n for n in summary["notes"]), summary["notes"]
    steps = summary["split"]
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    for s in steps:
        assert s["n_unknown"] == 0 and set(s["counts"]) <= BACKENDS, s
        assert s["verdict"] == "pass", s
    assert_named_by_backend(summary)


MISSING_BACKEND = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: frontend-gateway, namespace: default}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: frontend, namespace: default}
spec:
  parentRefs: [{name: frontend-gateway}]
  rules:
    - name: primary
      backendRefs:
        - {name: frontend-v1, port: 80, weight: 100}
        - {name: frontend-v9, port: 80, weight: 0}
"""


@pytest.fixture(scope="module")
def broken_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    manifests = tmp_path_factory.mktemp("manifests") / "route.yaml"
    manifests.write_text(MISSING_BACKEND)
    with Mesh(manifests=manifests) as mesh:
        yield mesh


def test_a_backend_ref_to_a_missing_service_is_refused_at_start(
    tmp_path: Path, broken_mesh: Mesh
) -> None:
    (tmp_path / "plan.yaml").write_text(PLAN.replace("frontend-v2", "frontend-v9"))
    cmd = canary_against(broken_mesh, tmp_path / "plan.yaml", tmp_path / "results")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    said = [line for line in done.stderr.splitlines() if line.startswith("meshload: ")]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(said) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "spec.rules[0].backendRefs[1].name" in said[0], said
    assert "frontend-v9" in said[0] and "does not exist" in said[0], said
