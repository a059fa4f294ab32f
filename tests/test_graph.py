"""Service graph edges against a plain loop over spans."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from analysis.graph import service_graph
from analysis.synthetic import make_run


def plain_edges(spans: pd.DataFrame) -> tuple[Counter, Counter]:
    rows = spans.to_dict("records")
    by_id = {(r["trace_id"], r["span_id"]): r for r in rows}
    calls: Counter = Counter()
    errors: Counter = Counter()
    for r in rows:
        parent = by_id.get((r["trace_id"], r["parent_id"]))
        source = parent["service"] if parent is not None else "client"
        if source == r["service"]:
            continue
        version = r["version"] if isinstance(r["version"], str) else "unknown"
        key = (source, r["service"], version)
        calls[key] += 1
        errors[key] += r["status_code"] >= 500
    return calls, errors


def test_counts_equal_a_plain_loop() -> None:
    run = make_run(n_requests=3000, seed=41, error_rate={"v2": 0.05}, trace_sample=0.7)
    spans = run.spans
    # an internal span (same service as its parent) is not an edge
    extra = spans.iloc[:1].assign(span_id="f" * 16, parent_id=spans["span_id"].iloc[0])
    spans = pd.concat([spans, extra], ignore_index=True)
    graph = service_graph(spans)
    calls, errors = plain_edges(spans)
    got = {
        (r.source, r.destination, r.destination_version): (r.requests, r.errors)
        for r in graph.itertuples()
    }
    assert got == {k: (calls[k], errors[k]) for k in calls}


def test_shares_split_each_edge() -> None:
    run = make_run(n_requests=20_000, seed=42, steps=({"v1": 75, "v2": 25},))
    graph = service_graph(run.spans)
    assert graph.groupby(["source", "destination"])["share"].sum().tolist() == pytest.approx(
        [1.0] * 5
    )
    entry = graph[(graph["source"] == "client") & (graph["destination"] == "frontend")]
    shares = dict(zip(entry["destination_version"], entry["share"], strict=True))
    assert shares["v2"] == pytest.approx(0.25, abs=0.015)
    assert set(graph["source"]) == {"client", "frontend", "recommendationservice"}
