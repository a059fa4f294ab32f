"""meshcore.runfolder: run ids, run.json and its version, request and telemetry parts, markers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meshcore.errors import RunFolderError
from meshcore.runfolder import (
    METRICS_DIR,
    METRICS_FILE,
    SCHEMA_VERSION,
    SPANS_DIR,
    CaptureEnd,
    RecorderState,
    RunFolder,
    new_run_id,
    safe_name,
    write_parquet,
)
from tests.records import request_table


def test_run_ids_sort_by_time_and_are_file_safe() -> None:
    a = new_run_id("canary", 1_700_000_000 * 10**9)
    b = new_run_id("canary", 1_700_000_060 * 10**9)
    assert a.startswith("canary-20231114-221320-") and a < b
    assert safe_name("vm_1/x y") == "vm_1_x_y"


def test_run_json_round_trip_and_its_version(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "r")
    folder.write_run({"run_id": "r", "events": []})
    assert folder.read_run() == {"schema_version": SCHEMA_VERSION, "run_id": "r", "events": []}
    notes: list[str] = []
    folder.run_json.write_text(json.dumps({"run_id": "r"}))
    assert folder.read_run(notes)["run_id"] == "r" and "no schema_version" in notes[0]
    folder.run_json.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(RunFolderError, match="upgrade meshload"):
        folder.read_run()
    folder.run_json.unlink()
    with pytest.raises(RunFolderError, match="scenarios/canary.py"):
        folder.read_run()


def test_parts_are_whole_files_in_name_order_without_temporaries(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "r")
    for seq in (2, 0, 1):
        folder.write_part(request_table(seq + 1, start_ns=list(range(seq + 1))), "w0", 7, seq)
    (folder.requests_dir / ".w0-7-000003.parquet.123.456.tmp").write_bytes(b"half")
    folder.mark_done(CaptureEnd("w0", 7, 6, 3))
    assert [p.name for p in folder.parts()] == [f"w0-7-00000{i}.parquet" for i in range(3)]
    assert folder.read_requests().num_rows == 6
    assert folder.done_markers() == [{"worker": "w0", "pid": 7, "rows": 6, "parts": 3, "lost": 0}]


def test_telemetry_parts_and_recorder_states(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "r")
    assert folder.span_parts() == folder.metric_parts() == [] == folder.recordings(SPANS_DIR)
    table = pa.table({"x": [1, 2]})
    for seq in (1, 0):
        folder.write_telemetry_part(SPANS_DIR, table, "tracestore", 9, seq)
    folder.write_telemetry_part(METRICS_DIR, table, "scraper", 8, 0)
    (folder.path / SPANS_DIR / ".tracestore-9-000002.parquet.1.2.tmp").write_bytes(b"half")
    folder.write_recording(SPANS_DIR, RecorderState("tracestore", 9, rows=4, parts=2))
    state = {"writer": "tracestore", "pid": 9, "rows": 4, "parts": 2, "lost": 0, "done": False}
    names = [p.relative_to(folder.path).as_posix() for p in folder.span_parts()]
    assert names == ["spans/tracestore-9-000000.parquet", "spans/tracestore-9-000001.parquet"]
    assert folder.recordings(SPANS_DIR) == [state] and folder.recordings(METRICS_DIR) == []
    folder.write_recording(SPANS_DIR, RecorderState("tracestore", 9, 4, 2, done=True))  # rewritten
    assert folder.recordings(SPANS_DIR) == [{**state, "done": True}]
    # A fetched single file comes first; the request parts are none of these.
    write_parquet(folder.file(METRICS_FILE), table)
    assert [p.name for p in folder.metric_parts()] == [METRICS_FILE, "scraper-8-000000.parquet"]
    assert folder.parts() == []
    assert all(pq.read_table(p).num_rows == 2 for p in folder.span_parts())
