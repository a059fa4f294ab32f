"""Prometheus answers -> metrics frame, and analysis.promql against hand-worked numbers.

Quantile cases are the ones of Prometheus's own promql test data (histograms.test,
"testhistogram"), each checked by hand in the comments; increase() cases are worked out with
the documented extrapolation rules in plain arithmetic.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import promql
from analysis.frames import METRIC_COLUMNS, from_columns, labels_json
from analysis.prometheus import parse_response
from meshcore.errors import BackendError

FIXTURES = Path(__file__).parent / "fixtures" / "prometheus"


def test_vector_fixture_parses_into_the_metrics_frame() -> None:
    doc = json.loads((FIXTURES / "prometheus_sample_response.json").read_text())
    frame = parse_response(doc)
    assert {c: str(frame[c].dtype) for c in frame} == METRIC_COLUMNS
    result = doc["data"]["result"]
    assert len(frame) == len(result) == 7
    assert frame["t"].tolist() == [float(r["value"][0]) for r in result]
    assert frame["value"].tolist() == [float(r["value"][1]) for r in result]
    assert [json.loads(s) for s in frame["labels"]] == [r["metric"] for r in result]
    assert (frame["metric"] == "").all()  # the answer carries no __name__


def test_empty_result_and_errors() -> None:
    doc = json.loads((FIXTURES / "prometheus_no_data_response.json").read_text())
    frame = parse_response(doc)
    assert frame.empty and list(frame.columns) == list(METRIC_COLUMNS)
    with pytest.raises(BackendError, match="bad_data"):
        parse_response({"status": "error", "errorType": "bad_data", "error": "bad_data: x"})


def test_matrix_and_special_values() -> None:
    data = {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"__name__": "up", "job": "mesh"},
                "values": [[1.5, "1"], [2.5, "NaN"], [3.5, "+Inf"]],
            }
        ],
    }
    frame = parse_response(data)
    assert frame["metric"].tolist() == ["up"] * 3
    assert json.loads(frame["labels"].iloc[0]) == {"job": "mesh"}
    assert math.isnan(frame["value"].iloc[1]) and frame["value"].iloc[2] == math.inf


TESTHISTOGRAM = {  # at 50m in Prometheus's histograms.test: le -> count
    "positive": {0.1: 50, 0.2: 70, 1.0: 110, math.inf: 120},
    "negative": {-0.2: 10, -0.1: 20, 0.3: 20, math.inf: 30},
}


@pytest.mark.parametrize(
    ("q", "positive", "negative"),
    [
        (0.0, 0.0, -0.2),  # rank 0 -> lowest bucket; upper bound <= 0 is returned as is
        (0.2, 0.048, -0.2),  # 0 + 0.1 * 24/50 ; negative: rank 6 in the lowest bucket
        (0.5, 0.15, -0.15),  # 0.1 + 0.1 * 10/20 ; -0.2 + 0.1 * 5/10
        (0.8, 0.72, 0.3),  # 0.2 + 0.8 * 26/40 ; rank 24 in +Inf -> previous bound 0.3
        (1.0, 1.0, 0.3),  # rank in +Inf bucket -> upper bound of the bucket below
    ],
)
def test_bucket_quantile_matches_prometheus_test_data(
    q: float, positive: float, negative: float
) -> None:
    for name, want in (("positive", positive), ("negative", negative)):
        buckets = TESTHISTOGRAM[name]
        got = promql.bucket_quantile(q, list(buckets), list(buckets.values()))
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), name


def test_bucket_quantile_special_cases() -> None:
    bounds, counts = [1.0, 2.0, math.inf], [5.0, 3.0, 10.0]
    # non-monotonic counts: the envelope (5, 5, 10) is used -> rank 5 ends bucket 1 -> 1.0
    assert promql.bucket_quantile(0.5, bounds, counts) == 1.0
    assert promql.bucket_quantile(-0.1, bounds, counts) == -math.inf
    assert promql.bucket_quantile(1.1, bounds, counts) == math.inf
    assert math.isnan(promql.bucket_quantile(math.nan, bounds, counts))
    assert math.isnan(promql.bucket_quantile(0.5, [1.0, 2.0], [1.0, 2.0]))  # no +Inf
    assert math.isnan(promql.bucket_quantile(0.5, [math.inf], [4.0]))  # one bucket
    assert math.isnan(promql.bucket_quantile(0.5, bounds, [0.0, 0.0, 0.0]))  # empty
    # unsorted input and duplicate bounds (added up, as Prometheus coalesces them)
    # (2: 2+2, +Inf: 8): rank 2 is half-way through [0, 2]
    assert promql.bucket_quantile(0.25, [math.inf, 2.0, 2.0], [8.0, 2.0, 2.0]) == 1.0


def _frame(rows: list[tuple[float, str, dict[str, str], float]]) -> pd.DataFrame:
    return from_columns(
        {
            "t": [r[0] for r in rows],
            "metric": [r[1] for r in rows],
            "labels": [labels_json(r[2]) for r in rows],
            "value": [r[3] for r in rows],
        },
        METRIC_COLUMNS,
    )


def test_histogram_quantile_groups_by_labels_without_le() -> None:
    rows = []
    for name, buckets in TESTHISTOGRAM.items():
        for le, count in buckets.items():
            le_text = "+Inf" if math.isinf(le) else repr(le)
            rows.append((3000.0, "testhistogram_bucket", {"start": name, "le": le_text}, count))
    rows.append((3000.0, "testhistogram_bucket", {"start": "positive"}, 999.0))  # no le: ignored
    out = promql.histogram_quantile(0.5, _frame(rows))
    got = {json.loads(k)["start"]: v for k, v in zip(out["labels"], out["value"], strict=True)}
    assert got == pytest.approx({"positive": 0.15, "negative": -0.15})


def _plain_increase(
    times: list[float], values: list[float], start: float, end: float, counter_reset_fix: bool
) -> float:
    """Prometheus 2.x rule, written out for one series with samples inside [start, end]."""
    corrected = values[-1] - values[0]
    if counter_reset_fix:
        corrected += sum(a for a, b in zip(values, values[1:], strict=False) if b < a)
    sampled = times[-1] - times[0]
    average = sampled / (len(times) - 1)
    to_start, to_end = times[0] - start, end - times[-1]
    if corrected > 0 and values[0] >= 0:
        to_start = min(to_start, sampled * values[0] / corrected)
    extra = (to_start if to_start < 1.1 * average else average / 2) + (
        to_end if to_end < 1.1 * average else average / 2
    )
    return corrected * (sampled + extra) / sampled


def test_increase_on_prometheus_functions_test_series() -> None:
    # functions.test: http_requests{path="/foo"} 0+10x10, {path="/bar"} 0+10x5 0+10x5 (5m step)
    foo = [(i * 300.0, 10.0 * i) for i in range(11)]
    bar = [(i * 300.0, 10.0 * (i % 6)) for i in range(12)]
    rows = [(t, "http_requests", {"path": "/foo"}, v) for t, v in foo]
    rows += [(t, "http_requests", {"path": "/bar"}, v) for t, v in bar]
    frame = _frame(rows)
    out = promql.increase(frame, at_s=3000, window_s=3000, semantics="v2")
    got = {json.loads(k)["path"]: v for k, v in zip(out["labels"], out["value"], strict=True)}
    assert got == pytest.approx({"/foo": 100.0, "/bar": 90.0})  # the documented answers
    # Prometheus 3 leaves out the sample on the left edge (t=0) and extrapolates instead.
    out3 = promql.increase(frame, at_s=3000, window_s=3000, semantics="v3")
    got3 = {json.loads(k)["path"]: v for k, v in zip(out3["labels"], out3["value"], strict=True)}
    assert got3["/foo"] == pytest.approx(100.0)  # 90 over 45m, extrapolated 5m to the edge
    assert got3["/bar"] == pytest.approx(80.0 * 50 / 45)
    rate = promql.rate(frame, at_s=3000, window_s=3000, semantics="v2")
    assert rate["value"].tolist() == pytest.approx([v / 3000 for v in out["value"]])


def test_increase_equals_the_plain_rule_on_seeded_irregular_scrapes() -> None:
    rng = np.random.default_rng(5)
    for trial in range(50):
        n = int(rng.integers(2, 30))
        times = np.cumsum(rng.uniform(5, 20, n)) + 1000.0
        times = np.round(times, 3)
        values = np.cumsum(rng.integers(0, 50, n)).astype(float) + float(rng.integers(0, 100))
        if trial % 3 == 0 and n > 3:  # a restart half-way
            values[n // 2 :] -= values[n // 2] - rng.integers(0, 5)
        # Prometheus works in whole milliseconds: keep the edges on the ms grid
        end = round(float(times[-1] + rng.uniform(0, 30)), 3)
        start = round(float(times[0] - rng.uniform(0.5, 40)), 3)
        frame = _frame(
            [(float(t), "c", {"s": "x"}, float(v)) for t, v in zip(times, values, strict=True)]
        )
        got = promql.increase(frame, at_s=end, window_s=end - start, semantics="v2")
        want = _plain_increase(list(times), list(values), start, end, counter_reset_fix=True)
        assert got["value"].iloc[0] == pytest.approx(want, rel=1e-12), trial


def test_single_sample_gives_no_result_and_sum_by() -> None:
    frame = _frame(
        [
            (10.0, "m", {"le": "1", "v": "a"}, 1.0),
            (10.0, "m", {"le": "1", "v": "b"}, 2.0),
            (10.0, "m", {"le": "+Inf", "v": "a"}, 4.0),
        ]
    )
    assert promql.increase(frame, at_s=10, window_s=5).empty
    summed = promql.sum_by(frame, ["le"])
    got = dict(zip(summed["labels"], summed["value"], strict=True))
    assert got == {labels_json({"le": "1"}): 3.0, labels_json({"le": "+Inf"}): 4.0}
    by_v = promql.label_table(frame, ["v", "missing"])
    assert by_v["v"].tolist() == ["a", "b", "a"] and by_v["missing"].isna().all()
