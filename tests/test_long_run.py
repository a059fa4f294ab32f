"""benchmarks.long_run: a run folder written window by window, checked part by part against
plain counts of what it holds, and read by the report without a note of trouble."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from analysis.report import build_report
from analysis.runfolder import load_run, recording_notes
from benchmarks.long_run import write_long_run
from meshcore.runfolder import METRICS_DIR, SPANS_DIR, RunFolder

N = 30_000
CHUNK = 7_000  # 5 windows, the last one short
RPS = 200.0  # 150 s: each step lasts 7 scrape intervals
DURATION_BUCKET = "istio_request_duration_milliseconds_bucket"
# What a note says when a recorder stopped, could not write, or telemetry is missing or broken.
TROUBLE = ("stopped before", "could not write", "no spans", "no metrics", "unreadable", "lack")


def trouble(notes: list[str]) -> list[str]:
    return [n for n in notes if any(word in n for word in TROUBLE)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("long") / "run"
    return path, write_long_run(path, N, chunk_requests=CHUNK, rps=RPS, span_part_rows=6_000)


def parts(path: Path, sub: str) -> list[pa.Table]:
    return [pq.read_table(p) for p in sorted((path / sub).glob("[!_]*.parquet"))]


def test_every_part_and_state_counts_what_it_holds(folder: tuple[Path, dict[str, Any]]) -> None:
    path, written = folder
    requests, spans, metrics = (parts(path, d) for d in ("requests", "spans", "metrics"))
    assert sum(t.num_rows for t in requests) == N == written["requests"]
    assert len(spans) == written["parts"]["spans"] > 5  # parts of 6,000 spans
    assert len(requests) == written["parts"]["requests"] == 4 * 5  # 4 workers, 5 windows
    folder_ = RunFolder(path)
    for sub, tables in ((SPANS_DIR, spans), (METRICS_DIR, metrics)):
        (state,) = folder_.recordings(sub)
        assert state["done"] is True and state["lost"] == 0
        assert state["rows"] == sum(t.num_rows for t in tables) and state["parts"] == len(tables)
    markers = folder_.done_markers()
    assert sorted(m["worker"] for m in markers) == ["w0", "w1", "w2", "w3"]
    by_worker = Counter(w for t in requests for w in t["worker"].to_pylist())
    assert {m["worker"]: m["rows"] for m in markers} == by_worker


def test_load_run_reads_every_request_and_five_spans_per_traced_one(
    folder: tuple[Path, dict[str, Any]],
) -> None:
    path, _ = folder
    run = load_run(path)
    assert trouble(run.notes) == []
    assert len(run.requests) == N
    assert run.requests["trace_id"].nunique() == N
    sampled = set(run.requests.loc[run.requests["sampled"].astype(bool), "trace_id"])
    per_trace = Counter(run.spans["trace_id"])
    assert set(per_trace) == sampled and set(per_trace.values()) == {5}
    assert len(run.spans) == 5 * len(sampled)


def test_spans_follow_in_time_and_a_trace_crosses_at_most_into_the_next_part(
    folder: tuple[Path, dict[str, Any]],
) -> None:
    path, _ = folder
    part_of: dict[str, set[int]] = {}
    roots = []
    for k, table in enumerate(parts(path, "spans")):
        for trace in table["trace_id"].to_pylist():
            part_of.setdefault(trace, set()).add(k)
        root = table.filter(pc.is_null(table["parent_id"]))  # the requests, in the order they came
        roots.append((pc.min(root["start_ns"]).as_py(), pc.max(root["start_ns"]).as_py()))
    assert len(roots) > 5  # several parts a window
    spread = {max(found) - min(found) for found in part_of.values()}
    assert spread == {0, 1}  # most traces in one part, some crossing into the next
    assert all(roots[k][1] <= roots[k + 1][0] for k in range(len(roots) - 1))


def test_requests_fall_in_the_plans_step_windows(folder: tuple[Path, dict[str, Any]]) -> None:
    path, _ = folder
    meta = json.loads((path / "run.json").read_text())
    starts = [meta["started_ns"]] + [e["requested_ns"] for e in meta["events"][1:]]
    edges = np.array([*starts, meta["ended_ns"] + 1])
    table = pa.concat_tables(parts(path, "requests"))
    start_ns, step = table["start_ns"].to_numpy(), table["step"].to_numpy()
    by_window = np.histogram(start_ns, bins=edges)[0]
    assert by_window.sum() == N
    assert by_window.tolist() == np.bincount(step, minlength=4).tolist()
    for k in range(4):  # the step of each request is the window its start falls in
        inside = (start_ns >= edges[k]) & (start_ns < edges[k + 1])
        assert set(step[inside].tolist()) == {k}
    assert np.all(np.abs(by_window - N / 4) < 0.05 * N / 4)  # steps are equally long


def test_last_samples_of_each_version_count_its_requests(
    folder: tuple[Path, dict[str, Any]],
) -> None:
    path, _ = folder
    requests = pa.concat_tables(parts(path, "requests"), promote_options="permissive")
    version = np.array([str(v) for v in requests["version"].to_pylist()])
    # the frontend's own time, its server span's: the client's less 0.4 ms, at least 0.1 ms
    server_ms = np.maximum(requests["latency_ms"].to_numpy() - 0.4, 0.1)
    samples = pa.concat_tables(parts(path, "metrics"), promote_options="permissive").to_pylist()
    last: dict[tuple[str, str], tuple[float, float]] = {}  # (version, le): (t, value)
    for s in samples:
        labels = json.loads(s["labels"])
        assert labels["reporter"] == "destination" and labels["destination_app"] == "frontend"
        key = (labels["destination_version"], labels.get("le", "count"))
        assert s["metric"] == ("istio_requests_total" if key[1] == "count" else DURATION_BUCKET)
        if s["t"] > last.get(key, (-1.0, 0.0))[0]:
            last[key] = (s["t"], s["value"])
    assert {v for v, _ in last} == set(version) == {"v1", "v2"}
    for v in ("v1", "v2"):
        mine = version == v
        assert last[(v, "count")][1] == last[(v, "+Inf")][1] == mine.sum()
        for le in ("10", "25", "50"):
            assert last[(v, le)][1] == (mine & (server_ms <= float(le))).sum()


def test_report_reads_it_without_trouble_and_the_split_holds(
    folder: tuple[Path, dict[str, Any]],
) -> None:
    path, _ = folder
    summary = build_report(path, progress=False).summary
    assert trouble(summary["notes"]) == []
    assert summary["run_health"]["ok"] is True
    split = summary["split"]
    assert [s["step"] for s in split] == [0, 1, 2, 3]
    tolerance = summary["tolerance_pp"] / 100
    for s in split:
        assert s["verdict"] == "pass", s
        for version, share in s["configured"].items():
            assert abs(s["observed"].get(version, 0.0) - share) <= tolerance
    counts = summary["consistency"]["counts"]
    assert sum(c["metrics"] for c in counts) == N
    for c in counts:  # off by the requests in flight at a boundary scrape, and by a version
        # born between scrapes, whose first requests the report counts from the scrape interval
        # before its first sample: a second of its traffic at most
        assert abs(c["metrics"] - c["client"]) <= 0.01 * c["client"] + RPS * 0.2, c
    versions = Counter(load_run(path, telemetry=False).requests["version"].astype(str))
    assert {v: m["n"] for v, m in summary["mesh_latency"].items()} == versions


def test_a_recorder_left_undone_would_be_trouble() -> None:
    state = {"writer": "scraper", "pid": 1, "rows": 3, "parts": 1, "lost": 0, "done": False}
    assert trouble(recording_notes(METRICS_DIR, [state]))
    assert trouble(recording_notes(SPANS_DIR, [{**state, "done": True, "lost": 2}]))
