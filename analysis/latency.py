"""Exact client-side latency percentiles per group, equal to numpy.percentile (linear).

All groups are computed in one sort by `meshcore.figures.grouped_percentiles`, the rule the
live p99 gate follows too, so a thousand time buckets cost the same as one version. Requests
without a version are grouped as "unknown"; failed requests are kept (a timeout is latency the
user felt) unless ok_only is set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis.changepoint import label_codes
from meshcore.errors import ConfigError
from meshcore.figures import grouped_percentiles

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
PERCENTILE_COLUMNS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms")
STAT_COLUMNS = ("n", *PERCENTILE_COLUMNS, "max_ms", "mean_ms")


def group_codes(requests: pd.DataFrame, by: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Dense group codes and the frame of group keys they index (nulls become "unknown")."""
    if not by:
        return np.zeros(len(requests), dtype=np.int64), pd.DataFrame(index=[0])
    parts: list[np.ndarray] = []
    names: list[np.ndarray] = []
    for col in by:
        s = requests[col]
        if pd.api.types.is_integer_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
            codes, uniques = pd.factorize(s, sort=True)
            names.append(np.asarray(uniques))
        else:
            codes, labels = label_codes(s)
            rank = np.argsort(labels, kind="stable")  # keys come out sorted by name
            codes = np.argsort(rank)[codes]
            names.append(labels[rank].astype(object))
        parts.append(codes.astype(np.int64))
    sizes = [len(u) for u in names]
    flat = np.ravel_multi_index(parts, sizes)
    present, dense = _dense(flat, math.prod(sizes))
    positions = np.unravel_index(present, sizes)
    keys = pd.DataFrame({col: u[i] for col, u, i in zip(by, names, positions, strict=True)})
    return dense.astype(np.int64), keys


def _dense(flat: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(flat, return_inverse=True) for codes in [0, size); by counting when the key
    space is small (no sort of every row)."""
    if size > max(len(flat), 1 << 16):
        present, dense = np.unique(flat, return_inverse=True)
        return present, dense.reshape(-1)
    present = np.flatnonzero(np.bincount(flat, minlength=size))
    lookup = np.zeros(size, dtype=np.int64)
    lookup[present] = np.arange(len(present))
    return present, lookup[flat]


def latency_percentiles(
    requests: pd.DataFrame,
    by: Sequence[str] = ("version",),
    *,
    column: str = "latency_ms",
    ok_only: bool = False,
) -> pd.DataFrame:
    """by columns, then n, p50_ms, p90_ms, p95_ms, p99_ms, p999_ms, max_ms, mean_ms."""
    values = requests[column].to_numpy(dtype=float, na_value=np.nan)
    keep = ~np.isnan(values)
    if ok_only:
        keep &= requests["ok"].to_numpy(dtype=bool)
    # only the grouping columns of the rows kept: a copy of every column costs seconds at 10 M
    frame = requests[list(dict.fromkeys(by))]
    if not keep.all():
        frame, values = frame[keep], values[keep]
    codes, keys = group_codes(frame, list(by))
    n_groups = len(keys)
    counts, pct, maxima = grouped_percentiles(values, codes, n_groups, PERCENTILES)
    sums = np.bincount(codes, weights=values, minlength=n_groups)
    out = keys.copy() if by else pd.DataFrame(index=range(n_groups))
    out["n"] = counts
    for j, name in enumerate(PERCENTILE_COLUMNS):
        out[name] = pct[:, j]
    out["max_ms"] = maxima
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mean_ms"] = sums / counts
    return out.reset_index(drop=True)


def latency_over_time(
    requests: pd.DataFrame,
    *,
    bucket_s: float = 10.0,
    by: Sequence[str] = ("version",),
    column: str = "latency_ms",
    t0_ns: int | None = None,
) -> pd.DataFrame:
    """Percentiles per group per time bucket, for plotting: t_s (bucket start since t0), by..."""
    if bucket_s <= 0:
        raise ConfigError(f"bucket_s must be > 0, got {bucket_s}; pass a bucket length in seconds")
    start_ns = requests["start_ns"].to_numpy()
    if t0_ns is None:
        t0_ns = int(start_ns.min()) if len(start_ns) else 0
    bucket = ((start_ns - t0_ns) // int(bucket_s * 1e9)).astype(np.int64)
    frame = requests[list(dict.fromkeys([*by, column]))].assign(_bucket=bucket)
    out = latency_percentiles(frame, ("_bucket", *by), column=column)
    out.insert(0, "t_s", out.pop("_bucket") * bucket_s)
    return out


def latency_records(frame: pd.DataFrame, by: Sequence[str]) -> list[dict[str, Any]]:
    """A percentile frame as a list of plain dicts (key columns first)."""
    cols = [*by, *STAT_COLUMNS]
    return [dict(zip(cols, row, strict=True)) for row in frame[cols].itertuples(index=False)]


def latency_by_version(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """summary.json's `latency`: {version: {n, p50_ms, ..., max_ms, mean_ms}}."""
    return {str(rec.pop("version")): rec for rec in latency_records(frame, ["version"])}
