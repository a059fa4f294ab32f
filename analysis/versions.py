"""The serving version of a request whose response carried none: its trace's.

A response may come without the version header (a version that does not set it, a header name
the run was not told, no stamp); its trace still says which frontend served it: the version
(`istio.canonical_revision`) of the frontend's SERVER span entering the trace from outside the
frontend (its earliest, when a trace entered it more than once), joined by `trace_id`. Every
figure per version (split, propagation, latency, errors, the judge) then reads the filled
column; the notes say how many were filled so and how many stayed unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis.changepoint import label_codes
from analysis.hops import parent_rows
from analysis.span_chunks import id_keys, normalised


def normalised_ids(series: pd.Series, *, unique: bool = False) -> pa.Array:
    """Trace ids compared canonically: Jaeger drops leading zeros of 128-bit ids and may use
    upper case."""
    arr = pa.array(series.astype("str"), from_pandas=True)
    if unique:
        arr = pc.unique(arr)  # five spans share a trace id: normalise each id once
    return normalised(arr)


def trace_keys(series: pd.Series) -> np.ndarray:
    """A uint64 per trace id, equal for ids equal once normalised (`normalised_ids`):
    `analysis.span_chunks.id_keys`."""
    out = np.empty(len(series), dtype=np.uint64)
    for at in range(0, len(series), _KEY_SLICE):  # a slice at a time: each step copies the ids
        ids = pa.array(series.iloc[at : at + _KEY_SLICE].astype("str"), from_pandas=True)
        out[at : at + len(ids)] = id_keys(ids)
    return out


_KEY_SLICE = 1_000_000


def frontend_entries(spans: pd.DataFrame, frontend: str = "frontend") -> np.ndarray:
    """Spans entering `frontend` from outside it: its SERVER spans whose parent is not one of
    its own (every such span, for sources without span kinds)."""
    parent = spans["parent_row"].to_numpy() if "parent_row" in spans.columns else parent_rows(spans)
    codes, names = label_codes(spans["service"])
    is_fe = names[codes] == frontend
    entry = is_fe & ((parent < 0) | ~is_fe[np.maximum(parent, 0)])
    if "kind" in spans.columns:
        k_codes, k_names = label_codes(spans["kind"])
        server = np.char.lower(k_names.astype(str))[k_codes] == "server"
        if (server & is_fe).any():
            entry &= server
    return np.asarray(entry, dtype=bool)


@dataclass(frozen=True)
class VersionFill:
    """The requests with versions filled from traces; `missing` had none, `filled` of them got
    their trace's."""

    requests: pd.DataFrame
    missing: int
    filled: int

    def notes(self) -> list[str]:
        if not self.missing:
            return []
        left = self.missing - self.filled
        if not self.filled:
            return [f"{self.missing:,} requests carried no version header (counted as 'unknown')"]
        return [
            f"{self.missing:,} requests carried no version header: {self.filled:,} took their "
            "trace's (the frontend's SERVER span, istio.canonical_revision), "
            f"{left:,} stayed 'unknown'"
        ]


def fill_versions(
    requests: pd.DataFrame, spans: pd.DataFrame | None, *, frontend: str = "frontend"
) -> VersionFill:
    """`requests` with each null version taken from its trace where the spans have it."""
    entries = None if spans is None or spans.empty else trace_versions(spans, frontend)
    return fill_from_traces(requests, entries)


def trace_versions(
    spans: pd.DataFrame, frontend: str = "frontend", wanted: pa.Array | None = None
) -> pd.DataFrame:
    """trace_id (normalised) | start_ns | version of the spans entering the frontend that name
    a version, only of the `wanted` traces (normalised ids) when given. Chunks of whole traces
    give parts that concatenate."""
    entry = frontend_entries(spans, frontend) & spans["version"].notna().to_numpy()
    ids = normalised_ids(spans["trace_id"].iloc[np.flatnonzero(entry)])
    rows = np.flatnonzero(entry)
    if wanted is not None:
        keep = np.asarray(pc.is_in(ids, value_set=wanted), dtype=bool)
        ids, rows = ids.filter(pa.array(keep)), rows[keep]
    return pd.DataFrame(
        {
            "trace_id": ids.to_pandas(),
            "start_ns": spans["start_ns"].to_numpy()[rows],
            "version": spans["version"].astype(str).to_numpy()[rows],
        }
    )


def missing_ids(requests: pd.DataFrame) -> pa.Array | None:
    """The normalised trace ids of the requests that carried no version (None: there are none)."""
    if "version" not in requests.columns or "trace_id" not in requests.columns:
        return None
    rows = requests["version"].isna().to_numpy() & requests["trace_id"].notna().to_numpy()
    if not rows.any():
        return None
    return pc.unique(normalised_ids(requests["trace_id"][rows]))


def fill_from_traces(requests: pd.DataFrame, entries: pd.DataFrame | None) -> VersionFill:
    """`requests` with each null version taken from `entries` (`trace_versions`): the earliest
    entry of its trace."""
    missing = requests["version"].isna().to_numpy() if "version" in requests.columns else None
    if missing is None or not missing.any():
        return VersionFill(requests, 0, 0)
    if entries is None or entries.empty or "trace_id" not in requests.columns:
        return VersionFill(requests, int(missing.sum()), 0)
    entries = entries.sort_values("start_ns", kind="stable")
    ids = pd.Index(entries["trace_id"])
    first = ~ids.duplicated()
    by_trace = pd.Index(ids[first])
    versions = entries["version"].to_numpy()[first]
    rows = np.flatnonzero(missing & requests["trace_id"].notna().to_numpy())
    wanted = normalised_ids(requests["trace_id"].iloc[rows]).to_pandas()
    at = by_trace.get_indexer(pd.Index(wanted))
    hit = at >= 0
    if not hit.any():
        return VersionFill(requests, int(missing.sum()), 0)
    column = requests["version"].astype(object).to_numpy(copy=True)
    column[rows[hit]] = versions[at[hit]]
    out = requests.copy(deep=False)
    out["version"] = pd.Categorical(column)
    return VersionFill(out, int(missing.sum()), int(hit.sum()))
