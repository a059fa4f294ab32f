"""build_summary: strict JSON, the keys docs/design.md fixes, figures equal to their modules'."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.summary import build_summary, json_safe
from analysis.synthetic import make_run
from meshcore.runfolder import SCHEMA_VERSION
from tests import split_by_hand as by_hand

KEYS = [
    "schema_version",
    "run_id",
    "run_health",
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


def plain_verdict(step: dict, tolerance_pp: float) -> str:
    """docs/design.md's rule by hand, from the reported counts."""
    counts = {v: c for v, c in step["counts"].items() if v != "unknown"}
    return by_hand.verdict(step["configured"], counts, step["n"], tolerance_pp, step["n_unknown"])


@pytest.fixture(scope="module")
def run():
    return make_run(
        n_requests=8_000,
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
    for step in summary["split"]:  # the verdict, recomputed by hand from the reported counts
        assert step["verdict"] == plain_verdict(step, 2.0)
        assert step["passed"] == (step["verdict"] == "pass")
        assert (step["needs_requests"] is not None) == (step["verdict"] == "inconclusive")
    # true splits of ~1,900 requests: the 100/0 steps pass, and the 90/10 one just (v1's
    # interval 88.03-90.79 % inside 90 ± 2 pp, once counted from its change point's support
    # interval); the 50/50 one cannot show 2 pp yet
    assert [s["verdict"] for s in summary["split"]] == ["pass", "pass", "inconclusive", "pass"]
    assert summary["split"][2]["needs_requests"] == 9604
    step1 = summary["split"][1]
    assert step1["configured"] == {"v1": 0.9, "v2": 0.1}
    assert set(step1["ci95"]) >= {"v1", "v2"}
    assert [p["step"] for p in summary["propagation"]] == [0, 1, 2, 3]
    assert {p["method"] for p in summary["propagation"]} == {"estimate"}  # not stamped
    assert any(n.startswith("not stamped (an older run)") for n in summary["notes"])
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
    # the synthetic plan moves traffic from v1 to v2: its weights name the pair
    judged = summary["judge"]
    assert (judged["baseline"], judged["canary"], judged["roles_source"]) == (
        "v1",
        "v2",
        "plan weights",
    )
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


def test_round_trip_through_a_run_folder(tmp_path) -> None:
    """Frames written as parquet and read back by analysis.runfolder give the same summary."""
    from analysis.consistency import metrics_counts_from_istio, step_windows
    from analysis.runfolder import load_run

    run = make_run(n_requests=6000, seed=62, slowdown={"v2": 1.2}, error_rate={"v2": 0.02})
    (tmp_path / "run.json").write_text(json.dumps(run.run))
    run.requests.to_parquet(tmp_path / "requests.parquet")
    run.spans.to_parquet(tmp_path / "spans.parquet")
    labels = {"reporter": "destination", "destination_app": "frontend"}
    rows = []
    for v in ("v1", "v2"):  # a counter per version scraped every 2 s, as Prometheus would
        starts = np.sort(run.requests.loc[run.requests["version"] == v, "start_ns"].to_numpy())
        for t_ns in range(run.run["started_ns"], run.run["ended_ns"] + 2_000_000_000, 2 * 10**9):
            value = float(np.searchsorted(starts, t_ns))
            labels_v = json.dumps({**labels, "destination_version": v})
            rows.append(
                {
                    "t": t_ns / 1e9,
                    "metric": "istio_requests_total",
                    "labels": labels_v,
                    "value": value,
                }
            )
    pd.DataFrame(rows).to_parquet(tmp_path / "metrics.parquet")

    loaded = load_run(tmp_path)
    windows = step_windows(loaded.meta, loaded.requests)
    started = loaded.meta["started_ns"]
    counts = metrics_counts_from_istio(loaded.metrics, windows, started_ns=started)
    summary = build_summary(loaded.meta, loaded.requests, loaded.spans, counts)
    direct = build_summary(run.run, run.requests, run.spans, counts)
    assert json.dumps(summary) == json.dumps(direct)
    counted = [r for r in summary["consistency"]["counts"] if r["version"] in ("v1", "v2")]
    assert summary["consistency"]["metrics_counted"] == (
        "counted between the scrapes nearest the step's boundaries"
    )
    for row in counted:
        # whole requests between the scrapes nearest the step's edges: exactly the client's
        # requests between those scrapes (each sample counts the requests started before it)
        assert isinstance(row["metrics"], int)
        assert row["metrics"] == row["client_between_scrapes"]
        if abs(row["metrics"] - row["client"]) > max(0.01 * row["client"], 1):
            assert "likely scrape boundaries" in row["flags"][0]
        # a root span starts 0.2 ms after its request: one may cross a step edge
        assert abs((row["traces"] or 0) - row["client"]) <= 2
    for v in ("v1", "v2"):  # over the whole run the edges cancel
        mine = [r for r in counted if r["version"] == v]
        assert sum(r["metrics"] for r in mine) == sum(r["client"] for r in mine)
        # ... but for a root span starting after run.json's ended_ns
        assert 0 <= sum(r["client"] for r in mine) - sum(r["traces"] or 0 for r in mine) <= 1
    edge = [e for e in summary["graph"] if e["destination"] == "frontend"]
    assert {e["destination_version"]: e["errors"] for e in edge}["v1"] == 0
    assert {e["destination_version"]: e["errors"] for e in edge}["v2"] > 0


def test_a_stamped_run_measures_propagation_per_replica() -> None:
    synth = make_run(n_requests=6000, seed=63, rps=40.0, propagation_ms=7.0, stamped=True,
                     replicas=2, replica_delay_ms=[0.0, 900.0], with_spans=False)  # fmt: skip
    summary = build_summary(synth.run, synth.requests, None)
    assert "split and propagation from the stamps every response carried" in summary["notes"][2]
    json.dumps(summary, allow_nan=False)
    for p in summary["propagation"][1:]:
        assert p["method"] == "stamped" and p["detected"]
        assert p["delay_range_ms"][0] <= 7.0 <= p["delay_ms"]
        assert p["resolution_ms"] == pytest.approx(p["delay_ms"] - p["delay_range_ms"][0])
        pods = {r["pod"] for r in p["by_replica"]}
        assert pods == set(synth.run["replica_pods"].values())
        slow = max(p["by_replica"], key=lambda r: r["delay_ms"])
        assert slow["delay_ms"] >= 907.0 and slow["stale_ms"] > 500.0
        assert {"replica", "pod", "first_new_ns", "delay_ms", "last_old_ns", "stale_ms",
                "resolution_ms", "n"} == set(slow)  # fmt: skip
    for step in summary["split"]:
        assert step["method"] == "stamped" and step["verdict"] != "fail"


def test_versions_missing_from_headers_come_from_traces() -> None:
    synth = make_run(n_requests=5000, seed=64, no_header_rate=0.05, trace_sample=0.5)
    bare = int(synth.requests["version"].isna().sum())
    traced = set(synth.spans["trace_id"])
    fillable = int(
        (synth.requests["version"].isna() & synth.requests["trace_id"].isin(traced)).sum()
    )
    assert 0 < fillable < bare
    summary = build_summary(synth.run, synth.requests, synth.spans)
    assert (
        f"{bare:,} requests carried no version header: {fillable:,} took their trace's "
        f"(the frontend's SERVER span, istio.canonical_revision), {bare - fillable:,} stayed "
        "'unknown'"
    ) in summary["notes"]
    assert sum(s["n_unknown"] for s in summary["split"]) <= bare - fillable
    assert summary["latency"]["unknown"]["n"] == bare - fillable
    # every filled version is the one that really served the request (its span's)
    from analysis.versions import fill_versions

    roots = synth.spans[(synth.spans["service"] == "frontend") & synth.spans["parent_id"].isna()]
    by_trace = dict(zip(roots["trace_id"], roots["version"].astype(str), strict=True))
    served = synth.requests.assign(v=synth.requests["trace_id"].map(by_trace))

    filled = fill_versions(synth.requests, synth.spans).requests
    was = synth.requests["version"].isna() & synth.requests["trace_id"].isin(traced)
    assert (filled.loc[was, "version"].astype(str) == served.loc[was, "v"]).all()
