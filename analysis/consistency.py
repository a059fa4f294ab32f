"""Do the client, Prometheus and the traces agree on who served how many requests?

Counts are per (step, version). The client's come from its `step` column; metrics and traces have
no step, so they are cut by time: step k runs from its weight change's requested_ns (accepted_ns
if missing) to the next step's start, the last step to run.json `ended_ns`.

Counter increases interpolate the reset-corrected counter linearly at the window edges and clamp
outside the scraped range. Unlike PromQL's increase() they do not extrapolate, so requests
before a series' first scrape are not counted (a real cluster's counters started long before).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis.changepoint import label_codes, version_labels, weight_events
from analysis.hops import parent_rows
from analysis.latency import group_codes
from meshcore.errors import RunFolderError

COUNT_COLUMNS = ("step", "version", "requests")


def step_windows(run: Mapping[str, Any], requests: pd.DataFrame | None = None) -> pd.DataFrame:
    """step | start_ns | end_ns, from the weight events of run.json.

    A run without weight events (cut short, or a plain load test) falls back to where each step's
    first client request started.
    """
    events = weight_events(run)
    steps = events["step"].tolist()
    starts = [
        int(r if r is not None and not pd.isna(r) else a)
        for r, a in zip(events["requested_ns"], events["accepted_ns"], strict=True)
    ]
    if not starts and requests is not None and len(requests):
        first = requests.groupby("step")["start_ns"].min().sort_index()
        steps, starts = [int(s) for s in first.index], [int(t) for t in first]
    ended = run.get("ended_ns")
    last = int(ended) if ended is not None else np.iinfo(np.int64).max
    ends = [*starts[1:], max(last, starts[-1])] if starts else []
    return pd.DataFrame(
        {"step": steps, "start_ns": starts, "end_ns": ends},
        columns=["step", "start_ns", "end_ns"],
    ).astype(np.int64)


def _per_step_version(step: np.ndarray, version: np.ndarray, weights: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"step": step, "version": version})
    codes, out = group_codes(frame, ["step", "version"])
    out["requests"] = np.bincount(codes, weights=weights, minlength=len(out))
    return out


def client_counts(requests: pd.DataFrame) -> pd.DataFrame:
    """Requests per step and version as the client saw them (null version -> "unknown")."""
    return _per_step_version(
        requests["step"].to_numpy(), version_labels(requests["version"]), np.ones(len(requests))
    ).astype({"requests": np.int64})


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
) -> pd.DataFrame:
    """Requests per step and destination_version from istio_requests_total samples."""
    mine = samples[samples["metric"].astype(str).to_numpy() == metric]
    if mine.empty:
        return pd.DataFrame(columns=list(COUNT_COLUMNS))
    codes, sets = _series_labels(mine)
    wanted = np.array(
        [lb.get("reporter") == reporter and lb.get("destination_app") == app for lb in sets]
    )
    keep = wanted[codes]
    version_of = [lb.get("destination_version", "unknown") for lb in sets]
    frame = pd.DataFrame(
        {
            "key": codes[keep],
            "t": mine["t"].to_numpy(dtype=float)[keep],
            "value": mine["value"].to_numpy(dtype=float)[keep],
        }
    )
    starts_s = windows["start_ns"].to_numpy() / 1e9
    ends_s = windows["end_ns"].to_numpy() / 1e9
    rows: list[tuple[Any, ...]] = []
    for key, g in frame.groupby("key", sort=True):
        version = version_of[int(key)]
        g = g.sort_values("t")
        v = g["value"].to_numpy()
        drops = np.concatenate(([0.0], np.where(np.diff(v) < 0, v[:-1], 0.0)))
        total = v + np.cumsum(drops)  # a counter reset restarts at 0: carry what came before
        t = g["t"].to_numpy()
        inc = np.interp(ends_s, t, total) - np.interp(starts_s, t, total)
        rows.extend(zip(windows["step"], [version] * len(inc), inc, strict=True))
    out = pd.DataFrame(rows, columns=list(COUNT_COLUMNS))
    return out.groupby(["step", "version"], as_index=False)["requests"].sum()


def trace_counts(
    spans: pd.DataFrame, windows: pd.DataFrame, *, frontend: str = "frontend"
) -> pd.DataFrame:
    """Traced requests per step and version: spans entering `frontend` from outside it."""
    parent = spans["parent_row"].to_numpy() if "parent_row" in spans.columns else parent_rows(spans)
    codes, names = label_codes(spans["service"])
    is_fe = names[codes] == frontend
    entry = is_fe & ((parent < 0) | ~is_fe[np.maximum(parent, 0)])
    if "kind" in spans.columns:
        k_codes, k_names = label_codes(spans["kind"])
        server = np.char.lower(k_names.astype(str))[k_codes] == "server"
        if (server & is_fe).any():  # sources without span kinds count every entry span
            entry &= server
    if windows.empty:
        return pd.DataFrame(columns=list(COUNT_COLUMNS))
    start_ns = spans["start_ns"].to_numpy()[entry]
    idx = np.searchsorted(windows["start_ns"].to_numpy(), start_ns, side="right") - 1
    inside = (idx >= 0) & (start_ns < windows["end_ns"].to_numpy()[np.maximum(idx, 0)])
    steps = windows["step"].to_numpy()[np.maximum(idx, 0)][inside]
    version = version_labels(spans["version"])[entry][inside]
    out = _per_step_version(steps, version, np.ones(len(steps)))
    return out.astype({"requests": np.int64})


def _normalised_ids(series: pd.Series, *, unique: bool = False) -> pa.Array:
    # Jaeger drops leading zeros of 128-bit ids and may use upper case; compare canonically
    arr = pa.array(series.astype("str"), from_pandas=True)
    if unique:
        arr = pc.unique(arr)  # five spans share a trace id: normalise each id once
    return pc.utf8_ltrim(pc.utf8_lower(arr), characters="0")


def trace_coverage(requests: pd.DataFrame, spans: pd.DataFrame) -> float | None:
    """Share of client requests (with a trace_id) whose trace is present in the spans."""
    ids = _normalised_ids(requests["trace_id"].dropna())
    if len(ids) == 0:
        return None
    traced = pc.unique(_normalised_ids(spans["trace_id"].dropna(), unique=True))
    found = pc.is_in(ids, value_set=traced)
    return float(pc.sum(found).as_py() or 0) / len(ids)


def consistency_table(
    client: pd.DataFrame, metrics: pd.DataFrame | None = None, traces: pd.DataFrame | None = None
) -> pd.DataFrame:
    """step | version | client | metrics | traces, outer-joined (missing source -> NaN)."""
    out = client.rename(columns={"requests": "client"})
    for name, other in (("metrics", metrics), ("traces", traces)):
        if other is None or other.empty:
            out[name] = np.nan
            continue
        right = other.rename(columns={"requests": name}).astype({"step": np.int64})
        out = out.merge(right, on=["step", "version"], how="outer")
    out = out.sort_values(["step", "version"]).reset_index(drop=True)
    out["client"] = out["client"].fillna(0).astype(np.int64)
    out["traces"] = out["traces"].astype("Int64")  # counts stay integers beside missing ones
    return out
