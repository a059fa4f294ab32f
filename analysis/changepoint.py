"""When did a weight change take effect? A single maximum-likelihood change point per change.

The served versions, ordered by start time, are modelled as two segments of independent
categorical draws, all split positions evaluated at once from cumulative sums (O(n * versions)).

`change_point` finds a split with both segments' shares free (a BIC penalty decides detection).
`propagation` uses `known_change_point`: each change is located between the two configurations
it separates, whose shares are known; the split maximises the likelihood of "old weights before,
new weights after" over the positions from the API accepting the change onwards.

The search window of a change runs from where the previous change took effect to the moment the
next change was accepted, so one window never holds two changes. Requests with no version (no
response) carry no routing information and are left out of the sequence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import xlogy

from meshcore.errors import RunFolderError

UNKNOWN = "unknown"


def label_codes(series: pd.Series, *, sort: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and their names (a str array); null is named "unknown"."""
    codes, uniques = pd.factorize(series, sort=sort)
    names = np.asarray(uniques, dtype=object).astype(str)
    if (codes < 0).any():
        if UNKNOWN in names:
            codes = np.where(codes < 0, int(np.flatnonzero(names == UNKNOWN)[0]), codes)
        else:
            codes = np.where(codes < 0, len(names), codes)
            names = np.append(names, UNKNOWN)
    return codes.astype(np.int64), names


def version_labels(series: pd.Series) -> np.ndarray:
    """The version column as a numpy str array, null -> "unknown"."""
    codes, names = label_codes(series)
    return names[codes]


def weight_events(run: Mapping[str, Any]) -> pd.DataFrame:
    """One row per step from run.json `events`: step, requested_ns, accepted_ns, configured.

    `configured` maps every subset to its share (weight / sum). A step changed twice keeps its last
    change, since that is what the mesh ended up serving.
    """
    rows: dict[int, dict[str, Any]] = {}
    for i, event in enumerate(run.get("events") or []):
        if not isinstance(event, Mapping) or event.get("kind") != "weights":
            continue
        try:
            step = int(event["step"])
            weights = {str(k): float(v) for k, v in dict(event["weights"]).items()}
            accepted = event.get("accepted_ns")
            requested = event.get("requested_ns")
        except (KeyError, TypeError, ValueError) as exc:
            raise RunFolderError(
                f"run.json events[{i}]: a weights event needs step and weights ({exc}); "
                "fix or remove that event"
            ) from None
        total = sum(weights.values())
        if total <= 0 or any(w < 0 for w in weights.values()):
            raise RunFolderError(
                f"run.json events[{i}]: weights {weights} must be >= 0 and sum to more than 0"
            )
        rows[step] = {
            "step": step,
            "requested_ns": int(requested) if requested is not None else None,
            "accepted_ns": int(accepted) if accepted is not None else None,
            "configured": {k: w / total for k, w in weights.items()},
        }
    ordered = sorted(rows.values(), key=lambda r: r["step"])
    # object columns: a missing time must not turn the others into float64, which cannot hold
    # epoch nanoseconds exactly
    return pd.DataFrame(
        {
            "step": np.array([r["step"] for r in ordered], dtype=np.int64),
            "requested_ns": pd.Series([r["requested_ns"] for r in ordered], dtype=object),
            "accepted_ns": pd.Series([r["accepted_ns"] for r in ordered], dtype=object),
            "configured": pd.Series([r["configured"] for r in ordered], dtype=object),
        }
    )


@dataclass(frozen=True)
class ChangePoint:
    index: int  # first position of the second segment (0 when there is no split)
    llr: float  # 2 * (log-likelihood with the split - without)
    detected: bool
    lo: int = 0  # support interval: splits whose log-likelihood is within 3 of the best
    hi: int = 0


def log_likelihood_profile(codes: np.ndarray, n_categories: int) -> np.ndarray:
    """Two-segment log-likelihood for split t = 1 .. n-1 (entry t-1), codes in [0, n_categories)."""
    n = len(codes)
    onehot = np.zeros((n, n_categories))
    onehot[np.arange(n), codes] = 1.0
    before = np.cumsum(onehot, axis=0)[:-1]  # counts in codes[:t], t = 1 .. n-1
    after = before[-1] + onehot[-1] - before if n else before
    t = np.arange(1, n, dtype=float)
    return (
        xlogy(before, before).sum(axis=1)
        - xlogy(t, t)
        + xlogy(after, after).sum(axis=1)
        - xlogy(n - t, n - t)
    )


