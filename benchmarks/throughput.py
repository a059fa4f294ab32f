"""P1 and P2: throughput ratios, each pair measured against one embedded mesh in one run.

P1: the canary scenario (capture, traceparent, client spans exported over OTLP, rollout, run
    folder) against a plain FastHttpUser locustfile doing the same journeys, both hitting the
    same gateway (goal >= 0.9).
P2: the embedded mesh end to end (simulated Boutique, 100 % trace sampling) against Locust ->
    the same Envoy -> a trivial upstream (goal >= 0.5).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from meshsim.mesh import DEFAULT_MANIFESTS, Mesh
from meshsim.resources import load_manifests
from meshsim.spec import DEFAULT_SPEC

HERE = Path(__file__).resolve().parent
USERS = 50
SECONDS = 15
ECHO = """
  - name: echo-v1
    service: echo
    labels: {app: echo, version: v1}
    profile:
      latency_ms: {median: 0, p99: 0}
      error_rate: 0
"""


def locust_rps(
    locustfile: str, host: str, workdir: Path, *extra: str, env: dict[str, str] | None = None
) -> float:
    """Requests per second of a headless Locust run, from its own stats CSV."""
    prefix = workdir / Path(locustfile).stem
    plan = workdir / "plan.yaml"
    plan.write_text(f"steps:\n  - {{weights: {{v1: 50, v2: 50}}, hold_s: {SECONDS}}}\n")
    env = {**os.environ, "MESHLOAD_PLAN": str(plan), "MESHLOAD_RESULTS_DIR": str(workdir),
           **(env or {})}  # fmt: skip
    subprocess.run(
        [
            "locust",
            "-f",
            str(HERE / "locustfiles" / locustfile),
            "--headless",
            "--host",
            host,
            "-u",
            str(USERS),
            "-r",
            str(USERS),
            "-t",
            f"{SECONDS}s",
            "--csv",
            str(prefix),
            "--exit-code-on-error",
            "0",
            "--only-summary",
            *extra,
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=SECONDS * 10,
    )
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    return float(rows["Aggregated"]["Requests/s"])


def _bench_spec(workdir: Path) -> Path:
    spec = workdir / "bench-spec.yaml"
    spec.write_text(DEFAULT_SPEC.read_text().rstrip() + "\n" + ECHO)
    return spec


def _route(mesh: Mesh, http: list[dict[str, Any]] | None = None) -> None:
    """The canary manifests at 50/50 (the plan's weights), or with other HTTP routes."""
    resources = load_manifests(DEFAULT_MANIFESTS)
    for r in resources:
        if r.kind == "VirtualService":
            if http is not None:
                r.spec["http"] = http
            else:
                for dest in r.spec["http"][0]["route"]:
                    dest["weight"] = 50
    mesh.apply(resources)


def kubernetes_options(mesh: Mesh) -> tuple[str, ...]:
    """A meshload scenario's options to run against this mesh as against a cluster: the
    rollout through its Kubernetes API, no telemetry fetched at the end."""
    return (
        "--mesh",
        "kubernetes",
        "--kubeconfig",
        str(mesh.kubeconfig),
        "--jaeger-url",
        "",
        "--prometheus-url",
        "",
    )


def run_pair() -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="meshload-bench-") as tmp:
        work = Path(tmp)
        with Mesh(spec=_bench_spec(work), prometheus=False, trace_sampling=100.0) as mesh:
            gateway = mesh.gateway_url
            kube = kubernetes_options(mesh)
            # the canary makes its client spans too, exported to the mesh's trace store
            spans = {"OTEL_EXPORTER_OTLP_ENDPOINT": str(mesh.jaeger_url)}
            # Interleaved twice, both at the same 50/50 split, so warm-up and drift hit both.
            plains, canaries = [], []
            for _ in range(2):
                _route(mesh)
                plains.append(locust_rps("plain.py", gateway, work))
                canaries.append(locust_rps("meshload_canary.py", gateway, work, *kube, env=spans))
            plain, canary = sum(plains) / 2, sum(canaries) / 2
            _route(mesh, [{"route": [{"destination": {"host": "echo"}}]}])
            trivial = locust_rps("trivial.py", gateway, work)
    return {
        "P1": ratio("P1", "canary scenario vs plain FastHttpUser, same gateway",
                    ("canary_rps", canary), ("plain_rps", plain), 0.9),
        "P2": ratio("P2", "embedded Boutique end to end vs the same Envoy -> trivial upstream",
                    ("boutique_rps", plain), ("trivial_rps", trivial), 0.5),
    }  # fmt: skip


def ratio(
    bench: str, what: str, top: tuple[str, float], bottom: tuple[str, float], goal: float
) -> dict[str, Any]:
    """A benchmark's result: two throughputs measured in one run and their ratio's goal."""
    value = top[1] / bottom[1]
    return {
        "id": bench,
        "what": what,
        top[0]: round(top[1], 1),
        bottom[0]: round(bottom[1], 1),
        "ratio": round(value, 3),
        "goal": f"ratio >= {goal}",
        "met": value >= goal,
    }


_cache: dict[str, dict[str, Any]] = {}


def run_p1() -> dict[str, Any]:
    if not _cache:
        _cache.update(run_pair())
    return _cache["P1"]


def run_p2() -> dict[str, Any]:
    if not _cache:
        _cache.update(run_pair())
    return _cache["P2"]


if __name__ == "__main__":
    print(run_pair(), file=sys.stderr)
