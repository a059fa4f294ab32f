"""P1 and P2: throughput ratios, each pair measured against one embedded mesh in one run.

P1: the canary scenario (capture, traceparent, client spans exported over OTLP, rollout, run
    folder) against a plain FastHttpUser locustfile doing the same journeys, both hitting the
    same gateway (goal >= 0.9).
P2: the embedded mesh end to end (simulated Boutique, 100 % trace sampling) against Locust ->
    the same Envoy -> a trivial upstream (goal >= 0.6).

Both sides of a ratio are counted in one unit, by an independent counter: the requests the
gateway served per second (Envoy's `http.ingress.downstream_rq_total`, every replica) in the
same window of each run's steady state. Over that window each process's CPU time (Locust's
and each of the mesh's, with their children) is divided by the requests served: µs of CPU per
request, where a side's cost shows whatever the machine's load (on these 2 cores every process
shares the CPU, so the rates follow the sum). Locust's counts differ by locustfile: the plain one
follows a redirect inside one of its requests (POST /cart -> GET /cart counts once), meshload's
journeys record the follow-up as a request of its own; Locust's rates stay in the results.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procfs import tree_cpu_s
from meshsim.mesh import DEFAULT_MANIFESTS, Mesh
from meshsim.resources import load_manifests
from meshsim.spec import DEFAULT_SPEC

HERE = Path(__file__).resolve().parent
USERS = 50
SECONDS = 15
WARM_S = 2.0  # from the load's start to the window's
WINDOW_S = SECONDS - 5.0  # closes before Locust's run time ends
NO_SPANS = {"OTEL_SDK_DISABLED": "true"}
ECHO = """
  - name: echo-v1
    service: echo
    labels: {app: echo, version: v1}
    profile:
      latency_ms: {median: 0, p99: 0}
      error_rate: 0
