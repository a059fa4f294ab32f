"""P5: Locust's distributed mode with meshload, 4 local workers (`--processes 4`).

P5-intake: users that only fire Locust's request event (benchmarks/locustfiles/records_flood.py)
    make records as fast as 4 workers can; the master lands them in its run folder. Measured
    over a steady window: records landed per second, the master process's CPU share (of one
    core), and so records per master CPU-second, its intake capacity on one core (goal
    >= 20,000/s); at the end every record must have landed (run.json rows == Locust's count).
P5-throughput: the canary scenario with 4 workers against a plain FastHttpUser locustfile with
    4 workers, the same gateway, interleaved in one run (goal ratio >= 0.9, as P1 for one
    process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq

from benchmarks.throughput import (
    HERE,
    _bench_spec,
    _route,
    kubernetes_options,
    mean_rates,
    ratio,
    served_rps,
)
from meshsim.mesh import Mesh
from meshsim.prometheus import free_port

WORKERS = 4
FLOOD_S = 30
WINDOW_S = 12.0
INTAKE_GOAL = 20_000.0


def processes_args(n: int) -> tuple[str, ...]:
    """`--processes n` with its master on 127.0.0.1 and a free port (not Locust's *:5557)."""
    port = str(free_port())
    return ("--processes", str(n), "--master-bind-host", "127.0.0.1",
            "--master-bind-port", port, "--master-port", port)  # fmt: skip


def landed_rows(results: Path) -> int:
    return sum(
        pq.ParquetFile(p).metadata.num_rows for p in results.glob("*/requests/[!._]*.parquet")
    )


def run_intake(mesh: Mesh, work: Path) -> dict[str, Any]:
    plan = work / "flood-plan.yaml"
    plan.write_text(
        f"users: {WORKERS * 4}\nsteps:\n  - {{weights: {{v1: 100, v2: 0}}, hold_s: {FLOOD_S}}}\n"
    )
    results = work / "flood-results"
    cmd = ["locust", "-f", str(HERE / "locustfiles" / "records_flood.py"), "--headless",
           "--host", mesh.gateway_url, "--plan", str(plan), "--results-dir", str(results),
           "--no-stamp", *kubernetes_options(mesh), *processes_args(WORKERS)]  # fmt: skip
    log = work / "flood.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while landed_rows(results) == 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"no records landed: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(3.0)  # every worker at full speed
        master = psutil.Process(proc.pid)
        cpu0, rows0, t0 = sum(master.cpu_times()[:2]), landed_rows(results), time.monotonic()
        time.sleep(WINDOW_S)
        cpu1, rows1, t1 = sum(master.cpu_times()[:2]), landed_rows(results), time.monotonic()
        proc.wait(timeout=FLOOD_S * 4)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    (folder,) = results.iterdir()
    requests = json.loads((folder / "run.json").read_text())["requests"]
    rate = (rows1 - rows0) / (t1 - t0)
    share = (cpu1 - cpu0) / (t1 - t0)
    per_core = rate / share if share > 0 else float("inf")
    complete = requests["rows"] == requests["locust"] and not requests["lost"]
    return {
        "id": "P5-intake",
        "what": f"master's record intake, {WORKERS} local workers firing request events",
        "records_per_s": round(rate),
        "master_cpu_share": round(share, 3),
        "records_per_master_cpu_s": round(per_core),
        "landed": requests["rows"],
        "locust": requests["locust"],
        "goal": f">= {INTAKE_GOAL:,.0f} records per master CPU-second, every record landed",
        "met": per_core >= INTAKE_GOAL and complete,
    }


def run_throughput(mesh: Mesh, work: Path) -> dict[str, Any]:
    kube = kubernetes_options(mesh)
    plains, canaries = [], []
    for _ in range(2):  # interleaved, so warm-up and drift hit both
        _route(mesh)
        plains.append(served_rps(mesh, "plain.py", work, *processes_args(WORKERS)))
        canaries.append(
            served_rps(mesh, "meshload_canary.py", work, *kube, *processes_args(WORKERS))
        )
    plain, canary = mean_rates(plains), mean_rates(canaries)
    what = f"canary scenario vs plain FastHttpUser, {WORKERS} workers each, same gateway"
    return ratio("P5-throughput", what + " (gateway-counted)", ("canary", canary),
                 ("plain", plain), 0.9)  # fmt: skip


_cache: dict[str, dict[str, Any]] = {}


def _both() -> dict[str, dict[str, Any]]:
    if not _cache:
        with tempfile.TemporaryDirectory(prefix="meshload-bench-") as tmp:
            work = Path(tmp)
            with Mesh(spec=_bench_spec(work), prometheus=False, trace_sampling=100.0) as mesh:
                _cache["P5-intake"] = run_intake(mesh, work)
                _cache["P5-throughput"] = run_throughput(mesh, work)
    return _cache


def run_intake_bench() -> dict[str, Any]:
    return _both()["P5-intake"]


def run_throughput_bench() -> dict[str, Any]:
    return _both()["P5-throughput"]
