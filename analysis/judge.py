"""Canary vs baseline: a verdict, with the evidence and the reasons behind it.

Latency is compared on successful requests (a fast 503 must not make a canary look quick):
Mann-Whitney U one-sided (canary slower), and bootstrap 95 % intervals on the p50 and p99
differences. Errors: Fisher's exact test, one-sided (canary fails more often).

Errors are decided first, on every request of both versions: a canary whose error rate is
significantly (Fisher) and materially (more than the allowance) above the baseline's fails,
however few successful requests are left for the latency comparison, and that reason comes
first. Then the verdict asks the latency data to be decisive in either direction:
- fail: the p99 (or p50) increase is above its allowance even at the low end of its interval;
- pass: the high end of the p99 interval is within the allowance and the error rate is fine;
- inconclusive: anything else, including too few successful requests.

The bootstrap draws the resampled order statistics directly (U_(r) ~ Beta(r, n - r + 1) mapped
through the empirical quantile function), which has exactly the distribution of resampling the
whole sample, at O(draws) cost instead of O(draws * n); so no subsampling cap is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis.changepoint import UNKNOWN, label_codes
from meshcore.errors import ConfigError
from meshcore.figures import (
    Roles,
    choose_roles,
    percentile,
    roles_from_traffic,
    sorted_percentile,
)


def bootstrap_percentile(
    values: np.ndarray, percentile: float, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """n_boot draws of np.percentile(resample, percentile) for resamples of `values`."""
    x = np.asarray(values, dtype=float)
    if not _ascending(x):
        x = np.sort(x)
    n = len(x)
    virtual = (n - 1) * np.true_divide(percentile, 100)
    r = int(np.floor(virtual)) + 1  # 1-based order statistic below the virtual index
    gamma = virtual - (r - 1)
    u_low = rng.beta(r, n - r + 1, n_boot)

    def take(u: np.ndarray) -> np.ndarray:
        return x[np.clip(np.ceil(n * u).astype(np.int64) - 1, 0, n - 1)]

    low = take(u_low)
    if r >= n or gamma == 0:
        return low
    u_high = u_low + (1 - u_low) * rng.beta(1, n - r, n_boot)
    high = take(u_high)
    diff = high - low
    return np.where(gamma >= 0.5, high - diff * (1 - gamma), low + diff * gamma)


def _ascending(x: np.ndarray) -> bool:
    return bool(np.all(x[1:] >= x[:-1]))


def run_roles(run: Mapping[str, Any] | None, requests: pd.DataFrame) -> Roles:
    """Baseline and canary by meshcore.figures' rule: run.json's `roles` (source "run.json"),
    else the recorded plan's canary and weights, else (no plan) the traffic."""
    run = run or {}
    recorded = run.get("roles")
    if isinstance(recorded, Mapping) and recorded.get("canary"):
        return Roles(recorded.get("baseline"), recorded["canary"], "run.json")
    plan: Any = run.get("plan")
    if weights := _plan_weights(plan):
        return choose_roles(weights, plan.get("canary"))
    return traffic_roles(requests)


def _plan_weights(plan: Any) -> list[dict[str, float]]:
    """run.json's `plan.steps[k].weights`; none when the plan is absent or not of that shape."""
    steps = plan.get("steps") if isinstance(plan, Mapping) else None
    try:
        return [{str(k): float(w) for k, w in s["weights"].items()} for s in steps or []]
    except (AttributeError, KeyError, TypeError, ValueError):
        return []


def traffic_roles(requests: pd.DataFrame) -> Roles:
    """A run without a plan: versions served in the first step, and in the whole run."""
    codes, names = label_codes(requests["version"])
    known = codes != _code_of(names, UNKNOWN)
    if not known.any():
        return roles_from_traffic({}, {})
    steps = requests["step"].to_numpy()
    first = known & (steps == steps[known].min())
    return roles_from_traffic(_counts(codes[first], names), _counts(codes[known], names))


def _code_of(names: np.ndarray, name: str) -> int:
    """The code of `name` among label_codes' names; -1 (no row) when absent."""
    at = np.flatnonzero(names == name)
    return int(at[0]) if len(at) else -1


def _counts(codes: np.ndarray, names: np.ndarray) -> dict[str, int]:
    """{name: rows} of the names present, by name."""
    n = np.bincount(codes, minlength=len(names))
    return {str(names[i]): int(n[i]) for i in np.argsort(names) if n[i]}


