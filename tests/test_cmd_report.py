"""`meshload report|compare|check`: exit codes 0 / 1 / 2 and one-line errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from analysis.synthetic import make_run
from meshload.cli import main


def crafted(folder: Path, *, p99_ms: float = 80.0, scenario: str = "canary") -> Path:
    folder.mkdir(parents=True)
    summary: dict[str, Any] = {
        "schema_version": 1,
        "run_id": folder.name,
        "run_health": {"ok": True, "line": "Measured as planned"},
        "run": {"scenario": scenario},
        "split": [],
        "propagation": [],
        "latency": {"v1": {"n": 1000, "p50_ms": 20.0, "p99_ms": p99_ms, "max_ms": 300.0}},
        "judge": {"verdict": "pass", "reasons": []},
        "errors": {"v1": {"n": 1000, "errors": 1, "rate": 0.001}},
        "consistency": {"counts": [], "trace_coverage": 0.99},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def one_error_line(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("meshload: error: "), err
    assert "Traceback" not in err


def test_report_writes_the_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # ~4,800 requests a step: a true split passes within 4 pp (it needs 2,401), not within
    # 0.5 pp but for the steps all on one version (10 % needs about 13,800 requests there)
    synth = make_run(n_requests=20_000, seed=101, with_spans=False)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps(synth.run))
    synth.requests.to_parquet(folder / "requests.parquet")
    assert main(["report", str(folder), "--tolerance-pp", "4"]) == 0
    out = capsys.readouterr().out
    assert f"report: {folder / 'report.html'}" in out
    assert "split: 4 of 4 steps passed" in out
    assert "note: no spans" in out
    assert json.loads((folder / "summary.json").read_text())["tolerance_pp"] == 4.0
    assert main(["report", str(folder), "--tolerance-pp", "0.5"]) == 0
    assert "split: 2 of 4 steps passed" in capsys.readouterr().out  # 100/0 steps only
    split = json.loads((folder / "summary.json").read_text())["split"]
    assert [s["verdict"] for s in split] == ["pass", "inconclusive", "inconclusive", "pass"]


@pytest.mark.parametrize("make", ["absent", "empty", "bad-json"])
def test_report_without_a_run_json_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str
) -> None:
    folder = tmp_path / "run"
    if make != "absent":
        folder.mkdir()
    if make == "bad-json":
        (folder / "run.json").write_text("{not json")
    assert main(["report", str(folder)]) == 2
    one_error_line(capsys.readouterr().err)
    assert main(["report", str(tmp_path), "--tolerance-pp", "-1"]) == 2
    assert main(["report", str(tmp_path), "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err


def test_check_exit_codes_and_junit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = crafted(tmp_path / "run")
    th = tmp_path / "th.yaml"
    th.write_text("latency:\n  v1: {p99_ms: 100}\nerrors:\n  v1: {max_rate: 0.01}\n")
    junit = tmp_path / "gates.xml"
    assert main(["check", str(run), "--thresholds", str(th), "--junit", str(junit)]) == 0
    assert "PASS latency: v1 p99_ms <= 100" in capsys.readouterr().out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "0"

    th.write_text("latency:\n  v1: {p99_ms: 50}\nerrors:\n  v1: {max_rate: 0.01}\n")
    assert main(["check", str(run), "--thresholds", str(th), "--junit", str(junit)]) == 1
    assert "FAIL latency: v1 p99_ms <= 50: p99_ms of v1 is 80.00" in capsys.readouterr().out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"

    th.write_text("latency:\n  v1: {p98_ms: 50}\n")
    assert main(["check", str(run), "--thresholds", str(th)]) == 2
    one_error_line(capsys.readouterr().err)
    assert main(["check", str(run), "--thresholds", str(tmp_path / "none.yaml")]) == 2
    one_error_line(capsys.readouterr().err)
    empty = tmp_path / "empty"
    empty.mkdir()
    th.write_text("judge: {verdict: pass}\n")
    assert main(["check", str(empty), "--thresholds", str(th)]) == 2  # no run.json to build from
    one_error_line(capsys.readouterr().err)


def test_compare_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = crafted(tmp_path / "a")
    same = crafted(tmp_path / "same", p99_ms=81.0)
    slow = crafted(tmp_path / "slow", p99_ms=120.0)
    other = crafted(tmp_path / "other", scenario="abtest")
    assert main(["compare", str(a), str(same)]) == 0
    assert "verdict: no regression" in capsys.readouterr().out
    assert main(["compare", str(a), str(slow), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "regression" and result["latency"]["v1"]["p99_ms"]["b"] == 120.0
    assert main(["compare", str(a), str(other)]) == 2
    one_error_line(capsys.readouterr().err)
    assert main(["compare", str(a), str(other), "--force"]) == 0
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    one_error_line(capsys.readouterr().err)
