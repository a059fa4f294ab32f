"""Chart series against plain loops, and charts that survive odd input (no data, `$` in names)."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest

from analysis.charts import (
    bucket_seconds,
    bucketed,
    cdf_points,
    configured_shares,
    plot_hops,
    plot_split,
    render_charts,
)
from analysis.graph_chart import FONT_PT, graph_depths, plot_graph
from analysis.summary import build_summary
from analysis.synthetic import T0_NS, make_run


@pytest.fixture(scope="module")
def synth():
    return make_run(n_requests=3000, seed=81, error_rate={"v2": 0.05}, unknown_rate=0.01)


def _is_png(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_bucketed_counts_equal_a_plain_loop(synth) -> None:
    req = synth.requests
    t_s, names, total, errors = bucketed(req, 2.0, T0_NS)
    expected_total: dict[tuple[int, str], int] = {}
    expected_err: dict[tuple[int, str], int] = {}
    for start, version, ok in zip(req["start_ns"], req["version"], req["ok"], strict=True):
        key = (int((start - T0_NS) // 2_000_000_000), "unknown" if pd.isna(version) else version)
        expected_total[key] = expected_total.get(key, 0) + 1
        expected_err[key] = expected_err.get(key, 0) + (not ok)
    assert total.sum() == len(req)
    assert list(t_s[:3]) == [0.0, 2.0, 4.0]
    for (b, v), n in expected_total.items():
        j = list(names).index(v)
        assert total[b, j] == n
        assert errors[b, j] == expected_err[(b, v)]


def test_cdf_points_are_order_statistics(synth) -> None:
    points = cdf_points(synth.requests, n_points=50)
    v1 = np.sort(synth.requests.loc[synth.requests["version"] == "v1", "latency_ms"].to_numpy())
    assert len(points["v1"]) == 50
    assert points["v1"][0] == v1[0] and points["v1"][-1] == v1[-1]
    assert np.all(np.diff(points["v1"]) >= 0)
    assert set(points) == {"v1", "v2", "unknown"}


def test_configured_shares_and_bucket_length(synth) -> None:
    t_s, shares = configured_shares(synth.run, T0_NS)
    assert list(shares["v2"]) == [0.0, 0.1, 0.5, 1.0]
    assert t_s[0] < 0 < t_s[1]  # the first weights were applied before traffic
    assert bucket_seconds(15.0) == 1.0
    assert bucket_seconds(3600.0) == 30.0
    assert 50 <= 3600.0 / bucket_seconds(3600.0) <= 150
    assert bucket_seconds(16.0, 382) == 2.0  # 30 requests a bucket at least: 1.26 s -> 2 s


def test_graph_depths_put_callees_right_of_callers() -> None:
    edges = pd.DataFrame(
        {
            "source": ["client", "frontend", "frontend", "recommendation", "a", "b"],
            "destination": ["frontend", "catalog", "recommendation", "catalog", "b", "a"],
        }
    )
    depth = graph_depths(edges)
    assert depth["client"] == 0 and depth["frontend"] == 1
    assert depth["catalog"] == 3  # longest chain: client -> frontend -> recommendation -> catalog
    assert {"a", "b"} <= set(depth)  # a call cycle still gets places


def test_outside_names_with_dollars_draw(synth) -> None:
    graph = [
        {
            "source": "client",
            "destination": "$front$end",
            "destination_version": "v$1",
            "requests": 10,
            "errors": 1,
            "share": 1.0,
        },
        {
            "source": "$front$end",
            "destination": "a_b^c",
            "destination_version": None,
            "requests": 5,
            "errors": 0,
            "share": 1.0,
        },
    ]
    width, height = _is_png(plot_graph(graph))
    assert width > 500 and height > 200
    hops = {
        "baseline": "v$1",
        "canary": "v2",
        "table": [
            {
                "service": "$x",
                "baseline_self_ms": 1.0,
                "canary_self_ms": 2.0,
                "delta_self_ms": 1.0,
                "baseline_critical_ms": 1.0,
                "canary_critical_ms": None,
                "delta_critical_ms": None,
            }
        ],
    }
    _is_png(plot_hops(hops))


def test_split_chart_draws_without_weight_events(synth) -> None:
    run = {**synth.run, "events": []}
    summary = build_summary(run, synth.requests, None)
    _is_png(plot_split(synth.requests, run, summary, T0_NS, 1.0))


def test_render_charts_notes_what_cannot_be_drawn(synth) -> None:
    summary = build_summary(synth.run, synth.requests, None)
    charts, notes = render_charts(synth.run, synth.requests, summary)
    assert set(charts) == {"split_over_time", "latency_over_time", "latency_cdf", "error_rate"}
    assert any(n.startswith("chart hops not drawn") for n in notes)
    assert any(n.startswith("chart service_graph not drawn") for n in notes)
    empty = synth.requests.iloc[:0]
    charts, notes = render_charts(synth.run, empty, build_summary(synth.run, empty, None))
    assert charts == {}
    assert sum("no request records" in n for n in notes) == 4


def test_log_latency_axes_label_ticks_in_plain_milliseconds(monkeypatch) -> None:
    """Latencies within one decade (2-9 ms) are labelled by minor ticks: they read "3", not
    matplotlib's default "3×10⁰"."""
    import analysis.charts as charts

    drawn = []
    monkeypatch.setattr(charts, "png", lambda fig: drawn.append(fig) or b"")
    rng = np.random.default_rng(5)
    requests = pd.DataFrame(
        {
            "version": pd.Categorical(["v1", "v2"] * 500),
            "latency_ms": rng.uniform(2.0, 9.0, 1000),
        }
    )
    charts.plot_latency_cdf(requests)
    [fig] = drawn
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.xaxis.get_ticklabels(minor=True) if t.get_text()]
    assert labels and {"3", "5"} <= set(labels), labels
    assert not [t for t in labels if "10" in t and "times" in t], labels


