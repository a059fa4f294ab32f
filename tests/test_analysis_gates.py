"""CI gates on crafted summaries, the thresholds format, and JUnit XML that parses."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from analysis.gates import (
    check_run,
    check_summary,
    junit_xml,
    load_thresholds,
    parse_thresholds,
    write_junit,
)
from meshcore.errors import ConfigError, YamlError

REPO = Path(__file__).resolve().parents[1]


def summary(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "schema_version": 1,
        "run_health": {"ok": True, "line": "Measured as planned"},
        "split": [
            {  # 10 % configured, 12.5 % observed: outside the interval, 2.5 pp off
                "step": 1,
                "configured": {"v1": 0.9, "v2": 0.1},
                "observed": {"v1": 0.875, "v2": 0.125},
                "n": 4000,
                "ci95": {"v1": [0.864, 0.885], "v2": [0.115, 0.136]},
                "error_pp": {"v1": -2.5, "v2": 2.5},
                "passed": False,
            },
            {
                "step": 2,
                "configured": {"v1": 0.0, "v2": 1.0},
                "observed": {"v1": 0.0, "v2": 1.0},
                "n": 400,
                "ci95": {"v1": [0.0, 0.0095], "v2": [0.9905, 1.0]},
                "error_pp": {"v1": 0.0, "v2": 0.0},
                "passed": True,
            },
        ],
        "propagation": [
            {"step": 1, "delay_ms": 800.0},
            {"step": 2, "delay_ms": None},
        ],
        "latency": {
            "v1": {"n": 900, "p50_ms": 20.0, "p99_ms": 90.0, "max_ms": 300.0},
            "v2": {"n": 100, "p50_ms": 25.0, "p99_ms": 260.0, "max_ms": 900.0},
        },
        "judge": {"verdict": "inconclusive", "reasons": ["p99 increase not ruled out"]},
        "errors": {
            "v1": {"n": 900, "errors": 0, "rate": 0.0},
            "v2": {"n": 100, "errors": 2, "rate": 0.02},
        },
        "consistency": {"trace_coverage": 0.95},
    }
    base.update(over)
    return base


def gates_of(thresholds: dict[str, object], s: dict[str, object] | None = None):
    result = check_summary(s or summary(), parse_thresholds(thresholds))
    return {(g.group, g.name): g for g in result.gates}, result


def test_split_gates_follow_the_verdict_at_the_gate_tolerance() -> None:
    gates, _ = gates_of({"split": {"tolerance_pp": 2}})
    # 12.5 % of 4,000: [11.5 %, 13.6 %] straddles 12 %: undecided, so the gate fails
    step1 = gates[("split", "step 1")]
    assert not step1.passed
    assert step1.message.startswith("inconclusive: needs ")
    assert "requests (has 4,000) at 2 pp" in step1.message
    assert "v2 served 12.50 % vs 10.00 % configured (+2.50 pp" in step1.message
    assert gates[("split", "step 2")].passed
    assert "within 2 pp of its weight (n=400)" in gates[("split", "step 2")].message
    gates, _ = gates_of({"split": {"tolerance_pp": 4}})
    assert gates[("split", "step 1")].passed  # both intervals inside their weight +- 4 pp
    gates, result = gates_of({"split": {"tolerance_pp": 3, "steps": [2, 7]}})
    assert set(gates) == {("run", "measured as planned"), ("split", "step 2"), ("split", "step 7")}
    assert not gates[("split", "step 7")].passed  # a step asked for but absent fails
    leaked = summary()
    leaked["split"][1]["observed"] = {"v1": 0.01, "v2": 0.99}  # type: ignore[index]
    gates, _ = gates_of({"split": {"tolerance_pp": 5}}, leaked)
    assert not gates[("split", "step 2")].passed  # weight 0 must serve nothing
    assert "weight-0 version(s) served requests: v1" in gates[("split", "step 2")].message
    off = summary()
    off["split"][0].update(observed={"v1": 0.85, "v2": 0.15}, error_pp={"v1": -5.0, "v2": 5.0},
                           ci95={"v1": [0.839, 0.861], "v2": [0.139, 0.161]})  # fmt: skip
    gates, _ = gates_of({"split": {"tolerance_pp": 2}}, off)
    assert gates[("split", "step 1")].message.startswith(
        "share off by more than 2 pp (its whole 95 % interval): v1, v2; v1 served 85.00 %"
    )
    # versions a run could not see: inconclusive, whatever the tolerance
    unseen = summary()
    unseen["split"][0].update(
        n=4000, n_unknown=2000, observed={"v1": 0.5, "unknown": 0.5}, error_pp={"v1": -40.0}
    )
    gates, _ = gates_of({"split": {"tolerance_pp": 2}}, unseen)
    assert gates[("split", "step 1")].message.startswith(
        "inconclusive: 50.0 % of responses carry no version (set --version-header or allow "
        "stamping) at 2 pp"
    )


def test_propagation_gates_measured_or_estimated() -> None:
    stamped = {
        "step": 1,
        "method": "stamped",
        "delay_ms": 7.0,
        "delay_range_ms": [-3.0, 7.0],
        "by_replica": [
            {"replica": "aa", "pod": "gw-0", "delay_ms": 7.0},
            {"replica": "bb", "pod": "gw-1", "delay_ms": 1900.0},
        ],
    }
    never = {**stamped, "step": 2, "by_replica": [{"replica": "cc", "delay_ms": None}]}
    estimates = [
        {"step": 3, "method": "estimate", "delay_ms": 90.0, "delay_range_ms": [20.0, 400.0]},
        {"step": 4, "method": "estimate", "delay_ms": 900.0, "delay_range_ms": [300.0, 2000.0]},
        {"step": 5, "method": "estimate", "delay_ms": 900.0, "delay_range_ms": [600.0, 2000.0]},
    ]
    gates, _ = gates_of({"propagation": {"max_delay_ms": 500}},
                        summary(propagation=[stamped, never, *estimates]))  # fmt: skip
    by = {name: g for (group, name), g in gates.items() if group == "propagation"}
    assert not by["step 1"].passed and "every replica served it 1900.0 ms" in by["step 1"].message
    assert not by["step 2"].passed and by["step 2"].message == "replica(s) cc never served it"
    assert by["step 3"].passed and "between 20.0 and 400.0 ms" in by["step 3"].message
    assert not by["step 4"].passed and by["step 4"].message.startswith("inconclusive: estimated")
    assert not by["step 5"].passed and "past the limit 500 ms" in by["step 5"].message


def test_every_section_gives_its_gates() -> None:
    thresholds = {
        "propagation": {"max_delay_ms": 500},
        "latency": {
            "v2": {"p99_ms": 250, "p50_ms": 40},
            "*": {"max_ms": 1000},
            "v9": {"p50_ms": 1},
        },
        "judge": {"verdict": ["pass", "inconclusive"]},
        "errors": {"v1": {"max_rate": 0.01}, "v2": {"max_rate": 0.01}},
        "consistency": {"min_trace_share": 0.9},
    }
    gates, result = gates_of(thresholds)
    verdicts = {k: g.passed for k, g in gates.items()}
    assert verdicts == {
        ("run", "measured as planned"): True,
        ("propagation", "step 1"): False,  # 800 ms > 500; the undetected step 2 has no gate
        ("latency", "v2 p99_ms <= 250"): False,
        ("latency", "v2 p50_ms <= 40"): True,
        ("latency", "v1 max_ms <= 1000"): True,
        ("latency", "v2 max_ms <= 1000"): True,
        ("latency", "v9 p50_ms <= 1"): False,  # a version that served nothing cannot pass
        ("judge", "verdict"): True,
        ("errors", "v1 error rate <= 0.01"): True,
        ("errors", "v2 error rate <= 0.01"): False,
        ("consistency", "trace share >= 0.9"): True,
    }
    assert not result.passed and len(result.failures) == 4
    gates, result = gates_of(
        {"judge": {"verdict": "pass"}, "consistency": {"min_trace_share": 0.5}},
        summary(consistency={"trace_coverage": None}),
    )
    assert not gates[("judge", "verdict")].passed
    assert "no traces" in gates[("consistency", "trace share >= 0.5")].message
    assert check_summary(summary(), parse_thresholds(None)).passed


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"splitt": {}}, "unknown key(s) splitt"),
        ({"latency": {"v2": {"p98_ms": 3}}}, "latency.v2 has unknown key(s) p98_ms"),
        ({"latency": {"v2": {"p99_ms": "fast"}}}, "latency.v2.p99_ms must be a number"),
        ({"errors": {"v2": {"max_rate": 5}}}, "errors.v2.max_rate must be between 0 and 1"),
        ({"judge": {"verdict": "great"}}, "judge.verdict must be one of"),
        ({"split": {"steps": "all"}}, "split.steps must be a list"),
        ({"consistency": {"min_trace_share": True}}, "must be a number"),
        (["split"], "the file must be a mapping"),
    ],
)
def test_bad_thresholds_name_the_key(doc: object, words: str) -> None:
    with pytest.raises(ConfigError, match="thresholds: ") as err:
        parse_thresholds(doc)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_thresholds_files(tmp_path: Path) -> None:
    example = load_thresholds(REPO / "scenarios" / "thresholds" / "ci.yaml")
    assert set(example) == {"split", "propagation", "latency", "judge", "errors", "consistency"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("split:\n  tolerance_pp: [\n")
    with pytest.raises(YamlError, match=r"bad.yaml: line \d+: .*; fix the YAML syntax"):
        load_thresholds(bad)
    with pytest.raises(ConfigError, match="cannot read the thresholds file"):
        load_thresholds(tmp_path / "absent.yaml")


def test_junit_xml_has_one_case_per_gate(tmp_path: Path) -> None:
    s = summary(judge={"verdict": "fail", "reasons": ["p99 up <b>&\x01 ms"]})
    _, result = gates_of({"split": {"tolerance_pp": 2}, "judge": {"verdict": "pass"}}, s)
    root = ET.fromstring(junit_xml(result))
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(cases)) == "4"
    failed = [c for c in cases if c.find("failure") is not None]
    assert suite.get("failures") == str(len(failed)) == "2"
    judge = next(c for c in cases if c.get("classname") == "meshload.check.judge")
    failure = judge.find("failure")
    assert failure is not None and "p99 up <b>&? ms" in (failure.get("message") or "")
    path = tmp_path / "gates.xml"
    write_junit(result, path)
    assert ET.parse(path).getroot().tag == "testsuites"


def test_check_run_reads_summary_json(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps(summary()))
    th = tmp_path / "th.yaml"
    th.write_text("latency:\n  v1: {p99_ms: 100}\n")
    result = check_run(tmp_path, th)
    names = [g.name for g in result.gates]
    assert result.passed and names == ["measured as planned", "v1 p99_ms <= 100"]


def test_a_run_not_measured_as_planned_fails_its_first_gate() -> None:
    broken = {"ok": False, "line": "NOT MEASURED AS PLANNED: the embedded mesh's envoy exited"}
    result = check_summary(summary(run_health=broken), parse_thresholds(None))
    assert not result.passed and result.gates[0].group == "run"
    assert "envoy exited" in result.gates[0].message
    old = summary()
    del old["run_health"]
    result = check_summary(old, parse_thresholds(None))
    assert not result.passed and "rebuild it with `meshload report`" in result.gates[0].message


def test_a_step_not_applied_or_broken_fails_its_split_gate() -> None:
    steps = summary()["split"]
    assert isinstance(steps, list)
    steps[1] = {**steps[1], "broken": True, "reason": "broken: 61 % of 400 requests failed"}
    steps.append({"step": 3, "configured": {"v2": 1.0}, "observed": {}, "n": 0,
                  "applied": False, "reason": "not applied: API unreachable"})  # fmt: skip
    gates, _ = gates_of({"split": {"tolerance_pp": 5}}, summary(split=steps))
    assert gates[("split", "step 1")].passed
    assert not gates[("split", "step 2")].passed and "broken" in gates[("split", "step 2")].message
    assert gates[("split", "step 3")].message == "not applied: API unreachable"
