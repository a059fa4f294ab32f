"""Rules a figure follows wherever it is computed: live during a run and in the report.

- **Percentiles** are numpy's default, linear interpolation between the closest ranks (R's
  type 7): `grouped_percentiles` computes many groups in one sort, bit for bit equal to
  `numpy.percentile(values, p)` per group; the live p99 gate and the report's tables both
  use it.
- **Baseline and canary** come from the plan (`choose_roles`): the plan's `canary` where
  given, else the subset whose share grows most from the first step to the last; the
  baseline is the largest other subset of the first step. Only a run with no plan falls back
  to its traffic. run.json records the pair and where it came from.
- **Per-user affinity** (`stickiness`, `cohort_reach`): a user is a key per request (the
  worker and its user id), a version the one that served it; requests without a version say
  nothing about routing and are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

PERCENTILE_METHOD = "linear"


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    # numpy's rule, including its switch to the upper end at t >= 0.5, so results match bit for bit
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def grouped_percentiles(
    values: np.ndarray, codes: np.ndarray, n_groups: int, percentiles: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group code in [0, n_groups): counts, percentiles (n_groups x P), max. NaN when empty."""
    values = np.asarray(values, dtype=float)
    codes = np.asarray(codes, dtype=np.int64)
    counts = np.bincount(codes, minlength=n_groups)
    ordered = _sorted_by_group(values, codes, counts)
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    last = np.maximum(counts - 1, 0)
    out = np.full((n_groups, len(percentiles)), np.nan)
    present = counts > 0
    for j, p in enumerate(percentiles):
        out[present, j] = _at_ranks(ordered, offsets[present], last[present], p)
    maxima = np.full(n_groups, np.nan)
    maxima[present] = ordered[(offsets + last)[present]]
    return counts, out, maxima


# Up to this many groups, each group's values are sorted on their own (a sort of values is a
# few times faster than an argsort); beyond it, one argsort serves them all.
_SORT_EACH_GROUP = 4096


