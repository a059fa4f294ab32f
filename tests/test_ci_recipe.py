"""The documented CI recipe, run as a CI job would run it (with a shorter plan)."""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ci.md"


def job_commands() -> list[str]:
    """Every `run:` / script line of the documented jobs that invokes meshload's CI script."""
    text = DOC.read_text()
    lines = re.findall(r"^\s*(?:- run:|-)\s*(.+)$", text, flags=re.M)
    return [line.strip() for line in lines if ".ci/canary.sh" in line]


def test_every_documented_job_runs_the_committed_script() -> None:
    commands = job_commands()
    assert len(commands) == 2  # GitHub Actions and GitLab CI
    for command in commands:
        assert command == "RESULTS=results/ci .ci/canary.sh"
    assert os.access(ROOT / ".ci" / "canary.sh", os.X_OK)


@pytest.mark.integration
def test_the_recipe_runs_a_canary_and_gates_it(tmp_path: Path) -> None:
    results = tmp_path / "ci"
    env = {
        **os.environ,
        "RESULTS": str(results),
        "PLAN": str(ROOT / "tests" / "data" / "ci-short-plan.yaml"),
    }
    done = subprocess.run(
        [str(ROOT / ".ci" / "canary.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = [p for p in results.iterdir() if p.is_dir()]
    for name in ("run.json", "summary.json", "report.html", "gates.xml", "split_over_time.png"):
        assert (run / name).is_file(), name
    suite = ET.parse(run / "gates.xml").getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) >= 5
    assert not suite.findall(".//failure")
    # A stricter gate than the run can meet makes the same script fail, with the failure in XML.
    strict = tmp_path / "strict.yaml"
    strict.write_text("latency:\n  '*': {p50_ms: 0.001}\n")
    again = subprocess.run(
        [
            "meshload",
            "check",
            str(run),
            "--thresholds",
            str(strict),
            "--junit",
            str(tmp_path / "strict.xml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 1
    assert ET.parse(tmp_path / "strict.xml").getroot().findall(".//failure")
