"""Canary vs baseline: a verdict, with the evidence and the reasons behind it.

Latency is compared on successful requests (a fast 503 must not make a canary look quick):
Mann-Whitney U one-sided (canary slower), and bootstrap 95 % intervals on the p50 and p99
differences. Errors: step by step too, as analysis.judge_errors says (the exact stratified
test, one-sided: canary fails more often).

Errors are decided first, on every request of both versions: a canary whose error rate is
significantly and materially (more than the allowance) above the baseline's fails,
however few successful requests are left for the latency comparison, and that reason comes
first. Then the verdict asks the latency data to be decisive in either direction:
- fail: the p99 (or p50) increase is above its allowance even at the low end of its interval;
- pass: the high end of the p99 interval is within the allowance and the error rate is fine;
- inconclusive: anything else, including too few successful requests.

Latency is compared step by step (step-matched): the two versions are compared within each
step where both served at least MIN_STEP_SAMPLES successful requests, at the same time and
under the same load, and the steps' figures are combined with weights n_b n_c / (n_b + n_c)
(each step counts by the precision its pair of samples gives). Pooled over the run, the
baseline's requests come mostly from the early steps and the canary's from the late ones, so
any drift of latency over the run (a warming cache, a load that grows) would read as a
difference between versions. The combined p50 and p99 per version are the weighted means of
the steps' ones, their difference is the weighted mean of the steps' differences (bootstrapped
step by step, the same weights), and Mann-Whitney becomes van Elteren's stratified test (the
steps' U statistics weighted by 1/(N+1), normal approximation). A run with no step that served
both (a blue/green plan) is compared pooled over the run, and says so (`latency_method`).

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
from analysis.judge_errors import compare_errors, steps_text
from meshcore.errors import ConfigError
from meshcore.figures import (
    Roles,
    choose_roles,
    percentile,
    roles_from_traffic,
    sorted_percentile,
)

MIN_STEP_SAMPLES = 20  # successful requests per version for a step to join the comparison


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
    if weights := plan_weights(plan):
        return choose_roles(weights, plan.get("canary"))
    return traffic_roles(requests)


def plan_weights(plan: Any) -> list[dict[str, float]]:
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
    timed = ok & ~np.isnan(latency)  # successful requests with a latency
    mine_b, mine_c = (codes == _code_of(names, v) for v in (baseline, canary))
    timed_b, timed_c = mine_b & timed, mine_c & timed
    n_b, n_c = int(mine_b.sum()), int(mine_c.sum())
    err_b, err_c = int((mine_b & ~ok).sum()), int((mine_c & ~ok).sum())
    out["n"] = {baseline: n_b, canary: n_c}
    out["errors"] = {baseline: err_b, canary: err_c}
    out["error_rate"] = {baseline: err_b / max(n_b, 1), canary: err_c / max(n_c, 1)}
    step = _steps_of(requests)
    error_fields, fails, doubts = compare_errors(
        step,
        ~ok,
        mine_b,
        mine_c,
        names=(baseline, canary),
        alpha=alpha,
        allowed_pp=max_error_rate_increase_pp,
    )
    out.update(error_fields)
    strata, shared = _step_strata(step, timed_b, timed_c, latency)
    if shared:
        out["latency_method"] = "step-matched"
        out["latency_steps"] = [k for k, _, _ in strata]
        pairs = [(b, c) for _, b, c in strata]
    else:  # no step served both (blue/green): only a comparison across steps is left
        out["latency_method"] = "pooled"
        out["latency_steps"] = None
        # sorted once: every percentile, bootstrap and rank below reads the sorted samples
        pairs = [(np.sort(latency[timed_b]), np.sort(latency[timed_c]))]
    if min(sum(len(b) for b, _ in pairs), sum(len(c) for _, c in pairs)) < min_samples:
        where = "in the steps that served both" if shared else "over the run"
        n_b_seen, n_c_seen = shared or (int(timed_b.sum()), int(timed_c.sum()))
        few = (
            f"too few successful requests to compare latency {where}: {baseline} {n_b_seen}, "
            f"{canary} {n_c_seen}, need {min_samples} each"
        )
        out["verdict"] = "fail" if fails else "inconclusive"
        out["reasons"] = [*fails, *doubts, few]
        return out

    rng = np.random.default_rng(seed)
    h = np.array([len(b) * len(c) / (len(b) + len(c)) for b, c in pairs])
    weights = h / h.sum()
    for p, key in ((50.0, "p50"), (99.0, "p99")):
        q_b = q_c = 0.0
        boot = np.zeros(n_boot)
        for w, (b, c) in zip(weights, pairs, strict=True):
            q_b += w * sorted_percentile(b, p)
            q_c += w * sorted_percentile(c, p)
            boot += w * (
                bootstrap_percentile(c, p, n_boot, rng) - bootstrap_percentile(b, p, n_boot, rng)
            )
        lo, hi = percentile(boot, 2.5), percentile(boot, 97.5)
        out[f"{key}_ms"] = {baseline: q_b, canary: q_c}
        out[f"{key}_diff_ms"] = q_c - q_b
        out[f"{key}_diff_ci95"] = [lo, hi]
    out["mannwhitney_p"] = _mann_whitney_p(pairs)
    out["rank_test"] = "van Elteren" if len(pairs) > 1 else "Mann-Whitney U"

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
        # hi99 bounds the increase from above: below 0, the canary is faster by at least -hi99
        change = f"up at most {hi99:.2f} ms" if hi99 >= 0 else f"down at least {-hi99:.2f} ms"
        over = steps_text([k for k, _, _ in strata]) if strata else ""
        matched = f", step-matched over {over}" if strata else ""
        out["reasons"] = [
            f"p99 {change} (allowed increase {allowed:.2f} ms{matched}); "
            f"error rate within {max_error_rate_increase_pp:g} pp"
        ]
    return out


def _steps_of(requests: pd.DataFrame) -> np.ndarray | None:
    """Each request's step as a float (NaN where it has none); None without a step column."""
    if "step" not in requests.columns:
        return None
    return pd.to_numeric(requests["step"], errors="coerce").to_numpy(dtype=float)


