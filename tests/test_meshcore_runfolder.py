"""meshcore.runfolder: run ids, run.json and its version, request parts and markers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshcore.errors import RunFolderError
from meshcore.runfolder import SCHEMA_VERSION, RunFolder, new_run_id, safe_name
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
    folder.mark_done("w0", 7, 6, 3)
    assert [p.name for p in folder.parts()] == [f"w0-7-00000{i}.parquet" for i in range(3)]
    assert folder.read_requests().num_rows == 6
    assert folder.done_markers() == [{"worker": "w0", "pid": 7, "rows": 6, "parts": 3}]
