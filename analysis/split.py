"""Split accuracy per step: does the mesh serve each version the share its weights say?

Which requests count: in a stamped run (`analysis.stamped`), those whose response carries the
step's configuration (`config_step`), wherever and whenever they ran; a request that got no
response (so no stamp) counts in its step once the first response of the new configuration was
seen; a response without the stamp was served by another route (an A/B cohort's header match,
a sticky user's cookie route) and is left out, counted in `n_elsewhere`. Without stamps, the
requests of a step that started after its weight change took effect (the change-point
estimate of `analysis.changepoint`, or accepted_ns + margin when none is detectable).
Requests without a version count in n as "unknown", so a step that loses the version header
shows up rather than vanishing.

Each step's verdict is `analysis.verdicts.step_verdict` (pass, fail or inconclusive). The
chi-square goodness of fit runs over the versions with a positive weight, among the requests
they served.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from analysis.changepoint import UNKNOWN, label_codes, weight_events
from analysis.clustering import Clustering, clustering
from analysis.stamped import STAMPED, config_steps
from analysis.stamped import propagation as stamped_propagation
from analysis.sticky import user_codes
from analysis.verdicts import FAIL, PASS, effective_fraction, step_verdict, wilson_interval
from meshcore.figures import (
    DEFAULT_BROKEN_STEP_ERROR_RATE,
    broken_steps,
)

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
    "version_verdict",
    "n",
    "n_unknown",
    "n_no_response",
    "effective_ns",
    "chi2_p",
    "passed",
    "verdict",
    "needs_requests",
    "precision_pp",
    "users",
    "n_effective",
    "method",
    "n_elsewhere",
    "reason",
)


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
    user_col: str | None = None,
) -> pd.DataFrame:
    """One row per (step, version); step-level columns (n, verdict, ...) repeat per row.

    `changes` is the frame of `analysis.stamped.propagation` (computed when not given): its
    `method` says whether a step counts its stamped requests or those after its change point.
    With `user_col`, a step's requests count as what they are worth when they cluster by user
    (`analysis.clustering`: `users`, `n_effective`).
    """
    events = weight_events(run)
    if changes is None:
        changes = stamped_propagation(requests, run, margin_ms=margin_ms)
    effective = dict(zip(changes["step"], _counted_from(changes), strict=True))
    method_of = changes["method"] if "method" in changes.columns else [None] * len(changes)
    methods = dict(zip(changes["step"], method_of, strict=True))
    pick = _Picker(requests, user_codes(requests, user_col) if user_col else None)
    rows: list[dict[str, Any]] = []
    for ev in events.itertuples(index=False):
        step = int(ev.step)
        configured: dict[str, float] = ev.configured
        fallback = ev.accepted_ns if ev.accepted_ns is not None else ev.requested_ns
        eff = effective.get(step)
        if eff is None or pd.isna(eff):  # a caller's `changes` without this step
            eff = int(fallback or 0) + round(margin_ms * 1e6)
        eff = int(eff)
        method = str(methods.get(step) or "estimate")
        counts, n, no_response, elsewhere, worth = pick.step(
            step, eff, stamped=method == STAMPED, configured=configured
        )
        unknown = counts.pop(UNKNOWN, 0)
        result = step_verdict(
            configured,
            counts,
            n=n,
            tolerance_pp=tolerance_pp,
            unknown=unknown,
            no_response=no_response,
            n_effective=worth.n_effective,
        )
        versions = sorted(set(configured) | set(counts))
        if unknown:
            versions.append(UNKNOWN)
        k = np.array([counts.get(v, unknown if v == UNKNOWN else 0) for v in versions], float)
        share_cfg = np.array([configured.get(v, 0.0) if v != UNKNOWN else np.nan for v in versions])
        f = effective_fraction(n, worth.n_effective)
        lo, hi = wilson_interval(k * f, n * f)
        observed = k / n if n else np.full(len(versions), np.nan)
        error_pp = (observed - share_cfg) * 100.0
        known = [i for i, v in enumerate(versions) if v != UNKNOWN]
        precision = float(np.max(hi[known] - lo[known]) / 2 * 100.0) if n and known else np.nan
        p = chi2_gof_p(counts, configured)
        for i, v in enumerate(versions):
            own = result.versions.get(v) if v != UNKNOWN else None
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
                    "version_passed": (own == PASS) if v != UNKNOWN else None,
                    "version_verdict": own,
                    "n": n,
                    "n_unknown": unknown,
                    "n_no_response": no_response,
                    "effective_ns": eff,
                    "chi2_p": p,
                    "passed": result.verdict == PASS,
                    "verdict": result.verdict,
                    "needs_requests": result.needs_requests,
                    "precision_pp": precision,
                    "users": worth.users,
                    "n_effective": worth.n_effective,
                    "method": method,
                    "n_elsewhere": elsewhere,
                    "reason": "; ".join(result.reasons),
                }
            )
    return pd.DataFrame(rows, columns=list(SPLIT_COLUMNS))


def _counted_from(changes: pd.DataFrame) -> list[Any]:
    """Where each step's count starts. An estimated change point is the position after which
    the versions look most like the new weights, found in the same requests the step counts:
    counting from it leans the share past the new weights (by about one request a step: +0.3 pp
    at 300 requests, measured over 5,000 simulated runs). The lower end of its support interval
    is not picked that way, and counts no requests of the old weights that the data could tell
    apart (bias within ±0.04 pp in the same runs)."""
    out = list(changes["effective_ns"])
    if "delay_lo_ms" not in changes.columns or "accepted_ns" not in changes.columns:
        return out
    method = changes["method"] if "method" in changes.columns else [None] * len(changes)
    lows = zip(changes["delay_lo_ms"], changes["accepted_ns"], method, strict=True)
    for i, (lo, accepted, how) in enumerate(lows):
        if how != STAMPED and lo is not None and np.isfinite(lo) and accepted is not None:
            out[i] = min(int(out[i]), int(accepted) + round(float(lo) * 1e6))
    return out


class _Picker:
    """The requests a step counts, by step and start time or by their stamp, in O(log n)."""

    def __init__(self, requests: pd.DataFrame, users: np.ndarray | None) -> None:
        cs = config_steps(requests)
        self.users = users
        codes, self.names = label_codes(requests["version"])
        self.by_name = np.argsort(self.names)
        start = requests["start_ns"].to_numpy()
        status = requests["status"].to_numpy() if "status" in requests.columns else None
        silent = status == 0 if status is not None else np.zeros(len(requests), dtype=bool)
        self.codes, self.start, self.silent = codes, start, silent
        self.by_step = np.lexsort((start, requests["step"].to_numpy()))
        self.step_col = requests["step"].to_numpy()[self.by_step]
        self.stampless = np.isnan(cs)[self.by_step]
        stamped = np.flatnonzero(~np.isnan(cs))
        self.by_stamp = stamped[np.argsort(cs[stamped], kind="stable")]
        self.stamp_col = cs[self.by_stamp]

    def step(
        self, step: int, effective_ns: int, *, stamped: bool, configured: Mapping[str, float]
    ) -> StepCount:
        """The requests the step counts (see StepCount)."""
        first, last = np.searchsorted(self.step_col, [step, step + 1])
        rows = self.by_step[first:last]
        after = self.start[rows] >= effective_ns
        elsewhere = 0
        if stamped:
            # stamped ones by their stamp; of the others, those that got no response (they
            # could not carry one), as an unstamped run counts them. A response without the
            # stamp came from another route (a header-matched cohort's): not this route's split.
            lo, hi = np.searchsorted(self.stamp_col, [step, step + 1])
            loose = rows[after & self.stampless[first:last]]
            answered = ~self.silent[loose]
            elsewhere = int(answered.sum())
            rows = np.concatenate([self.by_stamp[lo:hi], loose[~answered]])
        else:
            rows = rows[after]
        per_code = np.bincount(self.codes[rows], minlength=len(self.names))
        counts = {str(self.names[i]): int(per_code[i]) for i in self.by_name if per_code[i]}
        shares = [float(configured.get(str(name), 0.0)) for name in self.names]
        users = self.users[rows] if self.users is not None else None
        worth = clustering(self.codes[rows], users, shares)
        return StepCount(counts, len(rows), int(self.silent[rows].sum()), elsewhere, worth)


class StepCount(NamedTuple):
    """What a step counts: requests per version label, how many in all, how many of them got
    no response, how many answered responses without its stamp it left out (served by another
    route), and how they cluster by user."""

    counts: dict[str, int]
    n: int
    no_response: int
    elsewhere: int
    worth: Clustering


def mark_steps(
    records: list[dict[str, Any]], run: Mapping[str, Any], requests: pd.DataFrame
) -> list[dict[str, Any]]:
    """Steps a split record cannot vouch for, said in the table itself (their verdict: fail):
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
            by_step[step].update(
                applied=False, passed=False, verdict=FAIL, needs_requests=None, reason=why
            )
    for step, b in broken.items():
        if step in by_step:
            why = f"broken: {b['error_rate']:.0%} of {b['requests']:,} requests failed"
            old = by_step[step].get("reason")
            by_step[step].update(
                broken=True,
                passed=False,
                verdict=FAIL,
                needs_requests=None,
                reason=f"{why}; {old}" if old else why,
            )
    return [by_step[k] for k in sorted(by_step)]


