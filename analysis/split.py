"""Split accuracy per step: does the mesh serve each version the share its weights say?

Which requests count: in a stamped run (`analysis.stamped`), those whose response carries the
step's configuration (`config_step`), wherever and whenever they ran; a request without a
stamp (no response) counts in its step once the first response of the new configuration was
seen. Without stamps, the requests of a step that started after its weight change took effect
(the change-point estimate of `analysis.changepoint`, or accepted_ns + margin when none is
detectable). Requests without a version count in n as "unknown", so a step that loses the
version header shows up rather than vanishing.

The verdict (`step_verdict`) has three values. Per version, the 95 % Wilson interval of its
share, widened by the requests of unknown version (from the low end with none of them to the
high end with all of them), is compared with configured ± tolerance: inside it passes, wholly
outside it fails, otherwise it is inconclusive. A step passes when every version passes, fails
when any fails (or a weight-0 version served a request), and is otherwise inconclusive, saying
what it would take: the requests it needs (`meshcore.figures.step_requests_to_pass`, or, when it
has those, the requests at which an interval as wide as the distance of its observed share to
the nearer tolerance edge would decide), or a version on every response. So requests of
unknown version never make a step fail. The chi-square goodness of fit runs over the versions
with a positive weight, among the requests they served.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis.changepoint import UNKNOWN, version_labels, weight_events
from analysis.stamped import STAMPED, config_steps
from analysis.stamped import propagation as stamped_propagation
from meshcore.figures import (
    DEFAULT_BROKEN_STEP_ERROR_RATE,
    Z95,
    broken_steps,
    requests_needed,
    split_verdict,
    step_requests_to_pass,
)

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
HEADER_HINT = "set --version-header or allow stamping"

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
    "method",
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


@dataclass(frozen=True)
class StepVerdict:
    """A step's verdict, each version's, and what an inconclusive one would need."""

    verdict: str  # pass, fail, inconclusive
    versions: dict[str, str] = field(default_factory=dict)
    needs_requests: int | None = None
    reasons: list[str] = field(default_factory=list)


def step_verdict(
    configured: Mapping[str, float],
    counts: Mapping[str, int],
    *,
    n: int,
    tolerance_pp: float,
    unknown: int = 0,
    no_response: int = 0,
) -> StepVerdict:
    """The three-valued verdict of one step (see the module docstring).

    `counts`: requests per known version; `n`: all the step's requests, `unknown` of them
    without a version, `no_response` of those without any response (status 0)."""
    shares = [float(x) for x in configured.values()]
    to_pass = step_requests_to_pass(shares, tolerance_pp) if tolerance_pp > 0 and shares else None
    if n <= 0:
        why = "no requests after the change took effect"
        return StepVerdict(INCONCLUSIVE, {}, to_pass, [f"inconclusive: {why}"])
    versions = sorted(set(configured) | set(counts))
    k = np.array([counts.get(v, 0) for v in versions], dtype=float)
    p = np.array([float(configured.get(v, 0.0)) for v in versions])
    lo, _ = wilson_interval(k, n)
    _, hi = wilson_interval(k + unknown, n)
    verdicts = {
        v: split_verdict(a, b, c, tolerance_pp)
        for v, a, b, c in zip(versions, lo, hi, p, strict=True)
    }
    leaked = [v for v, c, x in zip(versions, p, k, strict=True) if c == 0 and x > 0]
    verdicts.update(dict.fromkeys(leaked, FAIL))
    reasons = []
    if leaked:
        reasons.append(f"weight-0 version(s) served requests: {', '.join(leaked)}")
    off = [v for v in versions if verdicts[v] == FAIL and v not in leaked]
    if off:
        reasons.append(
            f"share off by more than {tolerance_pp:g} pp (its whole 95 % interval): "
            + ", ".join(off)
        )
    if reasons:
        return StepVerdict(FAIL, verdicts, None, reasons)
    if all(x == PASS for x in verdicts.values()):
        return StepVerdict(PASS, verdicts, None, [])
    # inconclusive: is it the requests without a version, or too few requests?
    bare = unknown - no_response
    known = n - unknown
    if unknown and (unknown / n >= tolerance_pp / 100 or _decided(k, known, p, tolerance_pp)):
        if bare > 0:
            share = 100.0 * bare / max(n - no_response, 1)
            why = f"{share:.1f} % of responses carry no version ({HEADER_HINT})"
        else:
            why = f"{no_response:,} requests got no response, so no version"
        return StepVerdict(INCONCLUSIVE, verdicts, None, [f"inconclusive: {why}"])
    needs = _needs(n, k, p, verdicts, versions, tolerance_pp, to_pass)
    why = f"needs {needs:,} requests (has {n:,})" if needs else f"has {n:,} requests"
    if bare > 0:
        why += f"; {100.0 * bare / max(n - no_response, 1):.1f} % of responses carry no version"
    return StepVerdict(INCONCLUSIVE, verdicts, needs, [f"inconclusive: {why}"])


def _decided(k: np.ndarray, known: int, p: np.ndarray, tolerance_pp: float) -> bool:
    """Would the step be decided if the requests without a version had never been sent?"""
    if known <= 0:
        return False
    lo, hi = wilson_interval(k, known)
    found = {split_verdict(a, b, c, tolerance_pp) for a, b, c in zip(lo, hi, p, strict=True)}
    return FAIL in found or found == {PASS}


def _needs(
    n: int,
    k: np.ndarray,
    p: np.ndarray,
    verdicts: Mapping[str, str],
    versions: list[str],
    tolerance_pp: float,
    to_pass: int | None,
) -> int | None:
    """Requests an inconclusive step would need: what a true split needs to pass; once it has
    those, the requests at which an interval as wide as its observed share's distance to the
    nearer tolerance edge would decide."""
    if to_pass is None:  # tolerance 0: a step can fail, never pass
        return None
    if n < to_pass:
        return to_pass
    wanted = [to_pass]
    for v, x, c in zip(versions, k, p, strict=True):
        observed = x / n
        if verdicts[v] != INCONCLUSIVE or not 0.0 < observed < 1.0:
            continue
        distance_pp = max(abs(tolerance_pp - abs(observed - c) * 100.0), 0.01)
        wanted.append(requests_needed(observed, distance_pp))
    return max(max(wanted), n + 1)


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
    """One row per (step, version); step-level columns (n, verdict, ...) repeat per row.

    `changes` is the frame of `analysis.stamped.propagation` (computed when not given): its
    `method` says whether a step counts its stamped requests or those after its change point.
    """
    events = weight_events(run)
    if changes is None:
        changes = stamped_propagation(requests, run, margin_ms=margin_ms)
    effective = dict(zip(changes["step"], changes["effective_ns"], strict=True))
    method_of = changes["method"] if "method" in changes.columns else [None] * len(changes)
    methods = dict(zip(changes["step"], method_of, strict=True))
    pick = _Picker(requests)
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
        labels, no_response = pick.step(step, eff, stamped=method == STAMPED)
        seen, counts_arr = np.unique(labels, return_counts=True)
        counts = {str(v): int(c) for v, c in zip(seen, counts_arr, strict=True)}
        n = len(labels)
        unknown = counts.pop(UNKNOWN, 0)
        result = step_verdict(
            configured,
            counts,
            n=n,
            tolerance_pp=tolerance_pp,
            unknown=unknown,
            no_response=no_response,
        )
        versions = sorted(set(configured) | set(counts))
        if unknown:
            versions.append(UNKNOWN)
        k = np.array([counts.get(v, unknown if v == UNKNOWN else 0) for v in versions], float)
        share_cfg = np.array([configured.get(v, 0.0) if v != UNKNOWN else np.nan for v in versions])
        lo, hi = wilson_interval(k, n)
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
                    "method": method,
                    "reason": "; ".join(result.reasons),
                }
            )
    return pd.DataFrame(rows, columns=list(SPLIT_COLUMNS))


class _Picker:
    """The requests a step counts, by step and start time or by their stamp, in O(log n)."""

    def __init__(self, requests: pd.DataFrame) -> None:
        cs = config_steps(requests)
        labels = version_labels(requests["version"])
        start = requests["start_ns"].to_numpy()
        status = requests["status"].to_numpy() if "status" in requests.columns else None
        silent = status == 0 if status is not None else np.zeros(len(requests), dtype=bool)
        self.labels, self.start, self.silent = labels, start, silent
        self.by_step = np.lexsort((start, requests["step"].to_numpy()))
        self.step_col = requests["step"].to_numpy()[self.by_step]
        self.stampless = np.isnan(cs)[self.by_step]
        stamped = np.flatnonzero(~np.isnan(cs))
        self.by_stamp = stamped[np.argsort(cs[stamped], kind="stable")]
        self.stamp_col = cs[self.by_stamp]

    def step(self, step: int, effective_ns: int, *, stamped: bool) -> tuple[np.ndarray, int]:
        """Version labels of the step's requests, and how many of them got no response."""
        first, last = np.searchsorted(self.step_col, [step, step + 1])
        rows = self.by_step[first:last]
        after = self.start[rows] >= effective_ns
        if stamped:  # stamped ones by their stamp; the others as an unstamped run counts them
            lo, hi = np.searchsorted(self.stamp_col, [step, step + 1])
            rows = np.concatenate([self.by_stamp[lo:hi], rows[after & self.stampless[first:last]]])
        else:
            rows = rows[after]
        return self.labels[rows], int(self.silent[rows].sum())


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
                "passed": bool(first["passed"]),
                "method": first["method"],
                "effective_ns": int(first["effective_ns"]),
                "reason": first["reason"] or None,
            }
        )
    return out


def record_verdict(record: Mapping[str, Any], tolerance_pp: float) -> StepVerdict:
    """`step_verdict` recomputed from a summary.json split record, at another tolerance (the
    CI gates'). Older summaries without `counts` give them back from `observed` and `n`."""
    n = int(record.get("n") or 0)
    observed = record.get("observed") or {}
    counts = record.get("counts") or {
        v: round(float(x) * n) for v, x in observed.items() if x is not None
    }
    unknown = int(record.get("n_unknown") or counts.get(UNKNOWN, 0) or 0)
    return step_verdict(
        {str(v): float(x) for v, x in (record.get("configured") or {}).items()},
        {str(v): int(c) for v, c in counts.items() if v != UNKNOWN},
        n=n,
        tolerance_pp=tolerance_pp,
        unknown=unknown,
        no_response=int(record.get("n_no_response") or 0),
    )
