"""Self time and critical path on hand-made trees, and against plain loops on synthetic traces."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.hop_stats import hop_stats, hop_table
from analysis.hops import hop_times, parent_rows
from analysis.synthetic import make_run

MS = 1_000_000
T0 = 1_767_225_600_000_000_000


def span(trace, sid, parent, service, start_ms, end_ms, version="v1"):
    return {
        "trace_id": trace,
        "span_id": sid,
        "parent_id": parent,
        "service": service,
        "operation": "op",
        "kind": "server",
        "start_ns": T0 + int(start_ms * MS),
        "duration_ms": float(end_ms - start_ms),
        "version": version,
        "status_code": "OK",
        "attributes": "{}",
    }


def hand_made() -> pd.DataFrame:
    a = "a" * 32
    rows = [
        span(a, "r", None, "frontend", 0, 100, "v2"),
        span(a, "c1", "r", "productcatalog", 10, 40),
        span(a, "c2", "r", "recommendation", 30, 60),
        span(a, "c3", "r", "currency", 70, 90),
        span(a, "c4", "r", "shipping", 95, 110),  # overhangs its parent by 10 ms
        span(a, "g", "c2", "productcatalog", 35, 50),
        span("b" * 32, "ig", None, "istio-ingressgateway", 0, 50, None),
        span("b" * 32, "fe", "ig", "frontend", 2, 48, "v1"),
        span("b" * 32, "lost", "missing", "cart", 5, 6),  # orphan: its parent was not sampled
    ]
    return pd.DataFrame(rows).astype({"parent_id": "str", "version": "str"})


def test_self_time_equals_hand_arithmetic() -> None:
    out = hop_times(hand_made()).set_index("span_id")
    # r: 100 - |[10,40] u [30,60] u [70,90] u [95,100]| = 100 - (50 + 20 + 5)
    expected = {"r": 25, "c1": 30, "c2": 15, "c3": 20, "c4": 15, "g": 15, "ig": 4, "fe": 46}
    for sid, ms in expected.items():
        assert out.loc[sid, "self_ms"] == pytest.approx(ms, abs=1e-9), sid


def test_critical_path_equals_hand_arithmetic() -> None:
    out = hop_times(hand_made()).set_index("span_id")
    # from r's end: c4 (clipped to [95,100]), then c3 (ends 90 <= 95), then c2 (60 <= 70);
    # c1 ends at 40 > c2's start 30, so it is off the path
    expected = {"r": 45, "c4": 5, "c3": 20, "c2": 15, "g": 15, "c1": 0, "ig": 4, "fe": 46}
    for sid, ms in expected.items():
        assert out.loc[sid, "critical_ms"] == pytest.approx(ms, abs=1e-9), sid
    assert out.loc[["r", "c1", "c2", "c3", "c4", "g"], "critical_ms"].sum() == pytest.approx(100)


def test_tree_roots_and_versions() -> None:
    out = hop_times(hand_made()).set_index("span_id")
    assert out.loc["g", "depth"] == 2 and out.loc["lost", "parent_row"] == -1
    assert set(out.loc[["r", "c1", "g", "c4"], "root_version"]) == {"v2"}
    assert set(out.loc[["ig", "fe"], "root_version"]) == {"v1"}  # the frontend's, not the gateway's
    assert out.loc["lost", "root_version"] == "v1"  # its own root's version


def plain_self_ms(spans: pd.DataFrame) -> dict[tuple[str, str], float]:
    by_id = {(r["trace_id"], r["span_id"]): r for r in spans.to_dict("records")}
    for r in by_id.values():
        r["start_ns"] = int(r["start_ns"]) - T0  # float64 cannot hold epoch ns exactly
    children: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in by_id.values():
        if isinstance(r["parent_id"], str) and (r["trace_id"], r["parent_id"]) in by_id:
            children.setdefault((r["trace_id"], r["parent_id"]), []).append(
                (r["start_ns"], r["start_ns"] + r["duration_ms"] * MS)
            )
    result = {}
    for key, r in by_id.items():
        lo, hi = r["start_ns"], r["start_ns"] + r["duration_ms"] * MS
        covered, reach = 0.0, lo
        for s, e in sorted(children.get(key, [])):
            s, e = max(s, reach), min(e, hi)
            if e > s:
                covered += e - s
                reach = e
        result[key] = max(hi - lo - covered, 0.0) / MS
    return result


def test_self_time_equals_plain_loop_on_synthetic() -> None:
    run = make_run(n_requests=300, seed=31, slowdown={"v2": 1.4})
    out = hop_times(run.spans)
    expected = plain_self_ms(run.spans)
    got = dict(zip(zip(out["trace_id"], out["span_id"], strict=True), out["self_ms"], strict=True))
    assert got.keys() == expected.keys()
    for key, ms in expected.items():
        assert got[key] == pytest.approx(ms, abs=1e-5)


def test_hex_and_general_id_paths_agree() -> None:
    spans = make_run(n_requests=500, seed=32).spans
    renamed = spans.assign(span_id=spans["span_id"] + "-x", parent_id=spans["parent_id"] + "-x")
    np.testing.assert_array_equal(parent_rows(spans), parent_rows(renamed))
    assert (parent_rows(spans) >= 0).sum() == 4 * 500


def test_hop_table_attributes_the_canary_slowdown() -> None:
    run = make_run(n_requests=4000, seed=33, slowdown={"v2": 1.3})
    timed = hop_times(run.spans)
    stats = hop_stats(timed)
    roots = timed[timed["parent_row"] < 0]
    for v in ("v1", "v2"):
        mine = stats[stats["root_version"] == v]
        mean_root = roots.loc[roots["root_version"] == v, "duration_ms"].mean()
        assert mine["critical_per_trace_ms"].sum() == pytest.approx(mean_root, rel=1e-9)
    table = hop_table(stats, "v1", "v2").set_index("service")
    assert table.index[0] == "frontend"  # the largest critical-path delta comes first
    assert table.loc["frontend", "delta_self_ms"] > 3.0
    others = table.drop(index="frontend")
    assert (others["delta_critical_ms"].abs() < 0.5).all()


def test_chunks_of_whole_traces_give_the_whole_frames_figures() -> None:
    """A frame done in chunks of whole traces (here about 700 spans, shuffled so a trace's
    spans are scattered) gives every span the figures of the frame done at once."""
    spans = make_run(n_requests=800, seed=34, slowdown={"v2": 1.2}).spans
    spans = spans.sample(frac=1.0, random_state=1).reset_index(drop=True)
    whole = hop_times(spans)
    chunked = hop_times(spans, chunk_spans=700)
    assert len(spans) > 3 * 700  # several chunks
    pd.testing.assert_frame_equal(chunked, whole)
    big = spans.assign(trace_id="one-trace")  # a trace longer than a chunk stays whole
    pd.testing.assert_frame_equal(hop_times(big, chunk_spans=700), hop_times(big))
