"""loadgen.records_link: worker -> master record batches, against in-memory runners (the
end-to-end path with real Locust processes is tests/test_distributed_records.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from loadgen import records_link
from loadgen.records_link import MasterLink, RecordIntake, decode, encode
from meshcore.runfolder import CaptureEnd, RunFolder
from tests.records import request_table


class Wire:
    """Both ends' send_message, recorded: what a worker sent and what the master answered."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], str | None]] = []
        self.broken = False

    def send_message(self, kind: str, data: dict[str, Any], client_id: str | None = None) -> None:
        if self.broken:
            raise RuntimeError("socket closed")
        self.sent.append((kind, data, client_id))


def message(data: dict[str, Any], node: str = "host_abc") -> Any:
    return SimpleNamespace(data=data, node_id=node)


def test_a_batch_survives_the_wire_as_arrow_ipc() -> None:
    table = request_table(500, start_ns=range(500), version=["v1", "v2"] * 250)
    payload = encode(table)
    assert decode(payload).equals(table)
    assert len(payload) < table.nbytes  # compressed


def test_parts_land_once_are_acknowledged_and_the_marker_says_what_landed(tmp_path: Path) -> None:
    folder, master = RunFolder(tmp_path / "run"), Wire()
    intake = RecordIntake(master)
    intake.start(folder)
    worker = Wire()
    link = MasterLink(worker, limit_bytes=2**20, ledger=tmp_path / "acked.jsonl")
    for seq, n in enumerate((30, 20)):
        link.write_part(request_table(n, start_ns=range(n)), "worker1", 42, seq)
    assert [k for k, _, _ in worker.sent] == [records_link.RECORDS] * 2
    for _, data, _ in worker.sent:
        intake.on_records(msg=message(data))
    intake.on_records(msg=message(worker.sent[0][1]))  # sent again: written once, acked again
    assert sorted(p.name for p in folder.parts()) == [
        "worker1-42-000000.parquet", "worker1-42-000001.parquet"
    ]  # fmt: skip
    assert folder.read_requests().num_rows == 50 and intake.landed() == {"worker1": 50}
    acks = [(d["pid"], d["seq"], c) for k, d, c in master.sent if k == records_link.ACK]
    assert acks == [(42, 0, "host_abc"), (42, 1, "host_abc"), (42, 0, "host_abc")]
    for _, data, _ in master.sent:
        link.on_ack(msg=message(data))
    assert (link.acked_rows, link.acked_parts, link.unacked_bytes) == (50, 2, 0)
    ledger = [json.loads(x) for x in (tmp_path / "acked.jsonl").read_text().splitlines()]
    assert ledger == [{"seq": 0, "rows": 30}, {"seq": 1, "rows": 20}]
    # the worker says it sent 60 (one batch of 10 never arrived): 10 are lost
    link.mark_done(CaptureEnd("worker1", 42, 60, 3, lost=0, seen=60))
    intake.on_done(msg=message(worker.sent[-1][1]))
    [marker] = folder.done_markers()
    assert marker == {"worker": "worker1", "pid": 42, "rows": 50, "parts": 2, "lost": 10,
                      "seen": 60, "sent": 60}  # fmt: skip


def test_unacknowledged_batches_are_bounded_and_resent(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = Wire()
    table = request_table(2000, start_ns=range(2000), name=[f"/p/{i}" for i in range(2000)])
    size = len(encode(table))
    link = MasterLink(worker, limit_bytes=2 * size)
    link.write_part(table, "worker0", 1, 0)
    link.write_part(table, "worker0", 1, 1)
    with pytest.raises(OSError, match="has not acknowledged"):
        link.write_part(table, "worker0", 1, 2)  # the capture keeps it and retries
    assert len(worker.sent) == 2
    clock = [1000.0]
    monkeypatch.setattr(records_link.time, "monotonic", lambda: clock[0])
    for s in link._unacked.values():
        s.sent_at = clock[0]
    assert link.resend_due() == 0
    clock[0] += records_link.RESEND_S
    assert link.resend_due() == 2 and link.resent == 2
    assert [d["seq"] for _, d, _ in worker.sent] == [0, 1, 0, 1]
    link.on_ack(msg=message({"pid": 1, "seq": 0}))
    link.write_part(table, "worker0", 1, 2)  # room again
    for seq in (1, 2):
        link.on_ack(msg=message({"pid": 1, "seq": seq}))
    worker.broken = True
    with pytest.raises(OSError, match="cannot send records to the master"):
        link.write_part(request_table(1), "worker0", 1, 3)


def test_a_part_the_master_cannot_write_is_not_acknowledged(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "requests").write_text("a file where the parts folder should be")
    master = Wire()
    intake = RecordIntake(master)
    intake.start(RunFolder(tmp_path / "run"))
    payload = encode(request_table(5, start_ns=range(5)))
    intake.on_records(msg=message({"worker": "w", "pid": 1, "seq": 0, "rows": 5, "ipc": payload}))
    assert master.sent == [] and intake.failures == 1  # the worker sends it again later
    assert intake.landed() == {"w": 0}


def test_records_before_any_run_are_dropped_loudly(caplog: pytest.LogCaptureFixture) -> None:
    intake = RecordIntake(Wire())
    payload = encode(pa.table({"x": [1]}))
    intake.on_records(msg=message({"worker": "w", "pid": 1, "seq": 0, "ipc": payload}))
    assert "before any run" in caplog.text


def test_a_late_batch_of_an_earlier_run_is_not_written_into_the_next(tmp_path: Path) -> None:
    master, worker = Wire(), Wire()
    intake = RecordIntake(master)
    intake.start(RunFolder(tmp_path / "run-2"))
    link = MasterLink(worker, limit_bytes=2**20, run_id="run-1")
    link.write_part(request_table(3, start_ns=range(3)), "worker0", 7, 0)
    intake.on_records(msg=message(worker.sent[0][1]))
    assert intake.landed() == {} and master.sent == []
    assert not (tmp_path / "run-2" / "requests").exists()
