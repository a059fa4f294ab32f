"""P4: the full report of a synthetic run of 1 M requests + ~5 M spans: seconds (the report's
own count, and the process's wall time), peak memory, and the time against a run 10x smaller,
each report built in a fresh process as `meshload report` builds it.

P4-long: the same for a long run, 10 M requests + 50 M spans + metrics, written part by part
(`benchmarks.long_run`) as a long embedded run leaves its folder; MESHLOAD_P4LONG_REQUESTS
picks another size. Peak memory is the process tree's: the report and its workers."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from analysis.span_reading import default_workers
from benchmarks.procfs import tree_rss_mb

BIG = 1_000_000


def write_folder(folder: Path, n_requests: int) -> int:
    """A run folder from the seeded synthetic generator; returns its span count."""
    from analysis.synthetic import SPAN_SERVICES, make_run

    run = make_run(n_requests=n_requests, seed=5, open_model=True, rps=2000.0)
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(run.run))
    run.requests.to_parquet(folder / "requests.parquet", index=False)
    # trace by trace, in the order the traces started, as a Jaeger fetch writes them (the
    # generator lays its spans out slot by slot: span s of trace i at row s * n + i)
    traced = len(run.spans) // len(SPAN_SERVICES)
    rows = np.arange(len(run.spans)).reshape(len(SPAN_SERVICES), traced).T.ravel()
    run.spans.iloc[rows].to_parquet(folder / "spans.parquet", index=False)
    return len(run.spans)


# what `meshload report FOLDER` does, timed inside the process (as P4 always was) and outside
REPORT = (
    "import sys, time\n"
    "from analysis.report import build_report\n"
    "from analysis.span_reading import default_workers\n"
    "t = time.perf_counter()\n"
    "build_report(sys.argv[1], progress=False, workers=default_workers())\n"
    "print(time.perf_counter() - t)\n"
)


def timed_report(folder: Path) -> tuple[float, float, float]:
    """Seconds of the report in a new process (its own count, then the process's wall time,
    interpreter start and imports included) and the peak resident memory (GB) of that process
    and every process it started, summed: /proc sampled every 20 ms."""
    cmd = [sys.executable, "-c", REPORT, str(folder)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mb(proc.pid))
        if time.perf_counter() - started > 900:
            proc.kill()
        time.sleep(0.02)
    wall = time.perf_counter() - started
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(
            f"the report exited {proc.returncode}: {err.decode(errors='replace')[-500:]}"
        )
    return float(out.split()[-1]), wall, peak / 1024


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meshload-bench-") as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        spans = write_folder(big, BIG)
        write_folder(small, BIG // 10)
        small_s, _, _ = timed_report(small)
        big_s, wall, big_gb = timed_report(big)
    ratio = big_s / small_s
    return {
        "id": "P4",
        "what": f"report of {BIG:,} requests + {spans:,} spans (fresh process)",
        "seconds": round(big_s, 1),
        "wall_seconds": round(wall, 1),
        "peak_gb": round(big_gb, 2),
        "workers": default_workers(),
        "ratio_vs_10x_smaller": round(ratio, 2),
        "goal": "<= 10 s, <= 1.5 GB, ratio <= 11",
        "met": big_s <= 10 and big_gb <= 1.5 and ratio <= 11,
        "max_rss_self_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


LONG = 10_000_000


def run_long() -> dict[str, Any]:
    """P4-long: the report of a long run written part by part, in a fresh process."""
    from benchmarks.long_run import write_long_run

    n = int(os.environ.get("MESHLOAD_P4LONG_REQUESTS") or LONG)
    with tempfile.TemporaryDirectory(prefix="meshload-bench-") as tmp:
        written = write_long_run(Path(tmp) / "long", n)
        seconds, wall, peak_gb = timed_report(Path(tmp) / "long")
    return {
        "id": "P4-long",
        "what": f"report of {n:,} requests + {written['spans']:,} spans + "
        f"{written['samples']:,} samples in parts (fresh process)",
        "seconds": round(seconds, 1),
        "wall_seconds": round(wall, 1),
        "peak_gb": round(peak_gb, 2),
        "workers": default_workers(),
        "generate_seconds": written["seconds"],
        "folder_gb": round(written["bytes"] / 1e9, 2),
        "requests": written["requests"],
        "spans": written["spans"],
        "samples": written["samples"],
        "goal": "<= 120 s, <= 4 GB",
        "met": seconds <= 120 and peak_gb <= 4,
    }
