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
    "analysis": {"Run", "load_run", "load_spans"},
}


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_exported_names_are_exactly_the_intended_ones(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == EXPECTED[package]
    for name in module.__all__:
        assert getattr(module, name) is not None


@pytest.mark.integration
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
