"""Do the client, Prometheus and the traces agree on who served how many requests?

Counts are per (step, version). The client's come from its `step` column; metrics and traces have
no step, so they are cut by time: step k runs from its weight change's requested_ns (accepted_ns
if missing) to the next step's start, the last step to run.json `ended_ns`. The rollout tells
the load generators of a step before it sends the weights, so when the client's first request
of step k started earlier (and after its last of step k - 1), step k starts there: the cut
falls where the client's fell.

Prometheus counts are whole requests: per series of `istio_requests_total` (reset-corrected),
the difference between the samples nearest each step boundary, never interpolated or
extrapolated, so the steps add up to the run. The run's own edges are the exception: it counts
from the last sample at or before its first step's start to the first at or after its end, so
the requests of its first and last moments are not left out (nearest, the last sample could
come before the last requests ended). A series first scraped after the run started was born in
it (Istio creates a series with its first request): it counts from 0 at the scrape before its
first. Traced requests are the spans entering the frontend from outside it.

`analysis.agreement` compares the three and says why they differ.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from analysis.changepoint import label_codes, version_labels, weight_events
from analysis.latency import group_codes
from analysis.versions import frontend_entries, normalised_ids
from meshcore.errors import RunFolderError

COUNT_COLUMNS = ("step", "version", "requests")


def step_windows(run: Mapping[str, Any], requests: pd.DataFrame | None = None) -> pd.DataFrame:
    """step | start_ns | end_ns, from the weight events of run.json, each start moved back to
    the client's first request of the step when that began earlier (the module docstring).

    A run without weight events (cut short, or a plain load test) falls back to where each step's
    first client request started.
    """
    events = weight_events(run)
    steps = events["step"].tolist()
    starts = [
        int(r if r is not None and not pd.isna(r) else a)
        for r, a in zip(events["requested_ns"], events["accepted_ns"], strict=True)
    ]
    if requests is not None and len(requests):
        by_step = requests.groupby("step")["start_ns"]
        first_start, last_start = by_step.min().to_dict(), by_step.max().to_dict()
        if not starts:
            steps = sorted(int(s) for s in first_start)
            starts = [int(first_start[s]) for s in steps]
        for i in range(1, len(steps)):
            k, before = steps[i], steps[i - 1]
            if (
                k in first_start
                and last_start.get(before, starts[i - 1]) < first_start[k] < starts[i]
            ):
                starts[i] = int(first_start[k])
    ended = run.get("ended_ns")
    last = int(ended) if ended is not None else np.iinfo(np.int64).max
    ends = [*starts[1:], max(last, starts[-1])] if starts else []
    return pd.DataFrame(
        {"step": steps, "start_ns": starts, "end_ns": ends},
        columns=["step", "start_ns", "end_ns"],
    ).astype(np.int64)


def _per_step_version(
    step: np.ndarray, version: np.ndarray | pd.Categorical, weights: np.ndarray
) -> pd.DataFrame:
    frame = pd.DataFrame({"step": step, "version": version})
    codes, out = group_codes(frame, ["step", "version"])
    out["requests"] = np.bincount(codes, weights=weights, minlength=len(out))
    return out


def client_counts(requests: pd.DataFrame) -> pd.DataFrame:
    """Requests per step and version as the client saw them (null version -> "unknown")."""
    codes, names = label_codes(requests["version"])  # codes: 10 M labels as strings cost seconds
    versions = pd.Categorical.from_codes(codes, categories=list(names))
    return _per_step_version(requests["step"].to_numpy(), versions, np.ones(len(requests))).astype(
        {"requests": np.int64}
    )


def _series_labels(samples: pd.DataFrame) -> tuple[np.ndarray, list[dict[str, str]]]:
    """A series code per sample and the label set of each code (each distinct set parsed once)."""
    if "labels" in samples.columns:
        codes, uniques = pd.factorize(samples["labels"].astype(str))
        try:
            sets = [dict(json.loads(x)) for x in uniques]
        except (ValueError, TypeError) as exc:
            raise RunFolderError(
                f"metrics: a labels value is not a JSON object ({exc}); rewrite metrics.parquet"
            ) from None
        return codes, sets
    cols = [c for c in samples.columns if c not in ("t", "metric", "value")]
    frame = samples[cols].astype(str)
    codes, uniques = pd.MultiIndex.from_frame(frame).factorize()
    return codes, [dict(zip(cols, row, strict=True)) for row in uniques]


def metrics_counts_from_istio(
    samples: pd.DataFrame,
    windows: pd.DataFrame,
    *,
    app: str = "frontend",
    reporter: str = "destination",
    metric: str = "istio_requests_total",
    started_ns: int | None = None,
) -> pd.DataFrame:
    """Whole requests per step and destination_version from istio_requests_total samples,
    counted between the samples nearest each step boundary (see the module docstring).

    Columns: step, version, requests, and scrape_start_ns / scrape_end_ns: the samples the
    count runs between (of the version's busiest series)."""
    columns = [*COUNT_COLUMNS, "scrape_start_ns", "scrape_end_ns"]
    mine = samples[samples["metric"].astype(str).to_numpy() == metric]
    if mine.empty or windows.empty:
        return pd.DataFrame(columns=columns)
    codes, sets = _series_labels(mine)
    wanted = np.array(
        [lb.get("reporter") == reporter and lb.get("destination_app") == app for lb in sets]
    )
    keep = wanted[codes]
    if not keep.any():
        return pd.DataFrame(columns=columns)
    version_of = [lb.get("destination_version", "unknown") for lb in sets]
    frame = pd.DataFrame(
        {
            "key": codes[keep],
            "t": mine["t"].to_numpy(dtype=float)[keep],
            "value": mine["value"].to_numpy(dtype=float)[keep],
        }
    ).sort_values(["key", "t"], kind="stable")
    diffs = np.diff(frame["t"].to_numpy())[np.diff(frame["key"].to_numpy()) == 0]
    interval_s = float(np.median(diffs[diffs > 0])) if (diffs > 0).any() else None
    started = started_ns if started_ns is not None else int(windows["start_ns"].iloc[0])
    started_s = started / 1e9
    starts_s = windows["start_ns"].to_numpy() / 1e9
    ends_s = windows["end_ns"].to_numpy() / 1e9
    rows: list[tuple[Any, ...]] = []
    for key, g in frame.groupby("key", sort=True):
        t = g["t"].to_numpy()
        v = g["value"].to_numpy()
        drops = np.concatenate(([0.0], np.where(np.diff(v) < 0, v[:-1], 0.0)))
        total = v + np.cumsum(drops)  # a counter reset restarts at 0: carry what came before
        if t[0] > started_s:  # born during the run: 0 at the scrape before its first
            zero_at = max(started_s, t[0] - interval_s) if interval_s else started_s
            t, total = np.concatenate(([zero_at], t)), np.concatenate(([0.0], total))
        first, last = _nearest(t, starts_s), _nearest(t, ends_s)
        first[0] = max(np.searchsorted(t, starts_s[0], side="right") - 1, 0)
        last[-1] = min(np.searchsorted(t, ends_s[-1], side="left"), len(t) - 1)
        counts = np.round(total[last] - total[first]).astype(np.int64)
        edges = np.round(t[first] * 1e9).astype(np.int64), np.round(t[last] * 1e9).astype(np.int64)
        version = [version_of[int(key)]] * len(counts)
        rows.extend(zip(windows["step"], version, counts, *edges, strict=True))
    out = pd.DataFrame(rows, columns=columns)
    busiest = out.sort_values("requests", ascending=False, kind="stable").drop_duplicates(
        ["step", "version"]
    )
    summed = out.groupby(["step", "version"], as_index=False)["requests"].sum()
    edges = busiest[["step", "version", "scrape_start_ns", "scrape_end_ns"]]
    out = summed.merge(edges, on=["step", "version"])
    return out.sort_values(["step", "version"], ignore_index=True)


def _nearest(t: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Index of the sample time nearest each of `at` (the earlier one on a tie)."""
    right = np.clip(np.searchsorted(t, at), 0, len(t) - 1)
    left = np.clip(right - 1, 0, len(t) - 1)
    return np.where(np.abs(t[left] - at) <= np.abs(t[right] - at), left, right)


def trace_counts(
    spans: pd.DataFrame, windows: pd.DataFrame, *, frontend: str = "frontend"
) -> pd.DataFrame:
    """Traced requests per step and version: spans entering `frontend` from outside it."""
    entry = frontend_entries(spans, frontend)
    return window_counts(
        spans["start_ns"].to_numpy()[entry], version_labels(spans["version"])[entry], windows
    )


def window_counts(start_ns: np.ndarray, version: np.ndarray, windows: pd.DataFrame) -> pd.DataFrame:
    """step | version | requests of events at `start_ns`, each counted in the step whose window
    holds it (none outside every window)."""
    if windows.empty:
        return pd.DataFrame(columns=list(COUNT_COLUMNS))
    idx = np.searchsorted(windows["start_ns"].to_numpy(), start_ns, side="right") - 1
    inside = (idx >= 0) & (start_ns < windows["end_ns"].to_numpy()[np.maximum(idx, 0)])
    steps = windows["step"].to_numpy()[np.maximum(idx, 0)][inside]
    out = _per_step_version(steps, version[inside], np.ones(len(steps)))
    return out.astype({"requests": np.int64})


def trace_coverage(requests: pd.DataFrame, spans: pd.DataFrame) -> float | None:
    """Share of client requests (with a trace_id) whose trace is present in the spans."""
    ids = normalised_ids(requests["trace_id"].dropna())
    if len(ids) == 0:
        return None
    traced = pc.unique(normalised_ids(spans["trace_id"].dropna(), unique=True))
    found = pc.is_in(ids, value_set=traced)
    return float(pc.sum(found).as_py() or 0) / len(ids)


def consistency_table(
    client: pd.DataFrame, metrics: pd.DataFrame | None = None, traces: pd.DataFrame | None = None
) -> pd.DataFrame:
    """step | version | client | metrics | traces, outer-joined (missing source -> NA)."""
    out = client.rename(columns={"requests": "client"})
    for name, other in (("metrics", metrics), ("traces", traces)):
        if other is None or other.empty:
            out[name] = np.nan
            continue
        right = other[list(COUNT_COLUMNS)].rename(columns={"requests": name})
        out = out.merge(right.astype({"step": np.int64}), on=["step", "version"], how="outer")
    out = out.sort_values(["step", "version"]).reset_index(drop=True)
    out["client"] = out["client"].fillna(0).astype(np.int64)
    for name in ("metrics", "traces"):  # counts stay integers beside missing ones
        out[name] = pd.to_numeric(out[name]).round().astype("Int64")
    return out
