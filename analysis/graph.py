"""The service graph from spans, as Kiali draws it: edges with request counts and version split.

An edge is a span whose parent span belongs to another service (a call crossing a service
boundary); spans inside one service are not edges. A root span is an edge from `client` (the load
generator or the ingress), so the frontend's own split shows up on the first edge. Each edge is
split by the version of the called span: `share` is its fraction of the (source, destination)
calls, which is what a weighted route should reproduce.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.changepoint import label_codes
from analysis.hops import parent_rows

GRAPH_COLUMNS = ("source", "destination", "destination_version", "requests", "errors", "share")
_EDGE = ("source", "destination", "destination_version")


def service_graph(spans: pd.DataFrame, *, client: str = "client") -> pd.DataFrame:
    """source | destination | destination_version | requests | errors | share."""
    return with_shares(edge_counts(spans, client=client))


def edge_counts(spans: pd.DataFrame, *, client: str = "client") -> pd.DataFrame:
    """source | destination | destination_version | requests | errors: the graph's counts, which
    chunks of whole traces add up (`sum_edges`)."""
    parent = spans["parent_row"].to_numpy() if "parent_row" in spans.columns else parent_rows(spans)
    codes, names = label_codes(spans["service"])
    names = np.append(names, client)
    src = np.where(parent >= 0, codes[np.maximum(parent, 0)], len(names) - 1)
    edge = (parent < 0) | (src != codes)
    v_codes, v_names = label_codes(spans["version"])
    shape = (len(names), len(names), len(v_names))
    flat = np.ravel_multi_index((src[edge], codes[edge], v_codes[edge]), shape)
    requests = np.bincount(flat, minlength=int(np.prod(shape)))
    errors = np.bincount(flat, weights=_failed(spans)[edge], minlength=len(requests))
    present = np.flatnonzero(requests)
    si, di, vi = np.unravel_index(present, shape)
    out = pd.DataFrame(
        {
            "source": names[si].astype(object),
            "destination": names[di].astype(object),
            "destination_version": v_names[vi].astype(object),
            "requests": requests[present].astype(np.int64),
            "errors": errors[present].astype(np.int64),
        }
    )
    return out.sort_values(list(_EDGE), kind="stable").reset_index(drop=True)


def sum_edges(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The edge counts of several chunks as one (keys sorted as `edge_counts` sorts them)."""
    if not parts:
        return pd.DataFrame(columns=[*_EDGE, "requests", "errors"])
    both = pd.concat(parts, ignore_index=True)
    summed = both.groupby(list(_EDGE), sort=True)[["requests", "errors"]].sum()
    return summed.reset_index().astype({"requests": np.int64, "errors": np.int64})


def with_shares(counts: pd.DataFrame) -> pd.DataFrame:
    """Edge counts plus each edge's share of its (source, destination) calls."""
    out = counts.copy()
    pair_total = out.groupby(["source", "destination"])["requests"].transform("sum")
    out["share"] = out["requests"] / pair_total
    return out[list(GRAPH_COLUMNS)].reset_index(drop=True)


def _failed(spans: pd.DataFrame) -> np.ndarray:
    """An error span: HTTP status >= 500 (the frames' Int64), or OTel status ERROR as text."""
    if "status_code" not in spans.columns:
        return np.zeros(len(spans))
    status = spans["status_code"]
    if pd.api.types.is_numeric_dtype(status.dtype):
        return (status.fillna(0).to_numpy(dtype=float) >= 500).astype(float)
    codes, names = label_codes(status)
    bad = np.array(
        [
            n.upper() in ("ERROR", "STATUS_CODE_ERROR") or (n[:1] == "5" and len(n) == 3)
            for n in names
        ]
    )
    return bad[codes].astype(float)


def graph_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [dict(zip(frame.columns, row, strict=True)) for row in frame.itertuples(index=False)]