def _step_strata(
    steps: np.ndarray | None, base: np.ndarray, canary: np.ndarray, latency: np.ndarray
) -> tuple[list[tuple[int, np.ndarray, np.ndarray]], tuple[int, int] | None]:
    """(step, sorted baseline latencies, sorted canary latencies) of each step where both
    versions have MIN_STEP_SAMPLES timed successful requests, and whether any step served both
    at all: their samples per version, None when none did (a step with fewer than
    MIN_STEP_SAMPLES is left out, never a reason to pool the run)."""
    if steps is None:
        return [], None
    out, n_b, n_c = [], 0, 0
    for k in np.unique(steps[~np.isnan(steps)]):
        here = steps == k  # each step's samples sorted once, for all that reads them
        b, c = np.sort(latency[base & here]), np.sort(latency[canary & here])
        if min(len(b), len(c)) > 0:
            n_b, n_c = n_b + len(b), n_c + len(c)
        if min(len(b), len(c)) >= MIN_STEP_SAMPLES:
            out.append((int(k), b, c))
    return out, ((n_b, n_c) if n_b else None)


def _mann_whitney_p(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """One-sided p (canary slower): Mann-Whitney U for one sample pair, van Elteren's
    stratified test for several (each U weighted by 1/(N+1), normal approximation)."""
    if len(pairs) == 1:
        b, c = pairs[0]
        return float(stats.mannwhitneyu(c, b, alternative="greater", method="asymptotic").pvalue)
    t = var = 0.0
    for b, c in pairs:
        m, n = len(c), len(b)
        u = float(stats.mannwhitneyu(c, b, alternative="greater", method="asymptotic").statistic)
        t += (u - m * n / 2) / (m + n + 1)
        var += m * n / (12 * (m + n + 1))  # (1/(N+1))^2 * m n (N+1) / 12
    return float(stats.norm.sf(t / np.sqrt(var)))


def latency_method_line(result: Mapping[str, Any]) -> str:
    """How a verdict's latency was compared, for a person; "" for a summary of an older
    meshload, which does not say."""
    if result.get("latency_method") == "step-matched":
        steps = ", ".join(str(k) for k in result.get("latency_steps") or []) or "none had enough"
        return (
            f"Latency step-matched: the versions compared within each step that served both "
            f"(steps {steps}), weighted by their samples."
        )
    if result.get("latency_method") == "pooled":
        return (
            "Latency pooled over the run: no step served both versions, so a drift of latency "
            "over the run would read as a difference between them."
        )
    return ""
