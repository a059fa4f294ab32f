"""Canary verdicts on seeded synthetic latencies, and the order-statistic bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.judge import bootstrap_percentile, default_pair, judge
from meshcore.errors import ConfigError


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
    result = judge(requests_of(1, 4000, shift=1.3), n_boot=500)
    assert result["verdict"] == "fail"
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


def test_tiny_samples_are_inconclusive() -> None:
    result = judge(requests_of(3, 50, shift=2.0))
    assert result["verdict"] == "inconclusive"
    assert "too few" in result["reasons"][0]


def test_default_pair_and_names() -> None:
    frame = requests_of(4, 1000)
    assert default_pair(frame) == ("v1", "v2")
    flipped = judge(frame, baseline="v2", canary="v1", n_boot=200)
    assert flipped["baseline"] == "v2" and set(flipped["n"]) == {"v1", "v2"}
    with pytest.raises(ConfigError):
        judge(frame, max_p99_increase_ms=None, max_p99_increase_pct=None)


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
