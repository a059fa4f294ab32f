"""Each package offers exactly the names it means to, and every one of them resolves."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

EXPECTED = {
    "meshcore": {
        "BackendError",
        "ConfigError",
        "ExitCode",
        "ManifestError",
        "MeshloadError",
        "RunFolderError",
        "YamlError",
        "__version__",
    },
    "meshload": {"__version__"},
    "meshsim": {
        "Mesh",
        "MeshSpec",
        "Resource",
        "Snapshot",
        "Workload",
        "build_snapshot",
        "load_manifests",
        "load_spec",
    },
    "loadgen": {
        "OPTIONS",
        "Plan",
        "RequestCapture",
        "Settings",
        "Step",
        "StepClock",
        "load_plan",
        "parse_plan",
    },
    "analysis": {
        "CheckResult",
        "PrometheusClient",
        "ReportResult",
        "Run",
        "build_report",
        "build_summary",
        "check_run",
        "cohort_reach",
        "compare_runs",
        "consistency_table",
        "fetch_telemetry",
        "hop_stats",
        "hop_table",
        "hop_times",
        "judge",
        "latency_over_time",
        "latency_percentiles",
        "load_run",
        "load_spans",
        "metrics_counts_from_istio",
        "propagation",
        "read_metrics",
        "service_graph",
        "split_accuracy",
        "stickiness",
        "wilson_interval",
        "write_junit",
    },
}


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_exported_names_are_exactly_the_intended_ones(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == EXPECTED[package]
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_loadgen_does_not_import_locust() -> None:
    code = (
        "import sys, loadgen\n"
        "[getattr(loadgen, n) for n in loadgen.__all__]\n"
        "print('locust' in sys.modules, 'gevent' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"], "importing loadgen must not import Locust (gevent patching)"


def test_analysis_never_imports_loadgen_or_meshsim() -> None:
    code = (
        "import sys, analysis\n"
        "[getattr(analysis, n) for n in analysis.__all__]\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('loadgen', 'meshsim')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
