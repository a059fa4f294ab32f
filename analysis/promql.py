"""PromQL's `increase`, `rate`, `sum by` and `histogram_quantile` on the metrics frame.

Pure functions over raw samples (`t` epoch s, `metric`, `labels` JSON, `value`) that give the
numbers Prometheus itself gives at the same evaluation time, so a report rebuilt offline from
`metrics.parquet` agrees with a dashboard. Two details changed between Prometheus releases and
are selected with `semantics`: "v3" (Prometheus >= 3.0: range selectors exclude their left
edge; a counter's zero point caps the start extrapolation after the 1.1x-gap test) and "v2"
(2.x: both edges included; zero point applied before the gap test).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from analysis.frames import METRIC_COLUMNS, from_columns, labels_json

Semantics = Literal["v2", "v3"]
_PRECISION_TOLERANCE = 1e-12


def label_table(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """One object column per wanted label (None where absent); each label set decoded once."""
    codes = frame["labels"].astype("category")
    decoded = [json.loads(s) for s in codes.cat.categories]
    index = codes.cat.codes.to_numpy()  # -1 (missing labels) picks the trailing None
    return pd.DataFrame(
        {n: np.array([d.get(n) for d in decoded] + [None], dtype=object)[index] for n in names},
        index=frame.index,
    )


def increase(
    samples: pd.DataFrame, *, at_s: float, window_s: float, semantics: Semantics = "v3"
) -> pd.DataFrame:
    """`increase(m[window])` evaluated at `at_s`, one row per series (metric name dropped)."""
    return _range_function(samples, at_s, window_s, is_rate=False, semantics=semantics)


def rate(
    samples: pd.DataFrame, *, at_s: float, window_s: float, semantics: Semantics = "v3"
) -> pd.DataFrame:
    """`rate(m[window])` evaluated at `at_s`: the extrapolated increase per second."""
    return _range_function(samples, at_s, window_s, is_rate=True, semantics=semantics)


def extrapolated_delta(
    t_ms: np.ndarray,
    values: np.ndarray,
    *,
    range_start_ms: int,
    range_end_ms: int,
    range_s: float,
    is_counter: bool = True,
    is_rate: bool = False,
    semantics: Semantics = "v3",
) -> float:
    """Prometheus's extrapolatedRate for one series' samples inside the range (NaN if < 2)."""
    n = len(values)
    if n < 2:
        return math.nan
    result = float(values[-1] - values[0])
    if is_counter:  # a drop is a counter reset: the value before it was lost, add it back
        last = 0.0
        for value in values:
            if value < last:
                result += last
            last = float(value)
    to_start = (int(t_ms[0]) - range_start_ms) / 1000
    to_end = (range_end_ms - int(t_ms[-1])) / 1000
    sampled = (int(t_ms[-1]) - int(t_ms[0])) / 1000
    average = sampled / (n - 1)
    threshold = average * 1.1
    zero_capped = is_counter and result > 0 and values[0] >= 0
    if semantics == "v2":
        if zero_capped:
            to_start = min(to_start, sampled * (float(values[0]) / result))
        interval = sampled + (to_start if to_start < threshold else average / 2)
        interval += to_end if to_end < threshold else average / 2
        result = result * (interval / sampled)
        return result / range_s if is_rate else result
    if to_start >= threshold:
        to_start = average / 2
    if zero_capped:
        to_start = min(to_start, sampled * (float(values[0]) / result))
    if to_end >= threshold:
        to_end = average / 2
    factor = (sampled + to_start + to_end) / sampled
    if is_rate:
        factor /= range_s
    return result * factor


def _range_function(
    samples: pd.DataFrame, at_s: float, window_s: float, *, is_rate: bool, semantics: Semantics
) -> pd.DataFrame:
    # Prometheus works in integer milliseconds; rounding here reproduces its range edges.
    end_ms = round(at_s * 1000)
    start_ms = end_ms - round(window_s * 1000)
    t_ms = np.round(samples["t"].to_numpy(dtype=float) * 1000).astype(np.int64)
    left = t_ms >= start_ms if semantics == "v2" else t_ms > start_ms
    inside = samples.loc[left & (t_ms <= end_ms)].assign(t_ms=t_ms[left & (t_ms <= end_ms)])
    out: dict[str, list[object]] = {"t": [], "metric": [], "labels": [], "value": []}
    for (_, labels), series in inside.groupby(["metric", "labels"], observed=True, sort=True):
        series = series.sort_values("t_ms")
        value = extrapolated_delta(
            series["t_ms"].to_numpy(),
            series["value"].to_numpy(dtype=float),
            range_start_ms=start_ms,
            range_end_ms=end_ms,
            range_s=window_s,
            is_counter=True,
            is_rate=is_rate,
            semantics=semantics,
        )
        if not math.isnan(value):
            out["t"].append(at_s)
            out["metric"].append("")
            out["labels"].append(labels)
            out["value"].append(value)
    return from_columns(out, METRIC_COLUMNS)


def sum_by(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """`sum by (labels) (...)` of an instant vector (one row per series)."""
    out: dict[str, list[object]] = {"t": [], "metric": [], "labels": [], "value": []}
    if frame.empty:
        return from_columns(out, METRIC_COLUMNS)
    kept = {}
    for labels in frame["labels"].astype("category").cat.categories:
        decoded = json.loads(labels)
        kept[labels] = labels_json({n: decoded[n] for n in by if n in decoded})
    keys = frame["labels"].astype("str").map(kept)
    for key, group in frame.groupby(keys, sort=True):
        out["t"].append(float(group["t"].iloc[0]))
        out["metric"].append("")
        out["labels"].append(key)
        out["value"].append(float(group["value"].sum()))
    return from_columns(out, METRIC_COLUMNS)


def histogram_quantile(q: float, buckets: pd.DataFrame) -> pd.DataFrame:
    """`histogram_quantile(q, buckets)`: series grouped by their labels without `le`."""
    out: dict[str, list[object]] = {"t": [], "metric": [], "labels": [], "value": []}
    if buckets.empty:
        return from_columns(out, METRIC_COLUMNS)
    groups: dict[str, list[tuple[float, float]]] = {}
    first_t: dict[str, float] = {}
    for labels, t, value in zip(buckets["labels"], buckets["t"], buckets["value"], strict=True):
        decoded = json.loads(labels)
        try:
            upper = float(decoded.pop("le"))
        except (KeyError, ValueError):
            continue  # Prometheus ignores series without a parseable `le`
        key = labels_json(decoded)
        groups.setdefault(key, []).append((upper, float(value)))
        first_t.setdefault(key, float(t))
    for key in sorted(groups):
        bounds, counts = zip(*groups[key], strict=True)
        out["t"].append(first_t[key])
        out["metric"].append("")
        out["labels"].append(key)
        out["value"].append(bucket_quantile(q, bounds, counts))
    return from_columns(out, METRIC_COLUMNS)


def bucket_quantile(q: float, upper_bounds: Sequence[float], counts: Sequence[float]) -> float:
    """Prometheus's interpolation on cumulative classic-histogram buckets.

    Linear within the bucket holding the rank; the lowest bucket starts at 0 when its upper
    bound is > 0 (else its bound is the answer); a rank in the +Inf bucket answers the previous
    upper bound. NaN without a +Inf bucket, with < 2 buckets, or with no observations; q < 0
    gives -Inf and q > 1 +Inf.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    pairs = sorted(zip(upper_bounds, counts, strict=True), key=lambda p: p[0])
    if not pairs or not math.isinf(pairs[-1][0]) or pairs[-1][0] < 0:
        return math.nan
    merged: list[list[float]] = []
    for upper, count in pairs:  # duplicate `le` values add up
        if merged and merged[-1][0] == upper:
            merged[-1][1] += count
        else:
            merged.append([upper, count])
    _fix_precision(merged)
    peak = merged[0][1]
    for bucket in merged[1:]:  # force a monotonic envelope: decreases are data errors
        peak = max(peak, bucket[1])
        bucket[1] = peak
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(merged) - 1) if merged[i][1] >= rank), len(merged) - 1)
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[b][0], merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * (rank / count)


def _fix_precision(buckets: list[list[float]]) -> None:
    """Relative differences <= 1e-12 between neighbours are float noise: flatten them."""
    prev = buckets[0][1]
    for bucket in buckets[1:]:
        delta = abs(bucket[1] - prev)
        if delta == 0:
            continue
        relative = delta / bucket[1] if bucket[1] != 0 else math.inf
        if relative <= _PRECISION_TOLERANCE:
            bucket[1] = prev
        else:
            prev = bucket[1]