def _sorted_by_group(values: np.ndarray, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The values grouped by code (ascending), each group's values in ascending order."""
    if len(counts) <= 1:
        return np.sort(values)
    # a stable sort on small integer codes is a radix sort: much faster than lexsort
    small = codes.astype(np.int16) if len(counts) < 2**15 else codes
    if len(counts) > _SORT_EACH_GROUP:
        order = np.argsort(values, kind="stable")
        return values[order[np.argsort(small[order], kind="stable")]]
    ordered = values[np.argsort(small, kind="stable")]
    ends = np.cumsum(counts)
    for end, n in zip(ends.tolist(), counts.tolist(), strict=True):
        if n > 1:
            ordered[end - n : end].sort()
    return ordered


def _at_ranks(ordered: np.ndarray, offsets: np.ndarray, last: np.ndarray, p: float) -> np.ndarray:
    """The p-th percentile of each run ordered[offset : offset + last + 1] (sorted runs)."""
    virtual = last * np.true_divide(p, 100)
    below = np.floor(virtual).astype(np.int64)
    above = np.minimum(below + 1, last)
    return _lerp(ordered[offsets + below], ordered[offsets + above], virtual - below)


def percentile(values: ArrayLike, p: float) -> float:
    """The p-th percentile (0..100) of `values`; NaN when there are none."""
    arr = np.asarray(values, dtype=float)
    return sorted_percentile(np.sort(arr), p)


def sorted_percentile(ordered: np.ndarray, p: float) -> float:
    """`percentile` of values already in ascending order (no sort: for many p of one sample)."""
    if not len(ordered):
        return float("nan")
    one = np.zeros(1, dtype=np.int64)
    return float(_at_ranks(ordered, one, one + len(ordered) - 1, p)[0])


# -- baseline and canary ---------------------------------------------------------------------
@dataclass(frozen=True)
class Roles:
    """Which version is compared against which; `source` says how they were chosen."""

    baseline: str | None
    canary: str | None
    source: str  # "plan" (its canary key), "plan weights", "traffic", "given", "none"

    def to_json(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "canary": self.canary, "source": self.source}


def choose_roles(steps: Sequence[Mapping[str, float]], canary: str | None = None) -> Roles:
    """Baseline and canary of a plan, from its steps' weights (see the module docstring)."""
    if not steps:
        return Roles(None, canary, "plan" if canary else "none")
    subsets = list(dict.fromkeys(s for step in steps for s in step))
    first, last = _shares(steps[0]), _shares(steps[-1])
    source = "plan"
    if canary is None:
        source = "plan weights"
        growth = {s: last.get(s, 0.0) - first.get(s, 0.0) for s in subsets}
        best = max(subsets, key=lambda s: growth[s])
        canary = best if growth[best] > 0 else subsets[-1]
    others = [s for s in subsets if s != canary]
    baseline = max(others, key=lambda s: first.get(s, 0.0)) if others else None
    return Roles(baseline, canary, source)


def roles_from_traffic(first_step: Mapping[str, int], later: Mapping[str, int]) -> Roles:
    """A run without a plan: the baseline served most of the first step, the canary most of
    the rest of the traffic (`later`: requests per version outside the baseline's)."""
    if not first_step:
        return Roles(None, None, "none")
    baseline = max(first_step, key=lambda v: first_step[v])
    others = {v: n for v, n in later.items() if v != baseline and n > 0}
    canary = max(others, key=lambda v: others[v]) if others else None
    return Roles(baseline, canary, "traffic")


def _shares(weights: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(weights.values()))
    return {s: (w / total if total else 0.0) for s, w in weights.items()}


# -- per-user affinity -----------------------------------------------------------------------
def _known(users: Any, versions: Any, *more: Any) -> list[np.ndarray]:
    """The rows with a user and a version (None marks either missing)."""
    u = np.asarray(users, dtype=object)
    v = np.asarray(versions, dtype=object)
    missing = np.array([None], dtype=object)
    keep = (u != missing) & (v != missing)
    return [u[keep], v[keep].astype(str), *(np.asarray(m)[keep] for m in more)]


def _codes(values: np.ndarray) -> np.ndarray:
    """Dense integer codes of values that are all numbers or all strings (a C sort, not a
    sort of Python objects: about ten times faster on a million requests)."""
    try:
        flat = values.astype(np.int64)
    except (TypeError, ValueError):
        flat = values.astype(str)
    return np.unique(flat, return_inverse=True)[1].reshape(-1)


def stickiness(
    users: Sequence[Any] | np.ndarray,
    versions: Sequence[str | None] | np.ndarray,
    start_ns: ArrayLike | None = None,
) -> dict[str, Any]:
    """How many users saw exactly one version; with start times, also each user's first."""
    order_by = start_ns if start_ns is not None else np.arange(len(np.asarray(users)))
    u, v, t = _known(users, versions, order_by)
    if len(u) == 0:
        return stickiness_of_codes(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, str))
    names, version_codes = np.unique(v, return_inverse=True)
    return stickiness_of_codes(_codes(u), version_codes.reshape(-1), names, t)


def stickiness_of_codes(
    user_codes: np.ndarray,
    version_codes: np.ndarray,
    version_names: np.ndarray,
    start_ns: ArrayLike | None = None,
) -> dict[str, Any]:
    """`stickiness` of requests given as integer codes: a user per request (-1: none), a
    version (an index into `version_names`; -1: none), so a run of millions of requests
    needs no strings."""
    users = np.asarray(user_codes, dtype=np.int64)
    versions = np.asarray(version_codes, dtype=np.int64)
    keep = (users >= 0) & (versions >= 0)
    if not keep.any():
        return {
            "users": 0,
            "single_version_users": 0,
            "share_single_version": None,
            "users_by_first_version": {},
        }
    t = np.arange(len(users)) if start_ns is None else np.asarray(start_ns)
    u, v, t = users[keep], versions[keep], t[keep]
    if int(u.max()) >= 2 * len(u):  # sparse codes: make them dense (order does not matter)
        u = np.unique(u, return_inverse=True)[1].reshape(-1)
    n_users, n_versions = int(u.max()) + 1, len(version_names)
    seen_pair = np.zeros(n_users * n_versions, dtype=bool)
    seen_pair[u * n_versions + v] = True
    per_user = seen_pair.reshape(n_users, n_versions).sum(axis=1)
    seen = per_user > 0
    single = int((per_user[seen] == 1).sum())
    # each user's first request: earliest start, then earliest row (a stable order)
    order = np.arange(len(t)) if _ascending(t) else np.argsort(t, kind="stable")
    first = np.full(n_users, len(order), dtype=np.int64)
    np.minimum.at(first, u[order], np.arange(len(order)))
    first_versions = v[order[first[seen]]]
    by_first = np.bincount(first_versions, minlength=n_versions)
    return {
        "users": int(seen.sum()),
        "single_version_users": single,
        "share_single_version": single / int(seen.sum()),
        "users_by_first_version": {
            str(version_names[i]): int(by_first[i])
            for i in np.argsort(version_names)
            if by_first[i]
        },
    }


