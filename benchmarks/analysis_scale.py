"""P4: the full report of a synthetic run of 1 M requests + ~5 M spans + metrics: seconds, peak
memory, and the time against a run 10x smaller, each report built in a fresh process."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIG = 1_000_000


def write_folder(folder: Path, n_requests: int) -> int:
    """A run folder from the seeded synthetic generator; returns its span count."""
    from analysis.synthetic import make_run

    run = make_run(n_requests=n_requests, seed=5, open_model=True, rps=2000.0)
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(run.run))
    run.requests.to_parquet(folder / "requests.parquet", index=False)
    run.spans.to_parquet(folder / "spans.parquet", index=False)
    return len(run.spans)


def timed_report(folder: Path) -> tuple[float, float]:
    """Seconds and peak resident memory (GB) of `meshload report FOLDER` in a new process."""
    code = (
        "import resource, sys, time\n"
        "from analysis.report import build_report\n"
        "t = time.perf_counter(); build_report(sys.argv[1], progress=False)\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout.split()
    return float(out[0]), int(out[1]) / 1024 / 1024


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meshload-bench-") as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        spans = write_folder(big, BIG)
        write_folder(small, BIG // 10)
        small_s, _ = timed_report(small)
        started = time.perf_counter()
        big_s, big_gb = timed_report(big)
        wall = time.perf_counter() - started
    ratio = big_s / small_s
    return {
        "id": "P4",
        "what": f"report of {BIG:,} requests + {spans:,} spans (fresh process)",
        "seconds": round(big_s, 1),
        "wall_seconds": round(wall, 1),
        "peak_gb": round(big_gb, 2),
        "ratio_vs_10x_smaller": round(ratio, 2),
        "goal": "<= 60 s, <= 4 GB, ratio <= 11",
        "met": big_s <= 60 and big_gb <= 4 and ratio <= 11,
        "max_rss_self_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