def test_the_service_graph_is_as_wide_as_its_text_needs(monkeypatch) -> None:
    """Online Boutique's graph: the boxes never overlap, a column's boxes fit in it, and the gap
    between columns is the arrows' room, not a share of a fixed width (the old layout gave
    every column 3 in whatever its text: 18 in, text shrunk to 4 pt on the page)."""
    import analysis.graph_chart as graph_chart

    drawn = []
    monkeypatch.setattr(graph_chart, "png", lambda fig: drawn.append(fig) or b"")
    calls = [
        ("client", "meshload-client", "unknown", 4262),
        ("meshload-client", "istio-ingressgateway", "unknown", 4262),
        ("istio-ingressgateway", "frontend", "frontend-v1", 2623),
        ("istio-ingressgateway", "frontend", "frontend-v2", 1639),
    ]
    calls += [
        ("frontend", s, "v1", 900)
        for s in (
            "adservice",
            "cartservice",
            "checkoutservice",
            "currencyservice",
            "productcatalogservice",
            "recommendationservice",
        )
    ]
    calls += [
        ("checkoutservice", s, "v1", 150)
        for s in ("cartservice", "emailservice", "paymentservice", "shippingservice")
    ]
    calls += [("recommendationservice", "productcatalogservice", "v1", 3022)]  # fmt: skip
    graph = [{"source": s, "destination": d, "destination_version": v, "requests": n,
              "errors": 0, "share": n / 4262 if d == "frontend" else 1.0}
             for s, d, v, n in calls]  # fmt: skip
    plot_graph(graph)
    [fig] = drawn
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.axes[0].texts if t.get_bbox_patch() is not None]
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in texts]
    assert len(boxes) == 13 and {t.get_fontsize() for t in texts} == {FONT_PT}
    for i, a in enumerate(boxes):
        assert a.x0 >= 0 and a.x1 <= fig.bbox.width  # inside the figure
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
    columns: dict[float, list] = {}  # a column's boxes share their centre
    for t, b in zip(texts, boxes, strict=True):
        columns.setdefault(t.get_position()[0], []).append(b)
    spans = [(min(b.x0 for b in c), max(b.x1 for b in c)) for _, c in sorted(columns.items())]
    assert len(spans) == 6
    gaps = [nxt[0] - cur[1] for cur, nxt in zip(spans, spans[1:], strict=False)]
    assert all(0 < g < fig.dpi for g in gaps), gaps  # under an inch between columns
    assert fig.get_size_inches()[0] < 15
    # the gateway's caller line carries the split on a line of its own
    frontend = next(t.get_text() for t in texts if t.get_text().startswith("frontend\n"))
    assert frontend.splitlines()[2].strip() == "frontend-v1 62% / frontend-v2 38%"