def _ascending(values: np.ndarray) -> bool:
    return bool(np.all(values[1:] >= values[:-1]))


def cohort_reach(
    users: Sequence[Any] | np.ndarray,
    in_cohort: ArrayLike,
    versions: Sequence[str | None] | np.ndarray,
    version: str,
) -> dict[str, Any]:
    """How the cohort (requests marked `in_cohort`; a user is in it if any of its requests is)
    and everyone else reached `version`: users, and requests served by it."""
    marked = np.asarray(in_cohort, dtype=bool)
    served = np.asarray(versions, dtype=object) == version  # requests, with or without a user
    u, v, c = _known(users, versions, marked)
    codes = _codes(u) if len(u) else np.zeros(0, np.int64)
    n_users = int(codes.max()) + 1 if len(codes) else 0
    member = np.bincount(codes[c], minlength=n_users) > 0
    reached = np.bincount(codes[v == version], minlength=n_users) > 0

    def share(group: np.ndarray) -> float | None:
        return float(reached[group].mean()) if group.any() else None

    return {
        "version": version,
        "cohort_users": int(member.sum()),
        "cohort_reached": int((member & reached).sum()),
        "cohort_share": share(member),
        "others_users": int((~member).sum()),
        "others_reached": int((~member & reached).sum()),
        "others_share": share(~member),
        "cohort_requests_on_version": int((marked & served).sum()),
        "other_requests_on_version": int((~marked & served).sum()),
    }


# -- broken steps ----------------------------------------------------------------------------
DEFAULT_BROKEN_STEP_ERROR_RATE = 0.5


def broken_steps(steps: ArrayLike, ok: ArrayLike, threshold: float) -> list[dict[str, Any]]:
    """Steps (>= 0) whose failed requests exceed `threshold` of their requests: not a
    measurement of the canary any more, but of a target that was down or answering errors."""
    step = np.asarray(steps, dtype=np.int64)
    failed = ~np.asarray(ok, dtype=bool)
    out = []
    for k in np.unique(step[step >= 0]):
        mine = step == k
        n, errors = int(mine.sum()), int((failed & mine).sum())
        if errors / n > threshold:
            out.append({"step": int(k), "requests": n, "errors": errors, "error_rate": errors / n})
    return out


# -- split precision -------------------------------------------------------------------------
Z95 = 1.959963984540054  # the 97.5 % normal quantile: 95 % two-sided
DEFAULT_TOLERANCE_PP = 2.0


def half_width_pp(share: float, n: int, z: float = Z95) -> float:
    """Half the width of a 95 % interval of a share estimated from n requests, in percentage
    points (normal approximation, at the configured share)."""
    if n <= 0:
        return float("inf")
    return 100.0 * z * math.sqrt(share * (1.0 - share) / n)


def requests_needed(share: float, tolerance_pp: float, z: float = Z95) -> int:
    """Requests after which the 95 % interval of a share is ±tolerance: a true split then
    passes, and a share 2.5 tolerances off fails with about 84 % power."""
    if tolerance_pp <= 0:
        raise ValueError(f"tolerance_pp must be > 0, got {tolerance_pp}")
    return max(1, math.ceil((z * 100.0) ** 2 * share * (1.0 - share) / tolerance_pp**2))


def split_verdict(lo: float, hi: float, configured: float, tolerance_pp: float) -> str:
    """pass: the 95 % interval [lo, hi] lies inside configured ± tolerance; fail: wholly
    outside it; inconclusive: otherwise (more requests would decide)."""
    t = tolerance_pp / 100.0
    if configured - t - 1e-12 <= lo and hi <= configured + t + 1e-12:
        return "pass"
    if lo > configured + t + 1e-12 or hi < configured - t - 1e-12:
        return "fail"
    return "inconclusive"


