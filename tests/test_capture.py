"""Request capture: one record per request event, batched into complete parquet parts."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from loadgen.capture import RequestCapture
from loadgen.steps import StepClock
from meshcore.runfolder import RunFolder, new_run_id
from meshcore.schemas import REQUEST_SCHEMA

T0_NS = 1_700_000_000_000_000_000


def response(status: int, version: str | None) -> SimpleNamespace:
    headers = {"x-version": version} if version is not None else {}
    return SimpleNamespace(status_code=status, headers=headers)


def fire(cap: RequestCapture, i: int, rng: random.Random, **over: object) -> dict[str, object]:
    """One synthetic request event; returns what the record should hold."""
    version = rng.choice(["v1", "v2", None])
    status = rng.choice([200, 200, 500])
    latency = rng.uniform(0.1, 50.0)
    start_s = (T0_NS + i * 1_000_000) / 1e9
    exc = RuntimeError("boom") if status == 500 else None
    kwargs: dict[str, object] = dict(
        request_type="GET",
        name="/product/[id]",
        response_time=latency,
        response_length=10,
        response=response(status, version),
        context={"trace_id": f"{i + 1:032x}", "sampled": True, "user_id": i % 3},
        exception=exc,
        start_time=start_s,
        url="http://127.0.0.1/x",
    )
    kwargs.update(over)
    cap.on_request(**kwargs)  # type: ignore[arg-type]
    return {"latency_ms": latency, "version": version, "status": status, "ok": exc is None,
            "start_ns": int(start_s * 1e9)}  # fmt: skip


@pytest.fixture()
def folder(tmp_path: Path) -> RunFolder:
    return RunFolder.create(tmp_path, new_run_id("test"))


def test_records_hold_every_field_exactly(folder: RunFolder) -> None:
    clock = StepClock()
    clock.begin(0, 0)
    clock.begin(1, T0_NS + 500 * 1_000_000)  # step 1 from the 500th request on
    cap = RequestCapture(clock=clock, batch_rows=10**6)
    cap.open(folder, "local")
    rng = random.Random(7)
    expected = [fire(cap, i, rng) for i in range(1000)]
    assert cap.flush() == 1000
    table = folder.read_requests()
    assert table.schema == REQUEST_SCHEMA
    got = table.to_pydict()
    assert got["latency_ms"] == [e["latency_ms"] for e in expected]
    assert got["version"] == [e["version"] for e in expected]
    assert got["status"] == [e["status"] for e in expected]
    assert got["ok"] == [e["ok"] for e in expected]
    assert got["start_ns"] == [e["start_ns"] for e in expected]
    assert got["step"] == [0] * 500 + [1] * 500
    assert got["trace_id"] == [f"{i + 1:032x}" for i in range(1000)]
    assert got["error"][expected.index(next(e for e in expected if not e["ok"]))] == (
        "RuntimeError: boom"
    )
    assert set(got["worker"]) == {"local"}


def test_batches_become_parts_and_memory_stays_bounded(folder: RunFolder) -> None:
    cap = RequestCapture(clock=StepClock(), batch_rows=100)
    cap.open(folder, "w0")
    rng = random.Random(1)
    peak = 0
    for i in range(1050):
        fire(cap, i, rng)
        peak = max(peak, cap.buffered)
    assert peak < 100
    assert len(folder.parts()) == 10
    cap.close()
    assert len(folder.parts()) == 11
    assert [pq.read_metadata(p).num_rows for p in folder.parts()] == [100] * 10 + [50]
    assert folder.done_markers() == [
        {"worker": "w0", "pid": cap.pid, "rows": 1050, "parts": 11, "lost": 0, "seen": 1050}
    ]
    # readers of the folder see only the parts, never the marker or temporary files
    assert ds.dataset(folder.requests_dir, format="parquet").count_rows() == 1050


def test_close_is_idempotent_and_later_events_are_ignored(folder: RunFolder) -> None:
    cap = RequestCapture(clock=StepClock())
    cap.open(folder, "local")
    fire(cap, 0, random.Random(0))
    cap.close()
    cap.close()
    fire(cap, 1, random.Random(0))
    assert cap.flush() == 0
    assert folder.read_requests().num_rows == 1


def test_events_before_open_are_not_recorded(folder: RunFolder) -> None:
    cap = RequestCapture(clock=StepClock())
    fire(cap, 0, random.Random(0))
    assert cap.buffered == 0


def test_failed_requests_without_response(folder: RunFolder) -> None:
    cap = RequestCapture(clock=StepClock())
    cap.open(folder, "local")
    fire(cap, 0, random.Random(0), response=None, exception=ConnectionError("refused"),
         context={})  # fmt: skip
    cap.flush()
    row = folder.read_requests().to_pylist()[0]
    assert (row["status"], row["ok"], row["version"], row["trace_id"]) == (0, False, None, None)
    assert row["error"] == "ConnectionError: refused"


def test_open_model_adds_intended_time_and_corrected_latency(folder: RunFolder) -> None:
    cap = RequestCapture(clock=StepClock(), open_model=True)
    cap.open(folder, "local")
    start_ns = int(((T0_NS) / 1e9) * 1e9)
    fire(cap, 0, random.Random(0), response_time=5.0,
         context={"intended_ns": start_ns - 20_000_000})  # fmt: skip
    fire(cap, 1, random.Random(0), response_time=5.0, context={})
    cap.flush()
    rows = folder.read_requests().to_pylist()
    assert rows[0]["intended_ns"] == start_ns - 20_000_000
    assert rows[0]["co_latency_ms"] == pytest.approx(25.0, abs=1e-3)
    assert rows[1]["intended_ns"] is None and rows[1]["co_latency_ms"] == 5.0


def test_a_failed_write_is_kept_and_written_when_the_disk_is_back(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cap = RequestCapture(clock=StepClock())
    cap.open(RunFolder(run), "local")
    run.write_text("not a folder: every write fails")
    rng = random.Random(0)
    for i in range(3):
        fire(cap, i, rng)
        assert cap.flush() == 0
    assert cap.flush_failures == 3 and cap.pending_rows == 3 and cap.rows_lost == 0
    run.unlink()
    fire(cap, 3, rng)
    assert cap.flush() == 4, "the three kept batches and the new one"
    cap.close()
    assert RunFolder(run).read_requests().num_rows == 4
    assert RunFolder(run).done_markers()[0] | {"pid": 0} == {
        "worker": "local",
        "pid": 0,
        "rows": 4,
        "parts": 4,
        "lost": 0,
        "seen": 4,
    }


def test_beyond_the_buffer_the_oldest_batches_are_counted_lost(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.write_text("x")
    cap = RequestCapture(clock=StepClock(), buffer_bytes=1)  # room for one batch only
    cap.open(RunFolder(run), "local")
    rng = random.Random(1)
    for i in range(5):
        fire(cap, i, rng)
        cap.flush()
    assert (cap.pending_rows, cap.rows_lost) == (1, 4)
    cap.close(retries=1, retry_s=0.0)
    assert (cap.pending_rows, cap.rows_lost, cap.rows_written, cap.rows_seen) == (0, 5, 0, 5)


def test_run_json_is_written_whole(folder: RunFolder) -> None:
    folder.write_run({"run_id": "x", "events": [{"kind": "weights"}]})
    assert json.loads(folder.run_json.read_text()) == {
        "schema_version": 1,
        "run_id": "x",
        "events": [{"kind": "weights"}],
    }
    assert not list(folder.path.glob(".*"))