def judge(
    requests: pd.DataFrame,
    *,
    baseline: str | None = None,
    canary: str | None = None,
    run: Mapping[str, Any] | None = None,
    column: str = "latency_ms",
    steps: Sequence[int] | None = None,
    alpha: float = 0.05,
    max_p99_increase_ms: float | None = None,
    max_p99_increase_pct: float | None = 10.0,
    max_p50_increase_pct: float | None = 10.0,
    max_error_rate_increase_pp: float = 1.0,
    min_samples: int = 200,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The verdict dict of summary.json's `judge` (see the module docstring for the rule).

    The pair compared is `baseline` and `canary` where given (`roles_source` "given"), the
    rest chosen by `run_roles` from `run` (run.json) and the requests; `roles_source` says how.

    The p99 allowance is the smaller of max_p99_increase_ms and max_p99_increase_pct of the
    baseline p99 (whichever are given); the p50 allowance is max_p50_increase_pct of the baseline
    p50 (None switches the p50 check off).
    """
    if max_p99_increase_ms is None and max_p99_increase_pct is None:
        raise ConfigError(
            "judge needs a p99 allowance: give max_p99_increase_ms or max_p99_increase_pct"
        )
    if steps is not None:
        requests = requests[requests["step"].isin(list(steps)).to_numpy()]
    chosen = run_roles(run, requests)
    source = "given" if baseline or canary else chosen.source
    baseline = baseline or chosen.baseline
    canary = canary or (chosen.canary if chosen.canary != baseline else None)
    out: dict[str, Any] = {
        "verdict": "inconclusive",
        "reasons": [],
        "baseline": baseline,
        "canary": canary,
        "roles_source": source,
        "thresholds": {
            "alpha": alpha,
            "max_p99_increase_ms": max_p99_increase_ms,
            "max_p99_increase_pct": max_p99_increase_pct,
            "max_p50_increase_pct": max_p50_increase_pct,
            "max_error_rate_increase_pp": max_error_rate_increase_pp,
            "min_samples": min_samples,
        },
    }
    if baseline is None or canary is None:
        out["reasons"].append("need two versions with traffic to compare")
        return out
    codes, names = label_codes(requests["version"])
    ok = requests["ok"].to_numpy(dtype=bool)
    latency = requests[column].to_numpy(dtype=float)
    groups = {}
    for role, v in (("baseline", baseline), ("canary", canary)):
        mine = codes == _code_of(names, v)
        # sorted once: every percentile, bootstrap and rank below reads the sorted sample
        groups[role] = (
            np.sort(latency[mine & ok & ~np.isnan(latency)]),
            int(mine.sum()),
            int((mine & ~ok).sum()),
        )
    (lat_b, n_b, err_b), (lat_c, n_c, err_c) = groups["baseline"], groups["canary"]
    out["n"] = {baseline: n_b, canary: n_c}
    out["errors"] = {baseline: err_b, canary: err_c}
    rate_b, rate_c = err_b / max(n_b, 1), err_c / max(n_c, 1)
    out["error_rate"] = {baseline: rate_b, canary: rate_c}
    out["error_rate_diff_pp"] = (rate_c - rate_b) * 100.0
    table = [[err_c, n_c - err_c], [err_b, n_b - err_b]]
    out["error_p"] = float(stats.fisher_exact(table, alternative="greater").pvalue)
    fails, doubts = [], []
    diff_pp, p_err = out["error_rate_diff_pp"], out["error_p"]
    if diff_pp > max_error_rate_increase_pp:
        msg = (
            f"error rate up {diff_pp:.2f} pp ({canary} {rate_c:.1%} of {n_c:,}, {baseline} "
            f"{rate_b:.1%} of {n_b:,}), allowed {max_error_rate_increase_pp:g} pp"
        )
        if p_err < alpha:
            fails.append(f"{msg} (Fisher p={p_err:.2g})")
        else:
            doubts.append(f"{msg}, not significant (Fisher p={p_err:.2g})")
    if min(len(lat_b), len(lat_c)) < min_samples:
        few = (
            f"too few successful requests to compare latency: {baseline} {len(lat_b)}, "
            f"{canary} {len(lat_c)}, need {min_samples} each"
        )
        out["verdict"] = "fail" if fails else "inconclusive"
        out["reasons"] = [*fails, *doubts, few]
        return out

    rng = np.random.default_rng(seed)
    for p, key in ((50.0, "p50"), (99.0, "p99")):
        q_b, q_c = sorted_percentile(lat_b, p), sorted_percentile(lat_c, p)
        boot = bootstrap_percentile(lat_c, p, n_boot, rng) - bootstrap_percentile(
            lat_b, p, n_boot, rng
        )
        lo, hi = percentile(boot, 2.5), percentile(boot, 97.5)
        out[f"{key}_ms"] = {baseline: q_b, canary: q_c}
        out[f"{key}_diff_ms"] = q_c - q_b
        out[f"{key}_diff_ci95"] = [lo, hi]
    # sorted samples rank in one merge; U is the same: its rank sum adds half-integers, exact
    # in float64 in any order (below 2**52)
    mw = stats.mannwhitneyu(lat_c, lat_b, alternative="greater", method="asymptotic")
    out["mannwhitney_p"] = float(mw.pvalue)

    p99_b = out["p99_ms"][baseline]
    allowances = []
    if max_p99_increase_ms is not None:
        allowances.append(max_p99_increase_ms)
    if max_p99_increase_pct is not None:
        allowances.append(p99_b * max_p99_increase_pct / 100.0)
    allowed = min(allowances)
    out["allowed_p99_increase_ms"] = allowed
    lo99, hi99 = out["p99_diff_ci95"]
    p99_up, p50_up, p_mw = out["p99_diff_ms"], out["p50_diff_ms"], out["mannwhitney_p"]
    if lo99 > allowed:
        fails.append(f"p99 up {p99_up:.2f} ms (95 % CI from {lo99:.2f}), allowed {allowed:.2f} ms")
    elif hi99 > allowed:
        doubts.append(f"p99 increase up to {hi99:.2f} ms not ruled out, allowed {allowed:.2f} ms")
    if max_p50_increase_pct is not None:
        allowed50 = out["p50_ms"][baseline] * max_p50_increase_pct / 100.0
        lo50 = out["p50_diff_ci95"][0]
        if lo50 > allowed50 and p_mw < alpha:
            fails.append(
                f"p50 up {p50_up:.2f} ms (95 % CI from {lo50:.2f}), allowed {allowed50:.2f} ms; "
                f"Mann-Whitney p={p_mw:.2g}"
            )
    if fails:
        out["verdict"], out["reasons"] = "fail", fails
    elif doubts:
        out["verdict"], out["reasons"] = "inconclusive", doubts
    else:
        out["verdict"] = "pass"
        out["reasons"] = [
            f"p99 increase at most {hi99:.2f} ms (allowed {allowed:.2f} ms); "
            f"error rate within {max_error_rate_increase_pp:g} pp"
        ]
    return out