# -- split precision of a step (built on the three rules above) -------------------------------
# What a step's verdict needs, said once for `meshload plan`, the start of a run and the report.
# A step's verdict needs every version decided, so its precision is its widest interval. A share
# of 0 or 100 % has no normal-approximation width (p(1 - p) = 0): its Wilson interval is
# one-sided, z² / (n + z²) wide, and is the width used there.
DETECT_TOLERANCES = 2.5  # an error this many tolerances wide (5 pp at 2 pp) must fail


def _one_sided_pp(n: int, z: float = Z95) -> float:
    return 100.0 * z * z / (n + z * z) if n > 0 else float("inf")


def step_half_width_pp(shares: Sequence[float], n: int, z: float = Z95) -> float:
    """The widest 95 % half-width, in pp, among a step's configured shares after n requests."""
    widths = [
        _one_sided_pp(n, z) if s <= 0.0 or s >= 1.0 else half_width_pp(s, n, z) for s in shares
    ]
    return max(widths, default=float("inf"))


def _toward_half(share: float, by: float) -> float:
    return min(share + by, 0.5) if share < 0.5 else max(share - by, 0.5)


def step_requests_needed(shares: Sequence[float], tolerance_pp: float, z: float = Z95) -> int:
    """Requests after which a step's shares are known to ±tolerance, such that a share 2.5
    tolerances off (5 pp at 2 pp) fails with at least 80 % power whichever way it is off.

    `requests_needed` at, for each version, the share within 2.5 tolerances of its configured
    one nearest 50 % (the widest interval such an error can have: at 10 % configured, 15 %),
    the most over the step's versions. At 50 % this is `requests_needed` itself."""
    by = DETECT_TOLERANCES * tolerance_pp / 100.0
    return max((requests_needed(_toward_half(s, by), tolerance_pp, z) for s in shares), default=1)


def step_requests_to_pass(shares: Sequence[float], tolerance_pp: float, z: float = Z95) -> int:
    """Requests after which a step whose split is exactly as configured passes with about 95 %
    probability: its interval must lie inside configured ± tolerance, so it must be about half
    as wide (`requests_needed` at tolerance / 2). A version at 0 or 100 % passes for sure once
    its one-sided interval is inside the tolerance: n >= z² (1 - t) / t."""
    if tolerance_pp <= 0:
        raise ValueError(f"tolerance_pp must be > 0, got {tolerance_pp}")
    t = min(tolerance_pp / 100.0, 1.0)
    out = [
        math.ceil(z * z * (1.0 - t) / t) if s <= 0.0 or s >= 1.0
        else requests_needed(s, tolerance_pp / 2.0, z)
        for s in shares
    ]  # fmt: skip
    return max(max(out, default=1), 1)


def precision_line(
    k: int, weights: Mapping[str, float], hold_s: float, rate: float, tolerance_pp: float
) -> tuple[str, int]:
    """Step k's precision at `rate` requests per second, as `meshload plan` and the start of a
    run print it, e.g. "step 4 (v1 50 %, v2 50 %): ±3.5 pp at 40 req/s × 20 s (800 requests);
    tolerance 2 pp needs 61 s, passes at 241 s: ...", and the step's requests. A step is as
    precise as its widest interval (`step_half_width_pp`)."""
    total = sum(weights.values())
    shares = [w / total for w in weights.values()]
    shown = ", ".join(f"{v} {w / total * 100:g} %" for v, w in weights.items() if w > 0)
    n = math.floor(rate * hold_s)
    precision = step_half_width_pp(shares, n)
    needs_s = math.ceil(step_requests_needed(shares, tolerance_pp) / rate)
    passes_s = math.ceil(step_requests_to_pass(shares, tolerance_pp) / rate)
    if hold_s >= passes_s:
        verdict = "long enough to pass"
    elif hold_s >= needs_s:
        verdict = "long enough to catch an error; a true split stays inconclusive"
    else:
        verdict = "too short: expect inconclusive"
    width = f"±{precision:.1f} pp" if math.isfinite(precision) else "no requests"
    return (
        f"step {k} ({shown}): {width} at {rate:.3g} req/s × {hold_s:g} s ({n:,} requests); "
        f"tolerance {tolerance_pp:g} pp needs {needs_s:,} s, passes at {passes_s:,} s: {verdict}",
        n,
    )