def change_point(codes: np.ndarray, *, penalty: float | None = None) -> ChangePoint:
    """The maximum-likelihood split of a categorical sequence; penalty defaults to K * ln(n)."""
    codes = np.asarray(codes, dtype=np.int64)
    n = len(codes)
    present = np.unique(codes)
    if n < 2 or len(present) < 2:
        return ChangePoint(0, 0.0, False)
    dense = np.searchsorted(present, codes)
    profile = log_likelihood_profile(dense, len(present))
    totals = np.bincount(dense).astype(float)
    ll0 = float(xlogy(totals, totals).sum() - xlogy(n, n))
    best = int(np.argmax(profile))
    llr = 2.0 * (float(profile[best]) - ll0)
    threshold = len(present) * np.log(n) if penalty is None else penalty
    # change points are not regular parameters, so chi2(1)/2 = 1.92 undercovers (~85 %); a drop
    # of 3 covered the true switch in 95-97 % of simulated two-version switches (0->5 % .. 0->100 %)
    near = np.flatnonzero(profile >= profile[best] - 3.0)
    return ChangePoint(best + 1, llr, llr > threshold, int(near[0]) + 1, int(near[-1]) + 1)


# A small share of requests is allowed to disagree with either configuration (a stray response,
# a retry), so one odd version cannot make a split position impossible.
MIX = 1e-4


def known_change_point(
    codes: np.ndarray, before: np.ndarray, after: np.ndarray, *, first: int = 0
) -> ChangePoint:
    """The split of a sequence between two KNOWN categorical distributions (old -> new weights).

    Position t means codes[:t] were served by the old weights and codes[t:] by the new ones; t
    ranges over [first, n], `first` being the first request that started after the API accepted
    the change (a change cannot take effect earlier), and t = n meaning "no change seen". Knowing
    both distributions makes this far sharper than a split with free parameters: 0 -> 5 % lands
    on the first new-version request, 50 -> 100 % within a request or two.
    """
    codes = np.asarray(codes, dtype=np.int64)
    n = len(codes)
    k = max(len(before), 1)
    log_old = np.log((1 - MIX) * before + MIX / k)[codes]
    log_new = np.log((1 - MIX) * after + MIX / k)[codes]
    cum_old = np.concatenate(([0.0], np.cumsum(log_old)))
    cum_new = np.concatenate(([0.0], np.cumsum(log_new)))
    profile = cum_old + (cum_new[-1] - cum_new)  # entry t: old before t, new from t on
    first = min(max(first, 0), n)
    allowed = profile[first:]
    best = first + int(np.argmax(allowed))
    llr = 2.0 * (float(profile[best]) - float(profile[n]))
    detected = best < n and llr > np.log(max(n, 2))
    near = first + np.flatnonzero(allowed >= profile[best] - 3.0)
    hi = min(int(near[-1]), n - 1) if n else 0
    return ChangePoint(best, llr, detected, min(int(near[0]), hi), hi)


