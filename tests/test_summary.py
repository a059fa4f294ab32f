"""build_summary: strict JSON, the keys DESIGN.md fixes, and figures equal to their modules'."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.summary import SCHEMA_VERSION, build_summary, json_safe
from analysis.synthetic import make_run

KEYS = [
    "schema_version",
    "run_id",
    "split",
    "propagation",
    "latency",
    "latency_co",
    "latency_by_step",
    "latency_by_endpoint",
    "judge",
    "hops",
    "graph",
    "consistency",
    "sticky",
    "notes",
]


@pytest.fixture(scope="module")
def run():
    return make_run(
        n_requests=20_000,
        seed=61,
        slowdown={"v2": 1.3},
        unknown_rate=0.002,
        open_model=True,
        n_users=200,
    )


def test_strict_json_with_stable_keys(run) -> None:
    summary = build_summary(run.run, run.requests, run.spans, user_col="user")
    assert list(summary) == KEYS
    assert summary["schema_version"] == SCHEMA_VERSION
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text) == summary
    again = build_summary(run.run, run.requests, run.spans, user_col="user")
    assert json.dumps(again, allow_nan=False) == text  # seeded: the same run gives the same file


def test_figures_match_plain_computations(run) -> None:
    summary = build_summary(run.run, run.requests, run.spans)
    assert [s["step"] for s in summary["split"]] == [0, 1, 2, 3]
    assert all(s["passed"] for s in summary["split"])
    step1 = summary["split"][1]
    assert step1["configured"] == {"v1": 0.9, "v2": 0.1}
    assert set(step1["ci95"]) >= {"v1", "v2"}
    assert [p["step"] for p in summary["propagation"]] == [0, 1, 2, 3]
    assert summary["propagation"][0]["delay_ms"] is None  # set before any traffic
    # the switch took effect 500 ms after acceptance; 50 -> 100 % pins it within ~2 requests
    assert summary["propagation"][3]["delay_ms"] == pytest.approx(500.0, abs=15.0)
    versions = run.requests["version"].astype(object).fillna("unknown").to_numpy()
    for v in ("v1", "v2"):
        lat = run.requests["latency_ms"].to_numpy()[versions == v]
        assert summary["latency"][v]["n"] == len(lat)
        assert summary["latency"][v]["p99_ms"] == np.percentile(lat, 99)
        co = run.requests["co_latency_ms"].to_numpy()[versions == v]
        assert summary["latency_co"][v]["p50_ms"] == np.percentile(co, 50)
    assert summary["judge"]["verdict"] == "fail"
    assert summary["hops"]["table"][0]["service"] == "frontend"
    counts = summary["consistency"]["counts"]
    assert sum(c["client"] for c in counts) == len(run.requests)
    assert summary["consistency"]["trace_coverage"] == pytest.approx(1 - 0.002, abs=0.002)
    assert sum(e["requests"] for e in summary["graph"]) == len(run.spans)


def test_missing_parts_become_notes(run) -> None:
    requests = run.requests.drop(columns=["co_latency_ms", "intended_ns"])
    summary = build_summary(run.run, requests, None)
    assert summary["hops"] is None and summary["graph"] is None and summary["latency_co"] is None
    assert any("no spans" in n for n in summary["notes"])
    assert any("no Prometheus" in n for n in summary["notes"])
    metrics = pd.DataFrame({"step": [1, 1], "version": ["v1", "v2"], "requests": [10.0, 2.0]})
    with_metrics = build_summary(run.run, requests, None, metrics)
    row = [
        c for c in with_metrics["consistency"]["counts"] if (c["step"], c["version"]) == (1, "v2")
    ]
    assert row[0]["metrics"] == 2.0
    assert not any("no Prometheus" in n for n in with_metrics["notes"])


def test_json_safe() -> None:
    value = {"a": np.float64("nan"), "b": [np.int64(3), np.bool_(True)], 4: pd.NA, "c": (1.5,)}
    assert json_safe(value) == {"a": None, "b": [3, True], "4": None, "c": [1.5]}
    assert json_safe(float("inf")) is None
