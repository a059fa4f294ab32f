"""`python -m benchmarks [P1 P2 P3 P3-stamped P4 P4-long P5-intake P5-throughput SOAK INTAKE]`:
run the benchmarks (names in any case), print each figure with its goal, and write them all to
results/bench/<timestamp>.json. SOAK alone takes over ten minutes, INTAKE five
(MESHLOAD_INTAKE_S=30 for a short run), P4-long a few minutes and 3 GB of /tmp
(MESHLOAD_P4LONG_REQUESTS=1000000 for a run 10x smaller)."""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import meshcore

BENCHMARKS: dict[str, str] = {
    "P1": "benchmarks.throughput:run_p1",
    "P2": "benchmarks.throughput:run_p2",
    "P3": "benchmarks.propagation:run",
    "P3-stamped": "benchmarks.stamped_propagation:run",
    "P4": "benchmarks.analysis_scale:run",
    "P4-long": "benchmarks.analysis_scale:run_long",
    "P5-intake": "benchmarks.distributed:run_intake_bench",
    "P5-throughput": "benchmarks.distributed:run_throughput_bench",
    "SOAK": "benchmarks.soak:run",
    "INTAKE": "benchmarks.intake:run",
}


def _machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
    }


def main(argv: list[str]) -> int:
    names = {key.upper(): key for key in BENCHMARKS}
    wanted = argv or list(BENCHMARKS)
    results = []
    for given in wanted:
        key = names.get(given.upper())
        if key is None:
            print(
                f"unknown benchmark {given}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr
            )
            return 2
        module, _, function = BENCHMARKS[key].partition(":")
        run: Callable[[], dict[str, Any]] = getattr(importlib.import_module(module), function)
        result = run()
        results.append(result)
        figures = ", ".join(
            f"{k} {v}" for k, v in result.items() if k not in ("id", "what", "goal", "met")
        )
        print(
            f"{result['id']}: {result['what']}: {figures} (goal {result['goal']}: "
            f"{'met' if result['met'] else 'NOT met'})",
            flush=True,
        )
    out = Path("results") / "bench" / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"meshload": meshcore.__version__, "machine": _machine(), "results": results}, indent=2
        )
    )
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