"""


@dataclass(frozen=True)
class Rates:
    """One headless run: Locust's requests per second and the gateway's, over the same time,
    and per process (Locust, each of the mesh's) its µs of CPU per request the gateway served."""

    locust_rps: float
    gateway_rps: float
    cpu_us: dict[str, float] = field(default_factory=dict)


def served_rps(
    mesh: Mesh, locustfile: str, workdir: Path, *extra: str, env: dict[str, str] | None = None
) -> Rates:
    """A headless Locust run against the mesh's gateway: Locust's own rate (its stats CSV) and
    the rate at which the gateway served requests in a window of the run's steady state (from
    WARM_S after the load started, for WINDOW_S; a meshload run's start-up probes are not
    load), read from Envoy's own counter."""
    admins = [r.admin_url for r in mesh.gateway.replicas] if mesh.gateway else []

    def served() -> int:
        return sum(gateway_requests(a) for a in admins)

    prefix = workdir / Path(locustfile).stem
    cmd, run_env = _locust_command(locustfile, mesh.gateway_url, workdir, prefix, extra, env)
    with open(f"{prefix}.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=run_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        last, deadline = served(), time.monotonic() + SECONDS * 4
        while True:  # the load has started: the users' first requests, not a probe or two
            time.sleep(0.25)
            now = served()
            if now - last >= USERS:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{locustfile}: no load reached the gateway ({prefix}.log)")
            last = now
        time.sleep(WARM_S)
        cpu_before, first, opened = cpu_by_process(mesh, proc.pid), served(), time.monotonic()
        time.sleep(WINDOW_S)
        cpu_after, done, closed = cpu_by_process(mesh, proc.pid), served(), time.monotonic()
        rate = (done - first) / (closed - opened)
        cpu_us = {
            name: round((cpu_after[name] - cpu_before[name]) / max(done - first, 1) * 1e6, 1)
            for name in cpu_after
            if name in cpu_before
        }
        proc.wait(timeout=SECONDS * 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{locustfile}: Locust exited {proc.returncode} ({prefix}.log)")
    return Rates(locust_rps(prefix), rate, cpu_us)


def cpu_by_process(mesh: Mesh, locust_pid: int) -> dict[str, float]:
    """CPU seconds so far of the Locust run and of each of the mesh's processes (by its name),
    each with its children."""
    return {"locust": tree_cpu_s(locust_pid)} | {c.name: tree_cpu_s(c.pid) for c in mesh.children}


def gateway_requests(admin_url: str) -> int:
    """Requests the ingress listener of one Envoy has served (`downstream_rq_total`)."""
    url = f"{admin_url}/stats?filter=^http\\.ingress\\.downstream_rq_total$"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(r"downstream_rq_total: (\d+)", text)
    if found is None:
        raise RuntimeError(f"{admin_url}: no http.ingress.downstream_rq_total in its stats")
    return int(found.group(1))


def _locust_command(
    locustfile: str,
    host: str,
    workdir: Path,
    prefix: Path,
    extra: tuple[str, ...],
    env: dict[str, str] | None,
) -> tuple[list[str], dict[str, str]]:
    plan = workdir / "plan.yaml"
    plan.write_text(f"steps:\n  - {{weights: {{v1: 50, v2: 50}}, hold_s: {SECONDS}}}\n")
    run_env = {**os.environ, "MESHLOAD_PLAN": str(plan), "MESHLOAD_RESULTS_DIR": str(workdir),
               **(env or {})}  # fmt: skip
    cmd = ["locust", "-f", str(HERE / "locustfiles" / locustfile), "--headless", "--host", host,
           "-u", str(USERS), "-r", str(USERS), "-t", f"{SECONDS}s", "--csv", str(prefix),
           "--exit-code-on-error", "0", "--only-summary", *extra]  # fmt: skip
    return cmd, run_env


def locust_rps(prefix: Path) -> float:
    """Requests per second of a finished headless Locust run, from its own stats CSV (its last
    snapshot: Locust writes it every second, so it can miss the run's last moments)."""
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
            kube = kubernetes_options(mesh)
            # the canary makes its client spans too, exported to the mesh's trace store
            spans = {"OTEL_EXPORTER_OTLP_ENDPOINT": str(mesh.jaeger_url)}
            # Interleaved twice, all at the same 50/50 split, so warm-up and drift hit each; the
            # canary without client spans shows what they cost.
            plains, canaries, spanless = [], [], []
            for _ in range(2):
                _route(mesh)
                plains.append(served_rps(mesh, "plain.py", work))
                canaries.append(served_rps(mesh, "meshload_canary.py", work, *kube, env=spans))
                spanless.append(served_rps(mesh, "meshload_canary.py", work, *kube, env=NO_SPANS))
            plain, canary, without = mean_rates(plains), mean_rates(canaries), mean_rates(spanless)
            _route(mesh, [{"route": [{"destination": {"host": "echo"}}]}])
            trivial = served_rps(mesh, "trivial.py", work)
    p1 = ratio("P1", "canary scenario vs plain FastHttpUser, same gateway (gateway-counted)",
               ("canary", canary), ("plain", plain), 0.9)  # fmt: skip
    p1["canary_without_client_spans_rps"] = round(without.gateway_rps, 1)
    p1["canary_without_client_spans_cpu_us_per_request"] = without.cpu_us
    return {
        "P1": p1,
        "P2": ratio("P2", "embedded Boutique end to end vs the same Envoy -> trivial upstream "
                    "(gateway-counted)", ("boutique", plain), ("trivial", trivial), 0.6),
    }  # fmt: skip


def mean_rates(runs: list[Rates]) -> Rates:
    """The runs' mean rates and, per process every run measured, the mean µs per request."""
    names = set.intersection(*(set(r.cpu_us) for r in runs)) if runs else set()
    return Rates(
        sum(r.locust_rps for r in runs) / len(runs),
        sum(r.gateway_rps for r in runs) / len(runs),
        {n: round(sum(r.cpu_us[n] for r in runs) / len(runs), 1) for n in sorted(names)},
    )


def ratio(
    bench: str, what: str, top: tuple[str, Rates], bottom: tuple[str, Rates], goal: float
) -> dict[str, Any]:
    """A benchmark's result: two throughputs measured in one run, their ratio in the gateway's
    count and its goal; Locust's own counts and their ratio beside them."""
    value = top[1].gateway_rps / bottom[1].gateway_rps
    return {
        "id": bench,
        "what": what,
        f"{top[0]}_rps": round(top[1].gateway_rps, 1),
        f"{bottom[0]}_rps": round(bottom[1].gateway_rps, 1),
        "ratio": round(value, 3),
        f"{top[0]}_locust_rps": round(top[1].locust_rps, 1),
        f"{bottom[0]}_locust_rps": round(bottom[1].locust_rps, 1),
        "locust_ratio": round(top[1].locust_rps / bottom[1].locust_rps, 3),
        f"{top[0]}_cpu_us_per_request": top[1].cpu_us,
        f"{bottom[0]}_cpu_us_per_request": bottom[1].cpu_us,
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
