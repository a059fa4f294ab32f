"""Canary verdicts on seeded synthetic latencies, and the order-statistic bootstrap."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from analysis.judge import bootstrap_percentile, judge, run_roles, traffic_roles
from meshcore.errors import ConfigError
from meshcore.figures import Roles


def requests_of(
    seed: int,
    n: int,
    *,
    shift: float = 1.0,
    error_rates: tuple[float, float] = (0.0, 0.0),
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    version = np.where(np.arange(2 * n) < n, "v1", "v2")
    latency = rng.lognormal(np.log(20.0), 0.5, 2 * n) * np.where(version == "v2", shift, 1.0)
    error_rate = np.where(version == "v2", error_rates[1], error_rates[0])
    return pd.DataFrame(
        {
            "version": version,
            "latency_ms": latency,
            "ok": rng.random(2 * n) >= error_rate,
            "step": np.where(np.arange(2 * n) < n + n // 10, 0, 1),
        }
    )


def test_identical_distributions_never_fail() -> None:
    verdicts = [judge(requests_of(seed, 4000), n_boot=500)["verdict"] for seed in range(20)]
    assert "fail" not in verdicts
    assert verdicts.count("pass") >= 10


def test_shifted_canary_fails() -> None:
    frame = requests_of(1, 4000, shift=1.3)
    result = judge(frame, n_boot=500)
    assert result["verdict"] == "fail"
    assert result["latency_method"] == "step-matched" and result["latency_steps"] == [0]
    both = frame[(frame["step"] == 0) & frame["ok"]]  # the one step that served both
    for v in ("v1", "v2"):  # successful requests only, numpy's default percentile
        lat = both.loc[both["version"] == v, "latency_ms"].to_numpy()
        assert result["p99_ms"][v] == np.percentile(lat, 99)
        assert result["p50_ms"][v] == np.percentile(lat, 50)
    assert result["mannwhitney_p"] < 1e-6
    lo, hi = result["p99_diff_ci95"]
    assert lo <= result["p99_diff_ms"] <= hi and lo > result["allowed_p99_increase_ms"]


def test_error_rate_increase_fails() -> None:
    result = judge(requests_of(2, 5000, error_rates=(0.01, 0.05)), n_boot=300)
    assert result["verdict"] == "fail"
    assert any("error rate" in r for r in result["reasons"])
    assert result["error_rate_diff_pp"] == pytest.approx(
        100 * (result["error_rate"]["v2"] - result["error_rate"]["v1"])
    )


def test_errors_decide_first_however_few_successes_remain() -> None:
    # the boutique killed: the canary fails 92 %, the baseline 23 %; too few successes remain
    # for a latency comparison, and the errors alone fail the canary, first reason first
    frame = requests_of(4, 300, error_rates=(0.23, 0.92))
    result = judge(frame)
    assert result["verdict"] == "fail"
    assert result["reasons"][0].startswith("error rate up")
    assert "too few successful requests" in result["reasons"][-1]
    rates = frame.groupby("version")["ok"].apply(lambda ok: 1 - ok.mean())
    assert result["error_rate"] == pytest.approx(rates.to_dict())


def test_tiny_samples_are_inconclusive() -> None:
    result = judge(requests_of(3, 50, shift=2.0))
    assert result["verdict"] == "inconclusive"
    assert "too few" in result["reasons"][0]


def test_names_given_and_thresholds_checked() -> None:
    frame = requests_of(4, 1000)
    flipped = judge(frame, baseline="v2", canary="v1", n_boot=200)
    assert flipped["baseline"] == "v2" and set(flipped["n"]) == {"v1", "v2"}
    assert flipped["roles_source"] == "given"
    with pytest.raises(ConfigError):
        judge(frame, max_p99_increase_ms=None, max_p99_increase_pct=None)


def three_versions(seed: int) -> pd.DataFrame:
    """Step 0 mostly v1 (some v3); later v3 serves more than v2: traffic picks v1 and v3."""
    rng = np.random.default_rng(seed)
    served = {0: {"v1": 600, "v3": 100}, 1: {"v1": 300, "v2": 150, "v3": 400}}
    version = [v for counts in served.values() for v, n in counts.items() for _ in range(n)]
    step = [k for k, counts in served.items() for n in counts.values() for _ in range(n)]
    order = rng.permutation(len(version))
    return pd.DataFrame(
        {
            "version": pd.Categorical(np.array(version)[order]),
            "step": np.array(step)[order],
            "latency_ms": rng.lognormal(np.log(20.0), 0.5, len(version)),
            "ok": np.ones(len(version), dtype=bool),
        }
    )


PLAN = {"steps": [{"weights": {"v1": 100, "v2": 0, "v3": 0}}, {"weights": {"v1": 80, "v2": 20}}]}


def test_traffic_chooses_only_without_a_plan() -> None:
    frame = three_versions(8)
    first = Counter(frame.loc[frame["step"] == frame["step"].min(), "version"])
    baseline = first.most_common(1)[0][0]
    canary = Counter(v for v in frame["version"] if v != baseline).most_common(1)[0][0]
    assert (baseline, canary) == ("v1", "v3")
    assert traffic_roles(frame) == Roles(baseline, canary, "traffic")
    verdict = judge(frame, run={"run_id": "no plan"}, n_boot=100)
    assert (verdict["baseline"], verdict["canary"]) == ("v1", "v3")
    assert verdict["roles_source"] == "traffic"
    assert traffic_roles(frame.iloc[:0]) == Roles(None, None, "none")


def test_the_plan_chooses_over_traffic() -> None:
    frame = three_versions(9)
    # the weights move traffic to v2; the traffic alone would have picked v3
    by_weights = judge(frame, run={"plan": PLAN}, n_boot=100)
    assert (by_weights["baseline"], by_weights["canary"]) == ("v1", "v2")
    assert by_weights["roles_source"] == "plan weights"
    # the plan's canary key wins over its weights; the baseline is the largest other at step 0
    by_key = judge(frame, run={"plan": {**PLAN, "canary": "v3"}}, n_boot=100)
    assert (by_key["baseline"], by_key["canary"], by_key["roles_source"]) == ("v1", "v3", "plan")


def test_run_json_roles_choose_over_plan_and_traffic() -> None:
    frame = three_versions(10)
    recorded = {"baseline": "v3", "canary": "v2", "source": "plan weights"}
    run = {"roles": recorded, "plan": {**PLAN, "canary": "v1"}}
    assert run_roles(run, frame) == Roles("v3", "v2", "run.json")
    verdict = judge(frame, run=run, n_boot=100)
    assert (verdict["baseline"], verdict["canary"]) == ("v3", "v2")
    assert verdict["roles_source"] == "run.json"
    assert set(verdict["n"]) == {"v2", "v3"} and verdict["n"]["v2"] == 150
    # a caller that names the pair still decides
    given = judge(frame, baseline="v1", canary="v3", run=run, n_boot=100)
    assert (given["baseline"], given["canary"], given["roles_source"]) == ("v1", "v3", "given")
    # a broken plan is no plan: the traffic decides
    assert run_roles({"plan": {"steps": [{"weights": "v1"}]}}, frame).source == "traffic"


def test_bootstrap_matches_plain_resampling() -> None:
    rng = np.random.default_rng(5)
    x = rng.lognormal(0.0, 1.0, 300)
    for p in (50.0, 99.0, 37.3):
        fast = bootstrap_percentile(x, p, 8_000, np.random.default_rng(6))
        idx = np.random.default_rng(7).integers(0, len(x), (8_000, len(x)))
        plain = np.percentile(x[idx], p, axis=1)
        qs = [5, 25, 50, 75, 95]
        np.testing.assert_allclose(np.percentile(fast, qs), np.percentile(plain, qs), rtol=0.05)
        assert fast.mean() == pytest.approx(plain.mean(), rel=0.02)


CANARY_SHARES = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)  # the canary plan's steps


def drifting_run(seed: int, scales: tuple[float, ...], shift: float, n: int = 3000) -> pd.DataFrame:
    """The canary plan's six steps of n requests each; latency scaled per step (a drift over
    the run that both versions share) and the canary's by `shift` within every step."""
    rng = np.random.default_rng(seed)
    frames = []
    for step, (share, scale) in enumerate(zip(CANARY_SHARES, scales, strict=True)):
        canary = rng.random(n) < share
        latency = rng.lognormal(np.log(10.0 * scale), 0.4, n) * np.where(canary, shift, 1.0)
        frames.append(pd.DataFrame({"version": np.where(canary, "v2", "v1"),
                                    "latency_ms": latency, "ok": True, "step": step}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def test_a_drift_over_the_run_is_not_read_as_a_version_difference() -> None:
    """Latency falls as the run warms up: pooled over the run, v1 (served mostly early) looks
    slower, and a canary 30 % slower in every step had a p99 26 % lower and passed. Step by
    step it fails."""
    warming = (3.0, 2.5, 2.0, 1.5, 1.0, 1.0)
    frame = drifting_run(3, warming, shift=1.3)
    result = judge(frame, n_boot=500)
    assert result["verdict"] == "fail", result["reasons"]
    assert result["latency_method"] == "step-matched" and result["latency_steps"] == [1, 2, 3, 4]
    assert result["rank_test"] == "van Elteren"
    # independently: each step's numpy percentiles, weighted by n_b n_c / (n_b + n_c)
    diffs, weights = [], []
    for step in (1, 2, 3, 4):
        here = frame[frame["step"] == step]
        b = here.loc[here["version"] == "v1", "latency_ms"].to_numpy()
        c = here.loc[here["version"] == "v2", "latency_ms"].to_numpy()
        diffs.append(np.percentile(c, 99) - np.percentile(b, 99))
        weights.append(len(b) * len(c) / (len(b) + len(c)))
    assert result["p99_diff_ms"] == pytest.approx(np.average(diffs, weights=weights))
    pooled = {v: np.percentile(frame.loc[frame["version"] == v, "latency_ms"], 99)
              for v in ("v1", "v2")}  # fmt: skip
    assert pooled["v2"] < pooled["v1"]  # what the pooled comparison saw


def test_a_load_that_grows_does_not_fail_a_healthy_canary() -> None:
    """Latency rises over the run, both versions alike: pooled, the canary (served mostly late)
    looked slower; step-matched, it is not."""
    growing = (1.0, 1.0, 1.5, 2.0, 2.5, 3.0)
    verdicts = [judge(drifting_run(seed, growing, shift=1.0), n_boot=300) for seed in range(10)]
    assert [v["verdict"] for v in verdicts].count("fail") == 0
    assert min(v["mannwhitney_p"] for v in verdicts) > 0.001


def test_a_blue_green_plan_is_compared_across_steps_and_says_so() -> None:
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"version": ["v1"] * 500 + ["v2"] * 500,
                          "latency_ms": rng.lognormal(np.log(10.0), 0.4, 1000),
                          "ok": True, "step": [0] * 500 + [1] * 500})  # fmt: skip
    result = judge(frame, n_boot=300)
    assert result["latency_method"] == "pooled" and result["latency_steps"] is None
    lat = frame.loc[frame["version"] == "v2", "latency_ms"].to_numpy()
    assert result["p99_ms"]["v2"] == np.percentile(lat, 99)


def test_thin_shared_steps_are_inconclusive_not_pooled() -> None:
    """Steps served both but the canary too thinly to compare there: inconclusive, saying so,
    even though its last step alone has plenty (pooled, that would have been compared)."""
    rng = np.random.default_rng(6)
    versions = ["v1"] * 990 + ["v2"] * 10 + ["v2"] * 2000
    frame = pd.DataFrame({"version": versions, "latency_ms": rng.lognormal(2.3, 0.4, 3000),
                          "ok": True, "step": [1] * 1000 + [2] * 2000})  # fmt: skip
    result = judge(frame, n_boot=300)
    assert result["verdict"] == "inconclusive"
    assert result["latency_method"] == "step-matched" and result["latency_steps"] == []
    assert "too few successful requests to compare latency in the steps that served both: " \
           "v1 990, v2 10, need 200 each" in result["reasons"][-1]  # fmt: skip
