"""P3-stamped: the propagation delay a stamped canary reports, next to P3's own, in one run.

A short canary (scenarios/canary.py, Locust headless on an embedded mesh of its own, stamped,
one gateway replica, no push skew) moves the route 100/0 <-> 0/100 every `STEP_S`, so every
change switches every request and none goes unseen. Its summary gives each change's stamped
delay (`analysis.stamped`: accepted by the API -> the first request start answered by the new
configuration); their median is set beside P3's p50 (`benchmarks.propagation`: a prober's
back-to-back requests on a mesh of their own), measured in the same benchmark run.

The stamped figure also carries the gap from the switch to the next request a user sends, up
to the time between requests (`resolution_ms`): `USERS` keeps the canary at some 200
requests/s, a gap of about 5 ms, well under the goal of 20 ms.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks import propagation
from meshcore.runfolder import SUMMARY_FILE

ROOT = Path(__file__).resolve().parent.parent
CANARY = ROOT / "scenarios" / "canary.py"
STEPS = 12
STEP_S = 2.0
USERS = 80
GOAL_MS = 20.0
TIMEOUT_S = 120.0


def alternating_plan(path: Path) -> Path:
    """STEPS steps of STEP_S, all traffic to v1, then to v2, and back."""
    steps = [
        {"weights": {"v1": 0, "v2": 100} if k % 2 else {"v1": 100, "v2": 0}, "hold_s": STEP_S}
        for k in range(STEPS)
    ]
    plan = {
        "description": f"P3-stamped: 100/0 <-> 0/100 every {STEP_S:g} s",
        "virtual_service": "frontend",
        "namespace": "default",
        "route": "primary",
        "users": USERS,
        "steps": steps,
    }
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def stamped_canary(work: Path) -> list[dict[str, Any]]:
    """Run the canary along the alternating plan; summary.json's stamped propagation rows."""
    cmd = [
        sys.executable, "-m", "locust", "-f", str(CANARY), "--headless", "--only-summary",
        "--plan", str(alternating_plan(work / "plan.yaml")),
        "--results-dir", str(work / "results"), "--run-time", f"{int(TIMEOUT_S) - 30}",
    ]  # fmt: skip
    log_path = work / "locust.log"
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        code = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise RuntimeError(f"the stamped canary overran {TIMEOUT_S:g} s; see {log_path}") from None
    summaries = sorted((work / "results").glob(f"*/{SUMMARY_FILE}"))
    if code not in (0, 3) or not summaries:  # 3: a check failed, the run was still measured
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the stamped canary exited {code}: {tail}")
    summary = json.loads(summaries[-1].read_text())
    return [p for p in summary["propagation"] if p["method"] == "stamped" and p["step"] > 0]


def run() -> dict[str, Any]:
    p3 = propagation.run()
    with tempfile.TemporaryDirectory(prefix="meshload-bench-") as tmp:
        changes = stamped_canary(Path(tmp))
    detected = [c for c in changes if c["detected"] and c["delay_ms"] is not None]
    if not detected:
        raise RuntimeError("the stamped canary detected no weight change")
    median = statistics.median(c["delay_ms"] for c in detected)
    resolution = statistics.median(c["resolution_ms"] for c in detected)
    difference = median - p3["p50_ms"]
    return {
        "id": "P3-stamped",
        "what": "median stamped delay of a canary (Locust, 100/0 <-> 0/100) vs P3's prober p50",
        "changes": STEPS - 1,
        "detected": len(detected),
        "stamped_median_ms": round(median, 2),
        "resolution_median_ms": round(resolution, 2),
        "p3_p50_ms": p3["p50_ms"],
        "difference_ms": round(difference, 2),
        "goal": f"|stamped median - P3 p50| <= {GOAL_MS:g} ms",
        "met": abs(difference) <= GOAL_MS and len(detected) == STEPS - 1,
    }


if __name__ == "__main__":
    print(run(), file=sys.stderr)