def propagation(
    requests: pd.DataFrame, run: Mapping[str, Any], *, margin_ms: float = 1000.0
) -> pd.DataFrame:
    """Per weight change: where it took effect (`effective_ns`) and `delay_ms` from acceptance.

    delay_lo_ms / delay_hi_ms bound the change point's support interval: with a small shift (say
    10 % -> 25 %) the data cannot place a switch closer than tens of requests, and this says so.

    When no change is detectable, `effective_ns` falls back to accepted_ns + margin_ms and
    delay_ms is NaN; `reason` says why.
    """
    events = weight_events(run)
    order = np.argsort(requests["start_ns"].to_numpy(), kind="stable")
    start_ns = requests["start_ns"].to_numpy()[order]
    # integer codes, not strings: a window of millions of requests is sliced and counted as ints
    codes, names = label_codes(requests["version"])
    codes = codes[order]
    known = ~np.isin(codes, np.flatnonzero(names == UNKNOWN))
    start_ns, codes = start_ns[known], codes[known]
    rows: list[dict[str, Any]] = []
    window_start = np.iinfo(np.int64).min
    previous: dict[str, float] | None = None
    accepted_all = [None if a is None or pd.isna(a) else int(a) for a in events["accepted_ns"]]
    next_accepted: list[int | None] = [None] * len(accepted_all)
    for i in range(len(accepted_all) - 2, -1, -1):
        after = accepted_all[i + 1]
        next_accepted[i] = after if after is not None else next_accepted[i + 1]
    for i, ev in enumerate(events.itertuples(index=False)):
        accepted = ev.accepted_ns if ev.accepted_ns is not None else ev.requested_ns
        if accepted is None or pd.isna(accepted):
            raise RunFolderError(
                f"run.json: the weights event of step {ev.step} has no accepted_ns; "
                "record accepted_ns (or requested_ns) for every weight change"
            )
        upcoming = next_accepted[i]
        window_end = upcoming if upcoming is not None else np.iinfo(np.int64).max
        lo, hi = np.searchsorted(start_ns, [window_start, window_end], side="left")
        seq = codes[lo:hi]
        configured: dict[str, float] = ev.configured
        row: dict[str, Any] = {
            "step": int(ev.step),
            "requested_ns": ev.requested_ns,
            "accepted_ns": int(accepted),
            "window_start_ns": int(start_ns[lo]) if hi > lo else None,
            "window_end_ns": int(start_ns[hi - 1]) if hi > lo else None,
            "n_window": int(hi - lo),
            "change_index": -1,
            "llr": float("nan"),
            "detected": False,
            "effective_ns": int(accepted) + round(margin_ms * 1e6),
            "delay_ms": float("nan"),
            "delay_lo_ms": float("nan"),
            "delay_hi_ms": float("nan"),
            "reason": "",
        }
        if previous is not None and _same(previous, configured):
            row["reason"] = "weights unchanged"
        elif hi - lo < 2:
            row["reason"] = "too few requests around the change"
        elif previous is None:
            row["reason"] = "the initial weights: no earlier configuration to switch from"
        else:
            served = names[np.flatnonzero(np.bincount(seq, minlength=len(names)))]
            categories = sorted(set(served) | set(configured) | set(previous))
            position = {c: i for i, c in enumerate(categories)}
            to_category = np.array([position.get(c, -1) for c in names], dtype=np.int64)
            first_after = int(np.searchsorted(start_ns[lo:hi], accepted, side="left"))
            cp = known_change_point(
                to_category[seq],
                np.array([previous.get(c, 0.0) for c in categories]),
                np.array([configured.get(c, 0.0) for c in categories]),
                first=first_after,
            )
            row["llr"] = cp.llr
            if cp.detected:
                effective = int(start_ns[lo + cp.index])
                row.update(
                    change_index=int(order[np.flatnonzero(known)[lo + cp.index]]),
                    detected=True,
                    effective_ns=effective,
                    delay_ms=(effective - accepted) / 1e6,
                    delay_lo_ms=(int(start_ns[lo + cp.lo]) - accepted) / 1e6,
                    delay_hi_ms=(int(start_ns[lo + cp.hi]) - accepted) / 1e6,
                )
            elif first_after >= hi - lo:
                row["reason"] = "no requests after the change"
            else:
                row["reason"] = "no change point in the served versions"
        rows.append(row)
        previous = configured
        window_start = row["effective_ns"]
    return change_frame(rows, CHANGE_COLUMNS)


def change_frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    """One row per change, of `columns`."""
    return pd.DataFrame(
        {
            # *_ns as object so a None beside epoch nanoseconds does not round them via float64
            c: pd.Series([r[c] for r in rows], dtype=object if c.endswith("_ns") else None)
            for c in columns
        },
        index=range(len(rows)),
    )


CHANGE_COLUMNS = (
    "step",
    "requested_ns",
    "accepted_ns",
    "window_start_ns",
    "window_end_ns",
    "n_window",
    "change_index",
    "llr",
    "detected",
    "effective_ns",
    "delay_ms",
    "delay_lo_ms",
    "delay_hi_ms",
    "reason",
)


def _same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return all(abs(a.get(k, 0.0) - b.get(k, 0.0)) < 1e-12 for k in set(a) | set(b))
