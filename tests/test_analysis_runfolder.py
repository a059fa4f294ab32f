"""load_run on synthetic run folders written here with pyarrow (seeded)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.frames import (
    METRIC_COLUMNS,
    REQUEST_COLUMNS,
    REQUEST_OPTIONAL_COLUMNS,
    SPAN_COLUMNS,
    from_arrow,
)
from analysis.runfolder import load_run, save_frame
from meshcore.errors import RunFolderError
from meshcore.runfolder import METRICS_DIR, SCHEMA_VERSION, SPANS_DIR, RecorderState, RunFolder
from meshcore.schemas import METRIC_SCHEMA, OPEN_MODEL_SCHEMA, REQUEST_SCHEMA, SPAN_SCHEMA

T0_NS = 1_780_000_000 * 10**9


def _hex_ids(rng: np.random.Generator, n: int, nbytes: int) -> pa.Array:
    text = rng.bytes(n * nbytes).hex().encode()
    fixed = np.frombuffer(text, dtype=f"S{2 * nbytes}")
    return pa.array(fixed, type=pa.binary()).cast(pa.string())


def _requests(rng: np.random.Generator, n: int, worker: str) -> pa.Table:
    versions = np.array(["v1", "v2", None], dtype=object)[rng.integers(0, 3, n)]
    status = rng.choice([200, 200, 200, 503, 0], n)
    return pa.table(
        {
            "start_ns": T0_NS + rng.integers(0, 60 * 10**9, n),
            "latency_ms": rng.exponential(20.0, n),
            "name": rng.choice(["/", "/product/[id]", "/cart"], n),
            "method": np.full(n, "GET"),
            "status": status.astype(np.int32),  # a writer may use int32: still int64 on load
            "ok": status == 200,
            "error": np.where(status == 0, "ConnectionResetError", None),
            "version": versions,
            "trace_id": _hex_ids(rng, n, 16),
            "sampled": np.where(status == 0, None, rng.random(n) < 0.5),
            "step": rng.integers(0, 4, n),
            "worker": np.full(n, worker),
            "user_id": np.where(status == 0, None, rng.integers(1, 20, n)),
            "cohort": np.where(rng.random(n) < 0.25, "beta", None),
            "response_length": np.where(status == 0, None, rng.integers(0, 5000, n)),
        }
    )


def _run(tmp_path: Path, meta: dict[str, object] | None = None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    base = {"schema_version": SCHEMA_VERSION, "run_id": "r1", "started_ns": T0_NS}
    (run / "run.json").write_text(json.dumps(base if meta is None else meta))
    return run


def test_parts_load_with_declared_dtypes_and_a_corrupt_part_is_skipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    run = _run(tmp_path)
    (run / "requests").mkdir()
    parts = [_requests(rng, 400, "w1"), _requests(rng, 250, "w2")]
    pq.write_table(parts[0], run / "requests" / "w1.parquet")
    pq.write_table(parts[1], run / "requests" / "w2.parquet")
    whole = (run / "requests" / "w1.parquet").read_bytes()
    (run / "requests" / "w3.parquet").write_bytes(whole[: len(whole) // 2])  # Ctrl-C mid-write
    loaded = load_run(run)
    assert loaded.meta["run_id"] == "r1"
    req = loaded.requests
    assert list(req.columns) == list(REQUEST_COLUMNS)
    assert {c: str(req[c].dtype) for c in req} == REQUEST_COLUMNS
    assert len(req) == 650
    expected = np.sort(np.concatenate([p.column("start_ns").to_numpy() for p in parts]))
    assert np.array_equal(req["start_ns"].to_numpy(), expected)  # sorted across parts
    want_latency = sum(float(np.sum(p.column("latency_ms").to_numpy())) for p in parts)
    assert req["latency_ms"].sum() == pytest.approx(want_latency)
    assert int((req["status"] == 0).sum()) == sum(
        int(np.sum(p.column("status").to_numpy() == 0)) for p in parts
    )
    assert req["version"].isna().sum() == sum(p.column("version").null_count for p in parts)
    assert set(req["worker"]) == {"w1", "w2"}
    assert req["sampled"].isna().sum() == sum(p.column("sampled").null_count for p in parts)
    assert req["user_id"].isna().sum() == sum(p.column("user_id").null_count for p in parts)
    assert set(req["cohort"].dropna()) == {"beta"}
    # response_length is never null: a missing one reads as 0 bytes
    want_bytes = sum(int(np.nansum(p.column("response_length").to_numpy(False))) for p in parts)
    assert int(req["response_length"].sum()) == want_bytes
    assert any("w3.parquet" in n and "skipped" in n for n in loaded.notes)
    # telemetry absent: empty frames with the right columns, and a note each
    assert list(loaded.spans.columns) == list(SPAN_COLUMNS) and loaded.spans.empty
    assert {c: str(loaded.spans[c].dtype) for c in loaded.spans} == SPAN_COLUMNS
    assert list(loaded.metrics.columns) == list(METRIC_COLUMNS) and loaded.metrics.empty
    assert any("spans" in n for n in loaded.notes) and any("metrics" in n for n in loaded.notes)


def test_open_model_columns_kept_and_missing_columns_noted(tmp_path: Path) -> None:
    run = _run(tmp_path)
    pq.write_table(
        pa.table(
            {
                "start_ns": [T0_NS + 2, T0_NS + 1],
                "latency_ms": [5.0, 7.0],
                "intended_ns": [T0_NS, None],
                "co_latency_ms": [6.0, 7.5],
                "extra": ["a", "b"],
            }
        ),
        run / "requests.parquet",
    )
    loaded = load_run(run)
    req = loaded.requests
    assert list(req.columns)[: len(REQUEST_COLUMNS)] == list(REQUEST_COLUMNS)
    assert str(req["intended_ns"].dtype) == "Int64" and req["intended_ns"].isna().tolist() == [
        True,
        False,
    ]
    assert req["co_latency_ms"].tolist() == [7.5, 6.0] and req["extra"].tolist() == ["b", "a"]
    assert req["status"].tolist() == [0, 0] and req["step"].tolist() == [-1, -1]
    assert any("lack column(s)" in n and "trace_id" in n for n in loaded.notes)


def test_spans_and_metrics_round_trip_and_per_label_columns(tmp_path: Path) -> None:
    run = _run(tmp_path)
    spans = pd.DataFrame(
        {
            "trace_id": ["a" * 32, "a" * 32],
            "span_id": ["1" * 16, "2" * 16],
            "parent_id": [None, "1" * 16],
            "service": ["gw", "reviews"],
            "operation": ["GET /", "GET /r"],
            "kind": ["server", "server"],
            "start_ns": [T0_NS, T0_NS + 5],
            "duration_ms": [3.0, 1.25],
            "version": [None, "v2"],
            "status_code": pd.array([200, None], dtype="Int64"),
            "attributes": ["{}", '{"upstream_cluster":"outbound|9080|v2|reviews"}'],
        }
    )
    save_frame(spans, run / "spans.parquet", SPAN_SCHEMA)
    assert pq.read_schema(run / "spans.parquet").equals(SPAN_SCHEMA)  # nullability too
    pq.write_table(
        pa.table(
            {
                "t": [1.0, 2.0, 2.0],
                "metric": ["istio_requests_total"] * 3,
                "destination_version": ["v1", "v1", "v2"],
                "response_code": ["200", "200", None],
                "value": [1.0, 4.0, 2.0],
            }
        ),
        run / "metrics.parquet",
    )
    loaded = load_run(run)
    got = loaded.spans
    assert {c: str(got[c].dtype) for c in got} == SPAN_COLUMNS
    assert got["parent_id"].isna().tolist() == [True, False]
    assert got["status_code"].isna().tolist() == [False, True]
    assert got["version"].astype(object).where(got["version"].notna(), None).tolist() == [
        None,
        "v2",
    ]
    metrics = loaded.metrics
    assert {c: str(metrics[c].dtype) for c in metrics} == METRIC_COLUMNS
    assert [json.loads(s) for s in metrics["labels"]] == [
        {"destination_version": "v1", "response_code": "200"},
        {"destination_version": "v1", "response_code": "200"},
        {"destination_version": "v2"},
    ]


def _span_table(span_ids: list[str], service: str) -> pa.Table:
    n = len(span_ids)
    return pa.table(
        {
            "trace_id": ["a" * 32] * n,
            "span_id": span_ids,
            "parent_id": [None] * n,
            "service": pa.array([service] * n).dictionary_encode(),
            "operation": pa.array(["GET /"] * n).dictionary_encode(),
            "kind": pa.array(["server"] * n).dictionary_encode(),
            "start_ns": [T0_NS + i for i in range(n)],
            "duration_ms": [1.0] * n,
            "version": pa.array(["v1"] * n).dictionary_encode(),
            "status_code": [200] * n,
            "attributes": ["{}"] * n,
        },
        schema=SPAN_SCHEMA,
    )


def test_recorded_parts_read_with_the_single_files_and_recorders_noted(tmp_path: Path) -> None:
    run = _run(tmp_path)
    folder = RunFolder(run)
    # Spans: fetched once (spans.parquet) and recorded in two parts, one span in both.
    pq.write_table(_span_table(["1" * 16, "2" * 16], "gw"), run / "spans.parquet")
    for seq, ids in enumerate((["2" * 16, "3" * 16], ["4" * 16])):
        folder.write_telemetry_part(SPANS_DIR, _span_table(ids, f"svc{seq}"), "tracestore", 5, seq)
    # Metrics: the per-label spelling of a fetch beside recorded parts of METRIC_SCHEMA.
    pq.write_table(
        pa.table({"t": [1.0], "metric": ["m"], "code": ["200"], "value": [1.0]}),
        run / "metrics.parquet",
    )
    for seq in range(2):
        part = pa.table(
            {
                "t": [2.0 + seq],
                "metric": pa.array(["m"]).dictionary_encode(),
                "labels": pa.array([f'{{"code":"{500 + seq}"}}']).dictionary_encode(),
                "value": [float(seq)],
            },
            schema=METRIC_SCHEMA,
        )
        folder.write_telemetry_part(METRICS_DIR, part, "scraper", 6, seq)
    (run / METRICS_DIR / "scraper-6-000009.parquet").write_bytes(b"not parquet")
    folder.write_recording(SPANS_DIR, RecorderState("tracestore", 5, rows=3, parts=2))
    folder.write_recording(
        METRICS_DIR, RecorderState("scraper", 6, rows=2, parts=2, lost=7, done=True)
    )
    loaded = load_run(run)
    assert sorted(loaded.spans["span_id"]) == [c * 16 for c in "1234"]  # span 2 once
    assert {c: str(loaded.spans[c].dtype) for c in loaded.spans} == SPAN_COLUMNS
    assert sorted(loaded.spans["service"].astype(str)) == ["gw", "gw", "svc0", "svc1"]
    assert loaded.metrics["t"].tolist() == [1.0, 2.0, 3.0]
    assert loaded.metrics["labels"].astype(str).tolist() == [
        '{"code":"200"}',
        '{"code":"500"}',
        '{"code":"501"}',
    ]
    assert {c: str(loaded.metrics[c].dtype) for c in loaded.metrics} == METRIC_COLUMNS
    notes = " | ".join(loaded.notes)
    assert "metrics/scraper-6-000009.parquet: unreadable, metrics left out" in notes
    assert "the trace store stopped before the run ended: 3 spans recorded until then" in notes
    assert "the scraper could not write 7 samples into metrics/" in notes
    assert "scraper stopped" not in notes
    assert loaded.recorded(SPANS_DIR) and loaded.recorded(METRICS_DIR)
    light = load_run(run, telemetry=False)
    assert light.spans.empty and light.metrics.empty and light.recorded(SPANS_DIR)
    assert not any("stopped" in n for n in light.notes)


def test_columns_and_dtypes_follow_meshcore_schemas() -> None:
    assert list(REQUEST_COLUMNS) == REQUEST_SCHEMA.names
    assert [*REQUEST_COLUMNS, *REQUEST_OPTIONAL_COLUMNS] == OPEN_MODEL_SCHEMA.names
    assert list(SPAN_COLUMNS) == SPAN_SCHEMA.names
    assert list(METRIC_COLUMNS) == METRIC_SCHEMA.names
    want = {
        "start_ns": "int64",
        "latency_ms": "float64",
        "name": "category",
        "status": "int64",
        "ok": "bool",
        "error": "str",
        "sampled": "boolean",
        "user_id": "Int64",
        "cohort": "category",
        "response_length": "int64",
    }
    assert {c: REQUEST_COLUMNS[c] for c in want} == want
    assert REQUEST_OPTIONAL_COLUMNS == {"intended_ns": "Int64", "co_latency_ms": "float64"}
    assert SPAN_COLUMNS["status_code"] == "Int64" and SPAN_COLUMNS["kind"] == "category"


def test_metrics_saved_with_the_meshcore_schema(tmp_path: Path) -> None:
    run = _run(tmp_path)
    metrics = pd.DataFrame(
        {
            "t": [1.0, 2.0],
            "metric": pd.Categorical(["istio_requests_total"] * 2),
            "labels": ['{"a":"1"}', '{"a":"2"}'],
            "value": [3.0, 4.5],
        }
    )
    save_frame(metrics, run / "metrics.parquet", METRIC_SCHEMA)
    assert pq.read_schema(run / "metrics.parquet").equals(METRIC_SCHEMA)
    assert not list(run.glob(".*"))  # no temporary file left beside it
    loaded = load_run(run).metrics
    assert loaded["value"].tolist() == [3.0, 4.5]
    assert loaded["labels"].astype(str).tolist() == ['{"a":"1"}', '{"a":"2"}']


def test_missing_or_newer_run_json_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError) as err:
        load_run(tmp_path)
    assert "run.json" in str(err.value) and "\n" not in str(err.value)
    assert "`locust -f" in str(err.value) and "`meshload run`" not in str(err.value)
    run = _run(tmp_path, {"schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(RunFolderError, match="upgrade meshload") as err:
        load_run(run)
    assert "\n" not in str(err.value)
    (run / "run.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="unreadable"):
        load_run(run)
    with pytest.raises(RunFolderError, match="no such run folder"):
        load_run(tmp_path / "nope")


@pytest.mark.slow
def test_a_million_requests_and_five_million_spans_load_in_seconds(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    run = _run(tmp_path)
    n_req, n_span = 1_000_000, 5_000_000
    pq.write_table(_requests(rng, n_req, "w1"), run / "requests.parquet")
    trace = pa.array(np.repeat(_hex_ids(rng, n_span // 5, 16).to_numpy(zero_copy_only=False), 5))
    spans = pa.table(
        {
            "trace_id": trace,
            "span_id": _hex_ids(rng, n_span, 8),
            "parent_id": pa.nulls(n_span, pa.string()),
            "service": pa.array(
                np.array(["gw", "fe", "cart", "cat", "rec"])[np.arange(n_span) % 5]
            ),
            "operation": pa.array(np.full(n_span, "GET")),
            "kind": pa.array(np.full(n_span, "server")),
            "start_ns": T0_NS + np.arange(n_span),
            "duration_ms": rng.exponential(3.0, n_span),
            "version": pa.nulls(n_span, pa.string()),
            "status_code": np.full(n_span, 200),
            "attributes": pa.array(np.full(n_span, "{}")),
        }
    )
    pq.write_table(spans, run / "spans.parquet")
    started = time.perf_counter()
    loaded = load_run(run)
    elapsed_s = time.perf_counter() - started
    print(f"load_run: {elapsed_s:.2f} s")
    assert len(loaded.requests) == n_req and len(loaded.spans) == n_span
    assert str(loaded.spans["service"].dtype) == "category"
    assert elapsed_s < 15, f"load took {elapsed_s:.1f} s"


def test_dictionary_columns_convert_as_their_strings_would() -> None:
    """Categoricals are built from the parts' dictionaries (one per row group, unlike each
    other), equal to dictionary-encoding the strings: same values, categories in order of
    first appearance; integers and booleans keep their nulls."""
    first = pa.DictionaryArray.from_arrays(pa.array([1, 0, None, 1], pa.int32()), ["v1", "v2"])
    second = pa.DictionaryArray.from_arrays(pa.array([2, 0, 1], pa.int32()), ["v2", "v3", "v1"])
    table = pa.table(
        {
            "version": pa.chunked_array([first, second]),
            "sampled": pa.chunked_array([[True, None, False, True], [None, None, True]]),
            "user_id": pa.chunked_array([[1, None, 3, 4], [5, None, 7]]),
        }
    )
    frame, _ = from_arrow(table, REQUEST_COLUMNS)
    strings = table.column("version").cast(pa.string())
    assert frame["version"].astype(object).where(frame["version"].notna(), None).tolist() == (
        strings.to_pylist()
    )
    assert list(frame["version"].cat.categories) == ["v2", "v1", "v3"]
    assert frame["version"].cat.categories.dtype == "str"
    assert frame["sampled"].dtype == "boolean" and frame["user_id"].dtype == "Int64"
    assert frame["sampled"].isna().tolist() == [False, True, False, False, True, True, False]
    assert frame["user_id"].tolist()[:3] == [1, pd.NA, 3]
    nulls = pa.table({"version": pa.array([None, None], pa.string()).dictionary_encode()})
    assert from_arrow(nulls, REQUEST_COLUMNS)[0]["version"].cat.categories.dtype == "str"


def test_unversioned_requests_are_read_from_two_columns_of_every_part(tmp_path: Path) -> None:
    from analysis.runfolder import unversioned_requests
    from analysis.synthetic import make_run

    run = make_run(n_requests=3_000, seed=2, no_header_rate=0.1, with_spans=False)
    parts = tmp_path / "requests"
    parts.mkdir(parents=True)
    for i, rows in enumerate(np.array_split(np.arange(len(run.requests)), 3)):
        chunk = run.requests.iloc[rows].reset_index(drop=True)
        pq.write_table(pa.Table.from_pandas(chunk, preserve_index=False), parts / f"p{i}.parquet")
    (parts / "p9.parquet").write_bytes(b"not parquet")  # load_run notes it; here it is skipped
    got = unversioned_requests(tmp_path)
    expected = run.requests.loc[run.requests["version"].isna(), "trace_id"]
    assert 0 < len(expected) < len(run.requests)
    assert sorted(got["trace_id"].astype(str)) == sorted(expected.astype(str))
    assert got["version"].isna().all()
