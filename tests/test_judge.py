"""Canary verdicts on seeded synthetic latencies, and the order-statistic bootstrap."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.judge import bootstrap_percentile, judge, run_roles, traffic_roles
from analysis.judge_errors import stratified_exact_p
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
    frame = requests_of(2, 5000, error_rates=(0.01, 0.05))
    result = judge(frame, n_boot=300)
    assert result["verdict"] == "fail"
    assert any("error rate" in r for r in result["reasons"])
    assert result["error_method"] == "step-matched" and result["error_steps"] == [0]
    both = frame[frame["step"] == 0]  # the one step that served both
    rate = {v: 1 - both.loc[both["version"] == v, "ok"].mean() for v in ("v1", "v2")}
    assert result["error_rate_matched"] == pytest.approx(rate)
    assert result["error_rate_diff_pp"] == pytest.approx(100 * (rate["v2"] - rate["v1"]))
    # one step: the stratified test is Fisher's exact test of that step's table
    table = [[int((~both["ok"] & (both["version"] == v)).sum()),
              int((both["ok"] & (both["version"] == v)).sum())] for v in ("v2", "v1")]  # fmt: skip
    fisher = stats.fisher_exact(table, alternative="greater").pvalue
    assert result["error_p"] == pytest.approx(fisher, rel=1e-9, abs=1e-300)
    # the errors of step 1, which v2 served alone, against v1's in step 0
    alone = result["canary_alone"]
    assert alone["steps"] == [1] and alone["n"] == int((frame["step"] == 1).sum())
    assert alone["baseline_step"] == 0 and alone["baseline_rate"] == pytest.approx(rate["v1"])
    assert alone["rate"] == pytest.approx(1 - frame.loc[frame["step"] == 1, "ok"].mean())


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


def erring_run(seed: int, rates: tuple[tuple[float, float], ...], n: int = 3000) -> pd.DataFrame:
    """The canary plan's six steps of n requests each; in each step, v1 and v2 fail at their
    own rates (a step where a version serves nothing ignores its rate)."""
    rng = np.random.default_rng(seed)
    frames = []
    for step, (share, (r_b, r_c)) in enumerate(zip(CANARY_SHARES, rates, strict=True)):
        canary = rng.random(n) < share
        failed = rng.random(n) < np.where(canary, r_c, r_b)
        frames.append(pd.DataFrame({"version": np.where(canary, "v2", "v1"),
                                    "latency_ms": rng.lognormal(2.3, 0.4, n),
                                    "ok": ~failed, "step": step}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def test_warm_up_errors_of_the_baseline_do_not_hide_a_worse_canary() -> None:
    """Step 0 (v1 alone) fails 15 % while the mesh warms up; afterwards v1 fails 0.2 % and v2
    2.5 % in every step. Pooled over the run v1's rate was the higher and the canary passed on
    errors; step-matched it fails, and the reason says where."""
    rates = ((0.15, 0.0), (0.002, 0.025), (0.002, 0.025), (0.002, 0.025), (0.002, 0.025),
             (0.0, 0.025))  # fmt: skip
    frame = erring_run(7, rates)
    result = judge(frame, n_boot=300)
    pooled = {v: 1 - frame.loc[frame["version"] == v, "ok"].mean() for v in ("v1", "v2")}
    assert pooled["v1"] > pooled["v2"]  # what the pooled comparison saw
    assert result["verdict"] == "fail", result["reasons"]
    assert result["error_steps"] == [1, 2, 3, 4]
    assert result["reasons"][0].startswith("error rate up ")
    assert "step-matched over steps 1–4" in result["reasons"][0]
    # independently: each step's rate difference, weighted by n_b n_c / (n_b + n_c)
    diffs, weights = [], []
    for step in (1, 2, 3, 4):
        here = frame[frame["step"] == step]
        b = ~here.loc[here["version"] == "v1", "ok"].to_numpy()
        c = ~here.loc[here["version"] == "v2", "ok"].to_numpy()
        diffs.append(100 * (c.mean() - b.mean()))
        weights.append(len(b) * len(c) / (len(b) + len(c)))
    assert result["error_rate_diff_pp"] == pytest.approx(np.average(diffs, weights=weights))


def test_errors_that_grow_with_the_load_do_not_fail_a_healthy_canary() -> None:
    """Both versions fail alike in each step, more as the load grows from step to step (the
    last step, v2 alone, at step 4's load): pooled, the canary (served mostly late) failed more
    often; step-matched, it does not."""
    growing = tuple((r, r) for r in (0.002, 0.005, 0.01, 0.02, 0.03, 0.03))
    results = [judge(erring_run(seed, growing), n_boot=200) for seed in range(10)]
    assert [r["verdict"] for r in results].count("fail") == 0, [r["reasons"] for r in results]
    assert min(r["error_p"] for r in results) > 0.001
    pooled = judge(erring_run(0, growing).assign(step=0), n_boot=200)  # one step: pooled
    assert pooled["verdict"] == "fail"  # what the pooled comparison made of it


def test_a_canary_that_fails_only_alone_still_fails() -> None:
    """Healthy while it shares the traffic, v2 fails 4 % once it serves all of it (the last
    step): the steps both served see nothing, its own step fails it."""
    rates = ((0.005, 0.0), *[(0.005, 0.005)] * 4, (0.0, 0.04))
    result = judge(erring_run(8, rates), n_boot=300)
    assert result["verdict"] == "fail", result["reasons"]
    assert result["error_rate_diff_pp"] < 1.0  # the shared steps are fine
    assert "in step 5, which v2 served alone" in result["reasons"][0]
    assert "in step 4, the nearest both served" in result["reasons"][0]
    assert result["canary_alone"]["steps"] == [5] and result["canary_alone"]["baseline_step"] == 4


def test_a_blue_green_plan_compares_errors_over_the_run_and_says_so() -> None:
    frame = pd.DataFrame({"version": ["v1"] * 2000 + ["v2"] * 2000, "latency_ms": 10.0,
                          "ok": [True] * 1990 + [False] * 10 + [True] * 1900 + [False] * 100,
                          "step": [0] * 2000 + [1] * 2000})  # fmt: skip
    result = judge(frame, n_boot=200)
    assert result["error_method"] == "pooled" and result["error_steps"] is None
    assert result["error_test"] == "Fisher exact" and "canary_alone" not in result
    assert result["error_rate_diff_pp"] == pytest.approx(100 * (100 / 2000 - 10 / 2000))
    assert result["verdict"] == "fail"


def test_the_stratified_exact_test_against_enumeration() -> None:
    """P(S >= s) by enumerating every way the steps' errors could fall, from binomial
    coefficients alone, against the convolution of hypergeometric distributions."""
    tables = [(3, 10, 1, 12), (0, 4, 2, 9), (5, 15, 4, 20)]  # (e_c, n_c, e_b, n_b)
    dists = []
    for e_c, n_c, e_b, n_b in tables:
        m = e_c + e_b
        ways = {a: math.comb(n_c, a) * math.comb(n_b, m - a) for a in range(m + 1)
                if a <= n_c and m - a <= n_b}  # fmt: skip
        dists.append({a: w / math.comb(n_c + n_b, m) for a, w in ways.items()})
    tail = 0.0
    for combo in itertools.product(*(d.items() for d in dists)):
        if sum(a for a, _ in combo) >= sum(t[0] for t in tables):
            tail += math.prod(p for _, p in combo)
    assert stratified_exact_p(tables) == pytest.approx(tail, rel=1e-9)
    one = tables[0]
    fisher = stats.fisher_exact([[one[0], one[1] - one[0]], [one[2], one[3] - one[2]]],
                                alternative="greater").pvalue  # fmt: skip
    assert stratified_exact_p([one]) == pytest.approx(fisher, rel=1e-9)
    # many errors: the far tails underflow and are trimmed, the p stays a probability
    big = [(4000, 40000, 3000, 40000), (500, 5000, 480, 5000)]
    assert 0.0 <= stratified_exact_p(big) < 1e-20
    assert stratified_exact_p([(480, 5000, 500, 5000)]) > 0.7
