"""SOAK: memory of every process over a ten-minute canary run on the embedded mesh.

One embedded mesh (Prometheus too when installed) records its telemetry into a run folder, as
a run's conductor has it do (`Mesh.record`): spans through the trace store, metrics through the
scraper. Locust runs scenarios/canary.py against it along benchmarks/plans/soak.yaml (600 s at
the plan's users, think time as shipped). Every `SAMPLE_S` the resident memory of each process
is read from /proc by PID; after the warm-up, the slope of a least-squares line through each
process's samples is its growth in MB per minute (goal: under 5 for every process).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.procfs import cpu_s, rss_mb
from benchmarks.throughput import kubernetes_options
from meshcore.runfolder import METRICS_DIR, SPANS_DIR, RunFolder
from meshsim.mesh import Mesh

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PLAN = HERE / "plans" / "soak.yaml"
SAMPLE_S = 10.0
WARMUP_S = 60.0
GOAL_MB_PER_MIN = 5.0


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    n = len(samples)
    if n < 2:
        return float("nan")
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in samples)
    return 60.0 * cov / var if var else float("nan")


def mesh_pids(mesh: Mesh) -> dict[str, int]:
    pids = {c.name: c.pid for c in mesh.children}
    if mesh.scraper is not None:
        pids["scraper"] = mesh.scraper.pid
    if mesh.prometheus is not None:
        pids["prometheus"] = mesh.prometheus.child.pid
    return pids


def start_locust(mesh: Mesh, work: Path, plan: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MESHLOAD_PLAN": str(plan), "MESHLOAD_RESULTS_DIR": str(work)}
    return subprocess.Popen(
        [
            "locust",
            "-f",
            str(ROOT / "scenarios" / "canary.py"),
            "--headless",
            "--host",
            mesh.gateway_url,
            *kubernetes_options(mesh),
            "--only-summary",
        ],
        env=env,
        stdout=(work / "locust.log").open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def measure(
    pids: Mapping[str, int], proc: subprocess.Popen[bytes], timeout_s: float
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, float]]:
    """RSS samples of every process until Locust exits (bounded by `timeout_s`), and the CPU
    seconds each used meanwhile."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
    cpu = {name: cpu_s(pid) or 0.0 for name, pid in pids.items()}
    used = dict.fromkeys(pids, 0.0)
    started = time.monotonic()
    while proc.poll() is None:
        t = time.monotonic() - started
        if t > timeout_s:
            proc.terminate()
            proc.wait(30)
            break
        for name, pid in pids.items():
            mb, seconds = rss_mb(pid), cpu_s(pid)
            if mb is not None:
                samples[name].append((t, mb))
            if seconds is not None:
                used[name] = seconds - cpu[name]
        time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - started - t)))
    return samples, used


def run(plan: Path = PLAN, warmup_s: float = WARMUP_S) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meshload-soak-") as tmp:
        work = Path(tmp)
        folder = RunFolder.create(work, "soak-telemetry")
        with Mesh() as mesh:
            mesh.record(folder.path)
            proc = start_locust(mesh, work, plan)
            pids = {**mesh_pids(mesh), "locust": proc.pid}
            samples, cpu = measure(pids, proc, timeout_s=3600)
            mesh.stop_recording()
        if proc.returncode not in (0, 3):
            tail = (work / "locust.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"locust exited {proc.returncode}: {tail}")
        spans = sum(int(s.get("rows") or 0) for s in folder.recordings(SPANS_DIR))
        samples_recorded = sum(int(s.get("rows") or 0) for s in folder.recordings(METRICS_DIR))
    minutes = max((t for s in samples.values() for t, _ in s), default=0.0) / 60
    slopes = {
        name: slope_per_min([(t, mb) for t, mb in points if t >= warmup_s])
        for name, points in samples.items()
    }
    result: dict[str, Any] = {
        "id": "SOAK",
        "what": f"RSS growth per process over a {minutes:.1f} min canary run (after "
        f"{warmup_s:.0f} s), MB/min",
    }
    for name, slope in slopes.items():
        result[f"{name}_mb_per_min"] = round(slope, 2)
    result["rss_mb"] = {
        name: [round(next((mb for t, mb in s if t >= warmup_s), s[0][1])), round(s[-1][1])]
        for name, s in samples.items()
        if s
    }
    result["cpu_s"] = {name: round(seconds, 1) for name, seconds in cpu.items()}
    result["spans_recorded"] = spans
    result["samples_recorded"] = samples_recorded
    result["goal"] = f"< {GOAL_MB_PER_MIN:g} MB/min for every process"
    result["met"] = all(s < GOAL_MB_PER_MIN for s in slopes.values())
    return result


if __name__ == "__main__":
    print(run(Path(sys.argv[1]) if len(sys.argv) > 1 else PLAN), file=sys.stderr)