def split_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The long split frame as summary.json's list per step (NaN left for the JSON cleaner)."""
    out: list[dict[str, Any]] = []
    for step, g in frame.groupby("step", sort=True):
        first = g.iloc[0]
        known = g[g["version"] != UNKNOWN]
        needs = first["needs_requests"]
        out.append(
            {
                "step": int(step),
                "configured": dict(zip(known["version"], known["configured_share"], strict=True)),
                "observed": dict(zip(g["version"], g["observed_share"], strict=True)),
                "counts": dict(zip(g["version"], g["count"].astype(int), strict=True)),
                "n": int(first["n"]),
                "n_unknown": int(first["n_unknown"]),
                "n_no_response": int(first["n_no_response"]),
                "ci95": {
                    v: [lo, hi]
                    for v, lo, hi in zip(g["version"], g["ci_lo"], g["ci_hi"], strict=True)
                },
                "error_pp": dict(zip(g["version"], g["error_pp"], strict=True)),
                "chi2_p": first["chi2_p"],
                "verdict": first["verdict"],
                "verdicts": dict(zip(known["version"], known["version_verdict"], strict=True)),
                "needs_requests": None if needs is None or pd.isna(needs) else int(needs),
                "precision_pp": first["precision_pp"],
                "users": int(first["users"]),
                "n_effective": float(first["n_effective"]),
                "n_elsewhere": int(first["n_elsewhere"]),
                "passed": bool(first["passed"]),
                "method": first["method"],
                "effective_ns": int(first["effective_ns"]),
                "reason": first["reason"] or None,
            }
        )
    return out
