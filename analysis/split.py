"""Split accuracy per step: does the mesh serve each version the share its weights say?

Only the requests of a step that started after its weight change took effect count (the change
point of `analysis.changepoint.propagation`, or accepted_ns + margin when none is detectable).
Requests without a version count in n as "unknown", so a step that loses the routing header
shows up as error rather than vanishing. The chi-square goodness of fit runs over the versions
with a positive weight, among the requests they served; a version with weight 0 that serves
anything fails the step outright, because a share of 0 has no chi-square category.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis.changepoint import UNKNOWN, propagation, version_labels, weight_events
from meshcore.figures import DEFAULT_BROKEN_STEP_ERROR_RATE, broken_steps

Z95 = float(stats.norm.ppf(0.975))

SPLIT_COLUMNS = (
    "step",
    "version",
    "configured_share",
    "count",
    "observed_share",
    "ci_lo",
    "ci_hi",
    "error_pp",
    "version_passed",
    "n",
    "n_unknown",
    "effective_ns",
    "chi2_p",
    "passed",
    "reason",
)


def wilson_interval(
    k: np.ndarray | float, n: np.ndarray | float, z: float = Z95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k successes in n trials (NaN where n == 0)."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = n + z * z
        centre = (k + z * z / 2) / denom
        half = z / denom * np.sqrt(k * (n - k) / n + z * z / 4)
        # the closed form is 0 (1) at k == 0 (k == n) up to rounding; say so exactly
        lo = np.where(n > 0, np.where(k <= 0, 0.0, np.clip(centre - half, 0.0, 1.0)), np.nan)
        hi = np.where(n > 0, np.where(k >= n, 1.0, np.clip(centre + half, 0.0, 1.0)), np.nan)
    return lo, hi


def chi2_gof_p(counts: Mapping[str, int], configured: Mapping[str, float]) -> float:
    """Goodness-of-fit p over the versions with a positive share, NaN when it cannot be tested."""
    cats = [v for v, share in configured.items() if share > 0]
    observed = np.array([counts.get(v, 0) for v in cats], dtype=float)
    total = observed.sum()
    if len(cats) < 2 or total == 0:
        return float("nan")
    shares = np.array([configured[v] for v in cats])
    expected = shares / shares.sum() * total
    return float(stats.chisquare(observed, expected).pvalue)


def split_accuracy(
    requests: pd.DataFrame,
    run: Mapping[str, Any],
    *,
    changes: pd.DataFrame | None = None,
    tolerance_pp: float = 2.0,
    margin_ms: float = 1000.0,
) -> pd.DataFrame:
    """One row per (step, version); step-level columns (n, chi2_p, passed, ...) repeat per row.

    `changes` is the frame of `propagation` (computed when not given). A version passes when its
    configured share lies in its 95 % Wilson interval or |error| <= tolerance_pp; a step passes
    when every version passes, no 0-weight version served a request and n > 0.
    """
    events = weight_events(run)
    if changes is None:
        changes = propagation(requests, run, margin_ms=margin_ms)
    effective = dict(zip(changes["step"], changes["effective_ns"], strict=True))
    by_step = np.argsort(requests["step"].to_numpy(), kind="stable")
    step_col = requests["step"].to_numpy()[by_step]
    start_ns = requests["start_ns"].to_numpy()[by_step]
    labels = version_labels(requests["version"])[by_step]
    rows: list[dict[str, Any]] = []
    for ev in events.itertuples(index=False):
        step = int(ev.step)
        configured: dict[str, float] = ev.configured
        fallback = ev.accepted_ns if ev.accepted_ns is not None else ev.requested_ns
        eff = effective.get(step)
        if eff is None:  # a caller's `changes` without this step: assume the margin was enough
            eff = int(fallback or 0) + round(margin_ms * 1e6)
        eff = int(eff)
        first, last = np.searchsorted(step_col, [step, step + 1])
        mine = labels[first:last][start_ns[first:last] >= eff]
        seen, counts_arr = np.unique(mine, return_counts=True)
        counts = {str(v): int(c) for v, c in zip(seen, counts_arr, strict=True)}
        n = len(mine)
        versions = sorted(set(configured) | (set(counts) - {UNKNOWN}))
        if UNKNOWN in counts:
            versions.append(UNKNOWN)
        k = np.array([counts.get(v, 0) for v in versions], dtype=float)
        share_cfg = np.array([configured.get(v, 0.0) if v != UNKNOWN else np.nan for v in versions])
        lo, hi = wilson_interval(k, n)
        observed = k / n if n else np.full(len(versions), np.nan)
        error_pp = (observed - share_cfg) * 100.0
        inside = (share_cfg >= lo - 1e-12) & (share_cfg <= hi + 1e-12)
        v_pass = np.where(share_cfg > 0, inside | (np.abs(error_pp) <= tolerance_pp), k == 0)
        reasons = []
        if n == 0:
            reasons.append("no requests after the change took effect")
        leaked = [
            v for v in versions if v != UNKNOWN and configured.get(v, 0.0) == 0 and counts.get(v)
        ]
        if leaked:
            reasons.append(f"weight-0 version(s) served requests: {', '.join(leaked)}")
        failing = [
            v for v, ok, s in zip(versions, v_pass, share_cfg, strict=True) if s > 0 and not ok
        ]
        if failing and n:
            reasons.append(f"share off by more than {tolerance_pp:g} pp: {', '.join(failing)}")
        known = [i for i, v in enumerate(versions) if v != UNKNOWN]
        passed = n > 0 and bool(v_pass[known].all())
        p = chi2_gof_p(counts, configured)
        for i, v in enumerate(versions):
            rows.append(
                {
                    "step": step,
                    "version": v,
                    "configured_share": share_cfg[i],
                    "count": int(k[i]),
                    "observed_share": observed[i],
                    "ci_lo": lo[i],
                    "ci_hi": hi[i],
                    "error_pp": error_pp[i],
                    "version_passed": bool(v_pass[i]) if v != UNKNOWN else None,
                    "n": n,
                    "n_unknown": counts.get(UNKNOWN, 0),
                    "effective_ns": eff,
                    "chi2_p": p,
                    "passed": passed,
                    "reason": "; ".join(reasons),
                }
            )
    return pd.DataFrame(rows, columns=list(SPLIT_COLUMNS))


def mark_steps(
    records: list[dict[str, Any]], run: Mapping[str, Any], requests: pd.DataFrame
) -> list[dict[str, Any]]:
    """Steps a split record cannot vouch for, said in the table itself:
    - a weight change that failed (run.json `weights_failed`): the step is "not applied";
    - a broken step (`meshcore.figures.broken_steps` at run.json's `broken_step_error_rate`):
      most of its requests failed, so its split measures a target that was down."""
    threshold = float(run.get("broken_step_error_rate") or DEFAULT_BROKEN_STEP_ERROR_RATE)
    broken = {
        b["step"]: b
        for b in broken_steps(requests["step"].to_numpy(), requests["ok"].to_numpy(), threshold)
    }
    by_step = {r["step"]: r for r in records}
    for e in run.get("events") or []:
        if isinstance(e, Mapping) and e.get("kind") == "weights_failed" and "step" in e:
            step = int(e["step"])
            if step not in by_step:
                weights = {str(k): float(v) for k, v in dict(e.get("weights") or {}).items()}
                total = sum(weights.values()) or 1.0
                configured = {k: w / total for k, w in weights.items()}
                by_step[step] = {"step": step, "configured": configured, "observed": {}, "n": 0}
            why = f"not applied: {e.get('reason') or 'the change failed'}"
            by_step[step].update(applied=False, passed=False, reason=why)
    for step, b in broken.items():
        if step in by_step:
            why = f"broken: {b['error_rate']:.0%} of {b['requests']:,} requests failed"
            old = by_step[step].get("reason")
            by_step[step].update(broken=True, passed=False, reason=f"{why}; {old}" if old else why)
    return [by_step[k] for k in sorted(by_step)]


def split_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The long split frame as summary.json's list per step (NaN left for the JSON cleaner)."""
    out: list[dict[str, Any]] = []
    for step, g in frame.groupby("step", sort=True):
        first = g.iloc[0]
        known = g[g["version"] != UNKNOWN]
        out.append(
            {
                "step": int(step),
                "configured": dict(zip(known["version"], known["configured_share"], strict=True)),
                "observed": dict(zip(g["version"], g["observed_share"], strict=True)),
                "n": int(first["n"]),
                "n_unknown": int(first["n_unknown"]),
                "ci95": {
                    v: [lo, hi]
                    for v, lo, hi in zip(g["version"], g["ci_lo"], g["ci_hi"], strict=True)
                },
                "error_pp": dict(zip(g["version"], g["error_pp"], strict=True)),
                "chi2_p": first["chi2_p"],
                "passed": bool(first["passed"]),
                "effective_ns": int(first["effective_ns"]),
                "reason": first["reason"] or None,
            }
        )
    return out
