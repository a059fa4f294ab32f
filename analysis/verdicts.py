"""A step's split verdict: pass, fail or inconclusive, and what an inconclusive one needs.

Per version, the 95 % Wilson interval of its share, widened by the requests of unknown version
(from the low end with none of them to the high end with all of them), is compared with
configured ± tolerance: inside it passes, wholly outside it fails, otherwise it is inconclusive.
A step passes when every version passes, fails when any fails (or a weight-0 version served a
request), and is otherwise inconclusive, saying what it would take: the requests it needs
(`meshcore.figures.step_requests_to_pass`, or, when it has those, the requests at which an
interval as wide as the distance of its observed share to the nearer tolerance edge would
decide), or a version on every response. So requests of unknown version never make a step
fail. `analysis.split` counts the requests; the report, `meshload check` and `meshload compare`
judge them here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.changepoint import UNKNOWN
from meshcore.figures import Z95, requests_needed, split_verdict, step_requests_to_pass

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
HEADER_HINT = "set --version-header or allow stamping"


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
    n_effective: float | None = None,
) -> StepVerdict:
    """The three-valued verdict of one step (see the module docstring).

    `counts`: requests per known version; `n`: all the step's requests, `unknown` of them
    without a version, `no_response` of those without any response (status 0); `n_effective`:
    what the n requests are worth when they cluster by user (`analysis.clustering`): the
    intervals count them as that many, and an inconclusive step says what it needs in
    independent requests (its `needs_requests`: that many at its clustering)."""
    shares = [float(x) for x in configured.values()]
    to_pass = step_requests_to_pass(shares, tolerance_pp) if tolerance_pp > 0 and shares else None
    if n <= 0:
        why = "no requests after the change took effect"
        return StepVerdict(INCONCLUSIVE, {}, to_pass, [f"inconclusive: {why}"])
    versions = sorted(set(configured) | set(counts))
    k = np.array([counts.get(v, 0) for v in versions], dtype=float)
    p = np.array([float(configured.get(v, 0.0)) for v in versions])
    worth = effective_fraction(n, n_effective)
    lo, _ = wilson_interval(k * worth, n * worth)
    _, hi = wilson_interval((k + unknown) * worth, n * worth)
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
    if unknown and (
        unknown / n >= tolerance_pp / 100 or _decided(k * worth, known * worth, p, tolerance_pp)
    ):
        if bare > 0:
            share = 100.0 * bare / max(n - no_response, 1)
            why = f"{share:.1f} % of responses carry no version ({HEADER_HINT})"
        else:
            why = f"{no_response:,} requests got no response, so no version"
        return StepVerdict(INCONCLUSIVE, verdicts, None, [f"inconclusive: {why}"])
    if worth < 1.0:  # clustered by user: say what it needs in independent draws
        needs_eff = _needs(n * worth, k * worth, p, verdicts, versions, tolerance_pp, to_pass)
        needs = math.ceil(needs_eff / worth) if needs_eff else None
        why = _clustered_why(n, n * worth, needs_eff)
    else:
        needs = _needs(n, k, p, verdicts, versions, tolerance_pp, to_pass)
        why = f"needs {needs:,} requests (has {n:,})" if needs else f"has {n:,} requests"
    if bare > 0:
        why += f"; {100.0 * bare / max(n - no_response, 1):.1f} % of responses carry no version"
    return StepVerdict(INCONCLUSIVE, verdicts, needs, [f"inconclusive: {why}"])


def effective_fraction(n: float, n_effective: float | None) -> float:
    """What one request counts for in the intervals: n_effective / n, 1 when not clustered."""
    if n_effective is None or n <= 0 or not np.isfinite(n_effective) or n_effective >= n:
        return 1.0
    return max(float(n_effective), 1.0) / n


def _clustered_why(n: int, n_effective: float, needs_effective: int | None) -> str:
    """An inconclusive step whose requests cluster by user: more requests from the same users
    do not narrow its interval, more users do."""
    worth = (
        f"its {n:,} requests count as {n_effective:,.0f} independent ones (they cluster by user: "
        "more users, not a longer step, narrow the interval)"
    )
    if not needs_effective:
        return worth
    return f"needs about {needs_effective:,} independent requests; {worth}"


def _decided(k: np.ndarray, known: float, p: np.ndarray, tolerance_pp: float) -> bool:
    """Would the step be decided if the requests without a version had never been sent?"""
    if known <= 0:
        return False
    lo, hi = wilson_interval(k, known)
    found = {split_verdict(a, b, c, tolerance_pp) for a, b, c in zip(lo, hi, p, strict=True)}
    return FAIL in found or found == {PASS}


def _needs(
    n: float,
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
    return max(max(wanted), int(n) + 1)


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
        n_effective=record.get("n_effective"),
    )
