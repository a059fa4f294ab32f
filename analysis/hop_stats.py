"""The per-hop tables from timed spans (`analysis.hops.hop_times`): per (service, version,
root version) counts, mean and exact p50/p99 duration, self and critical time per trace; and the
baseline-against-canary table, largest difference first. `HopSums` gathers them over chunks of
whole traces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.changepoint import label_codes, version_labels


def hop_stats(timed: pd.DataFrame) -> pd.DataFrame:
    """Per (service, version, root_version): spans, mean/p50/p99 duration, self and critical time.

    `*_per_trace_ms` divide by every trace of that root version (not only those that reached the
    service), so summing a root version's rows over services gives its mean trace time.
    """
    return HopSums().add(timed).stats()


class HopSums:
    """`hop_stats` gathered over chunks of whole traces (`hop_times` of each): sums per group,
    and every duration kept per group so the percentiles stay exact (`numpy.percentile` of
    each group's values: the linear rule `meshcore.figures.grouped_percentiles` follows)."""

    KEYS = ("service", "version", "root_version")
    SUMS = ("duration_ms", "self_ms", "critical_ms")

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str, str], int] = {}
        self._sums: list[np.ndarray] = []  # per group: duration, self, critical totals
        self._durations: list[list[np.ndarray]] = []
        self._traces: dict[str, int] = {}
        self._stats: pd.DataFrame | None = None  # once computed, the durations are let go

    def add(self, timed: pd.DataFrame) -> HopSums:
        if self._stats is not None:
            raise ValueError("HopSums: spans added after the stats were taken")
        labelled = [label_codes(timed[c]) for c in self.KEYS]
        shape = tuple(len(names) for _, names in labelled)
        flat = np.ravel_multi_index([codes for codes, _ in labelled], shape)
        size = int(np.prod(shape))
        present = np.flatnonzero(np.bincount(flat, minlength=size))
        names = [n for _, n in labelled]
        at = zip(*np.unravel_index(present, shape), strict=True)
        groups = [self._group(tuple(str(n[i]) for n, i in zip(names, k, strict=True))) for k in at]
        # a stable sort of 16-bit codes is a radix sort
        order = np.argsort(flat.astype(np.int16) if size < 2**15 else flat, kind="stable")
        bounds = np.searchsorted(flat[order], np.append(present, size))
        duration = timed["duration_ms"].to_numpy(dtype=float)
        sums = [
            np.bincount(flat, weights=timed[c].to_numpy(dtype=float), minlength=size)[present]
            for c in self.SUMS
        ]
        for i, g in enumerate(groups):
            self._durations[g].append(duration[order[bounds[i] : bounds[i + 1]]])
            self._sums[g] += [s[i] for s in sums]
        roots = timed["root_row"].to_numpy() == np.arange(len(timed))
        traced = pd.Series(version_labels(timed["root_version"])[roots]).value_counts()
        for version, n in traced.items():
            self._traces[str(version)] = self._traces.get(str(version), 0) + int(n)
        return self

    def merge(self, other: HopSums) -> HopSums:
        """These sums plus another's (of other traces)."""
        if self._stats is not None or other._stats is not None:
            raise ValueError("HopSums: merged after the stats were taken")
        for key, g in other._groups.items():
            mine = self._group(key)
            self._sums[mine] += other._sums[g]
            self._durations[mine].extend(other._durations[g])
        for version, n in other._traces.items():
            self._traces[version] = self._traces.get(version, 0) + n
        return self

    def _group(self, key: tuple[str, ...]) -> int:
        if key not in self._groups:
            self._groups[key] = len(self._groups)  # type: ignore[index]
            self._sums.append(np.zeros(len(self.SUMS)))
            self._durations.append([])
        return self._groups[key]  # type: ignore[index]

    def stats(self) -> pd.DataFrame:
        """The hop_stats frame, groups sorted by (service, version, root_version)."""
        if self._stats is None:
            self._stats = self._compute()
            self._durations = [[] for _ in self._durations]  # 8 bytes a span, no longer needed
        return self._stats.copy()

    def _compute(self) -> pd.DataFrame:
        keys = sorted(self._groups)
        out = (
            pd.DataFrame(keys, columns=list(self.KEYS))
            if keys
            else pd.DataFrame(columns=list(self.KEYS))
        )
        rows = [self._groups[k] for k in keys]
        sums = np.array([self._sums[g] for g in rows]).reshape(len(rows), len(self.SUMS))
        counts = np.array([sum(len(a) for a in self._durations[g]) for g in rows], dtype=np.int64)
        pct = np.full((len(rows), 2), np.nan)
        for i, g in enumerate(rows):  # numpy's own percentile: a partition, not a sort
            pct[i] = np.percentile(np.concatenate(self._durations[g]), (50.0, 99.0))
        per_trace = out["root_version"].map(self._traces).to_numpy(dtype=float)
        out["spans"] = counts
        out["mean_ms"] = sums[:, 0] / counts
        out["p50_ms"], out["p99_ms"] = pct[:, 0], pct[:, 1]
        out["self_mean_ms"] = sums[:, 1] / counts
        out["self_per_trace_ms"] = sums[:, 1] / per_trace
        out["critical_per_trace_ms"] = sums[:, 2] / per_trace
        return out


def hop_table(stats: pd.DataFrame, baseline: str, canary: str) -> pd.DataFrame:
    """service | baseline/canary self and critical ms per trace | deltas, largest delta first."""
    per = stats.groupby(["service", "root_version"])[["self_per_trace_ms", "critical_per_trace_ms"]]
    wide = per.sum().unstack("root_version")
    out = pd.DataFrame(index=wide.index)
    for what in ("self", "critical"):
        for role, v in (("baseline", baseline), ("canary", canary)):
            col = (f"{what}_per_trace_ms", v)
            out[f"{role}_{what}_ms"] = wide[col] if col in wide.columns else np.nan
        out[f"delta_{what}_ms"] = out[f"canary_{what}_ms"] - out[f"baseline_{what}_ms"]
    # largest first; deltas equal to a nanosecond tie, broken by name (sums taken chunk by chunk
    # differ in their last bits, and must not reorder the table)
    size = out["delta_critical_ms"].abs().round(6).fillna(-1.0).rename("size")
    out = out.join(size).reset_index().sort_values(["size", "service"], ascending=[False, True])
    return out.drop(columns="size").reset_index(drop=True)


def hop_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [dict(zip(frame.columns, row, strict=True)) for row in frame.itertuples(index=False)]
