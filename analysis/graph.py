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
from analysis.latency import group_codes

GRAPH_COLUMNS = ("source", "destination", "destination_version", "requests", "errors", "share")


def service_graph(spans: pd.DataFrame, *, client: str = "client") -> pd.DataFrame:
    """source | destination | destination_version | requests | errors | share."""
    parent = spans["parent_row"].to_numpy() if "parent_row" in spans.columns else parent_rows(spans)
    codes, names = label_codes(spans["service"])
    names = np.append(names, client)
    src = np.where(parent >= 0, codes[np.maximum(parent, 0)], len(names) - 1)
    edge = (parent < 0) | (src != codes)
    failed = _failed(spans)
    frame = pd.DataFrame(
        {
            "source": pd.Categorical.from_codes(src[edge], categories=list(names)),
            "destination": pd.Categorical.from_codes(codes[edge], categories=list(names)),
            "destination_version": spans["version"].to_numpy()[edge],
        }
    )
    by = ["source", "destination", "destination_version"]
    gcodes, out = group_codes(frame, by)
    out["requests"] = np.bincount(gcodes, minlength=len(out))
    out["errors"] = np.bincount(gcodes, weights=failed[edge], minlength=len(out)).astype(np.int64)
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
