"""compare_runs: deltas equal plain differences, regressions flagged, mismatched runs refused."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from analysis.compare import compare_runs, format_comparison
from analysis.report import error_counts
from analysis.summary import build_summary, json_safe
from analysis.synthetic import make_run
from meshcore.errors import ConfigError


def summary_of(seed: int, **kwargs: Any) -> dict[str, Any]:
    synth = make_run(n_requests=4000, seed=seed, with_spans=False, **kwargs)
    out = build_summary(synth.run, synth.requests, None)
    out["run"] = {"scenario": "canary", "run_id": f"run-{seed}"}
    out["errors"] = json_safe(error_counts(synth.requests))
    return out


@pytest.fixture(scope="module")
def before() -> dict[str, Any]:
    return summary_of(91)


def test_same_behaviour_is_no_regression(before) -> None:
    again = summary_of(92)  # another seed, same system: noise only
    result = compare_runs(before, again)
    assert result["verdict"] == "no regression", result["regressions"]
    json.dumps(result, allow_nan=False)
    v2 = result["latency"]["v2"]["p99_ms"]
    assert v2["diff_ms"] == pytest.approx(v2["b"] - v2["a"])
    assert v2["a"] == before["latency"]["v2"]["p99_ms"]
    assert "verdict: no regression" in format_comparison(result)


def test_slower_canary_is_a_regression(before) -> None:
    slower = summary_of(93, slowdown={"v2": 1.5})
    result = compare_runs(before, slower)
    assert result["verdict"] == "regression"
    assert any(r.startswith("v2 p99") for r in result["regressions"])
    assert any(r.startswith("v2 p50") for r in result["regressions"])
    assert not any(r.startswith("v1 ") for r in result["regressions"])
    p50 = result["latency"]["v2"]["p50_ms"]
    assert p50["diff_pct"] == pytest.approx((p50["b"] - p50["a"]) / p50["a"] * 100)
    assert "REGRESSION: v2 p99" in format_comparison(result)
    # the other way round it is an improvement, not a regression
    back = compare_runs(slower, before)
    assert back["verdict"] == "no regression" and back["improvements"]


def test_errors_split_and_judge_regressions(before) -> None:
    failing = summary_of(94, error_rate={"v2": 0.05})
    result = compare_runs(before, failing)
    assert any(r.startswith("v2 error rate") for r in result["regressions"])
    assert result["errors"]["v2"]["diff_pp"] == pytest.approx(
        (failing["errors"]["v2"]["rate"] - before["errors"]["v2"]["rate"]) * 100
    )
    broken = copy.deepcopy(before)
    broken["split"][1].update(passed=False, verdict="fail")
    broken["split"][1]["reason"] = "share off by more than 2 pp: v2"
    broken["judge"]["verdict"] = "fail"
    good = copy.deepcopy(before)
    good["split"][1].update(passed=True, verdict="pass")  # 1,000 requests alone cannot pass it
    good["judge"]["verdict"] = "pass"
    result = compare_runs(good, broken)
    assert (
        "split step 1 passed before, fails now: share off by more than 2 pp: v2"
        in result["regressions"]
    )
    assert "judge verdict pass -> fail" in result["regressions"]


def test_mismatched_runs_are_refused_unless_forced(before) -> None:
    other = copy.deepcopy(before)
    other["run"]["scenario"] = "abtest"
    with pytest.raises(ConfigError, match=r"different scenarios \(canary vs abtest\).*--force"):
        compare_runs(before, other)
    assert compare_runs(before, other, force=True)["b"]["scenario"] == "abtest"
    newer = copy.deepcopy(before)
    newer["schema_version"] = 2
    with pytest.raises(ConfigError, match="schema versions"):
        compare_runs(before, newer)


def test_runs_of_different_plans_are_refused_unless_forced(before) -> None:
    """The canary plan's step 3 is 25 % to v2, the CI plan's 100 %: step by step they say
    nothing of each other."""
    canary = {"steps": [{"weights": {"v1": 100 - w, "v2": w}} for w in (0, 5, 10, 25, 50, 100)]}
    ci = {"steps": [{"weights": {"v1": 100 - w, "v2": w}} for w in (0, 10, 50, 100)]}
    a, b = copy.deepcopy(before), copy.deepcopy(before)
    a["run"]["plan"], b["run"]["plan"] = canary, ci
    with pytest.raises(ConfigError, match=r"different plans \(6 steps vs 4\).*--force"):
        compare_runs(a, b)
    b["run"]["plan"] = copy.deepcopy(canary)
    b["run"]["plan"]["steps"][3]["weights"] = {"v1": 80, "v2": 20}
    with pytest.raises(ConfigError, match=r"step 3: v1 75, v2 25 vs v1 80, v2 20"):
        compare_runs(a, b)
    b["run"]["plan"]["steps"][3]["hold_s"] = 60  # a longer hold alone: still alike
    b["run"]["plan"]["steps"][3]["weights"] = {"v1": 75, "v2": 25}
    assert compare_runs(a, b)["verdict"] == "no regression"
    assert compare_runs(a, {**b, "run": {**b["run"], "plan": ci}}, force=True)["split"]
