"""Request records from every worker to the master's run folder, over Locust's own messages.

A worker's `RequestCapture` writes its batches through a `MasterLink` instead of a folder: each
part goes to the master as one `meshload_records` message (the batch as an Arrow IPC stream,
zstd-compressed), and the master's `RecordIntake` writes it into the run folder under the
worker's name, pid and sequence number (the part name a worker writing the folder itself would
have used) and acknowledges it. So the master's folder is the complete one, whatever machine a
worker runs on, and local `--processes N` takes the same path.

Bounded on both sides: the master writes each batch as it arrives (nothing queues but what
ZeroMQ holds); a worker keeps each batch until it is acknowledged, resending it after
`RESEND_S`, and refuses new sends beyond `limit_bytes` unacknowledged (its capture then keeps
them, bounded, and counts what it must drop as lost). A part landing twice is written twice
under one name: idempotent. At test stop a worker sends `meshload_records_done` with what it
saw, sent and lost; the master writes the capture's done marker with what landed. A worker
that disappears leaves the parts that landed; the master's marker-less count and Locust's say
what is missing.

With a writable `ledger` path, a worker appends each acknowledgement to it (JSON lines: seq,
rows), so what it knows has landed can be checked against the master's folder.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from meshcore.runfolder import CaptureEnd, RunFolder

log = logging.getLogger(__name__)

RECORDS = "meshload_records"
ACK = "meshload_records_ack"
DONE = "meshload_records_done"
RESEND_S = 5.0  # an unacknowledged batch is sent again after this long
_IPC = pa.ipc.IpcWriteOptions(compression="zstd")


def encode(table: pa.Table) -> bytes:
    """A batch as an Arrow IPC stream (zstd-compressed buffers)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_IPC) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode(payload: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()


@dataclass
class _Sent:
    seq: int
    rows: int
    payload: bytes
    sent_at: float


@dataclass
class MasterLink:
    """Worker side: the folder a worker's capture writes to, backed by the master."""

    runner: Any
    limit_bytes: int
    ledger: Path | None = None
    run_id: str = ""  # the run folder's name: records of another run are not written into it
    path: str = "the master's run folder"
    acked_rows: int = 0
    acked_parts: int = 0
    resent: int = 0
    _unacked: dict[tuple[int, int], _Sent] = field(default_factory=dict)
    _head: dict[str, Any] = field(default_factory=dict)

    @property
    def unacked_bytes(self) -> int:
        return sum(len(s.payload) for s in self._unacked.values())

    def write_part(self, table: pa.Table, worker: str, pid: int, seq: int) -> None:
        """Send one part; OSError when the master has not acknowledged `limit_bytes` (the
        capture keeps the batch and tries again) or the message cannot be sent."""
        self.resend_due()
        if self._unacked and self.unacked_bytes >= self.limit_bytes:
            held = f"{len(self._unacked)} parts, {self.unacked_bytes / 2**20:.1f} MB"
            raise OSError(f"the master has not acknowledged {held} of records")
        sent = _Sent(seq, table.num_rows, encode(table), time.monotonic())
        self._head = {"worker": worker, "pid": pid, "run": self.run_id}
        self._send(sent)
        self._unacked[(pid, seq)] = sent

    def _send(self, sent: _Sent) -> None:
        data = {**self._head, "seq": sent.seq, "rows": sent.rows, "ipc": sent.payload}
        try:
            self.runner.send_message(RECORDS, data)
        except Exception as e:  # a closed socket: the capture keeps the batch
            raise OSError(f"cannot send records to the master: {e}") from None
        sent.sent_at = time.monotonic()

    def resend_due(self, now: float | None = None) -> int:
        """Send again each batch unacknowledged for RESEND_S; how many were sent."""
        now = time.monotonic() if now is None else now
        due = [s for s in self._unacked.values() if now - s.sent_at >= RESEND_S]
        for s in due:
            try:
                self._send(s)
            except OSError as e:
                log.warning("%s; retrying", e)
                break
            self.resent += 1
        return len(due)

    def on_ack(self, environment: Any = None, msg: Any = None, **_: Any) -> None:
        data = getattr(msg, "data", None) or {}
        sent = self._unacked.pop((int(data.get("pid", -1)), int(data.get("seq", -1))), None)
        if sent is None:
            return  # a resent batch acknowledged twice
        self.acked_rows += sent.rows
        self.acked_parts += 1
        if self.ledger is not None:
            try:
                with self.ledger.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"seq": sent.seq, "rows": sent.rows}) + "\n")
            except OSError as e:
                log.warning("cannot note acknowledged records in %s: %s", self.ledger, e)
                self.ledger = None

    def mark_done(self, end: CaptureEnd) -> None:
        """Tell the master this capture is complete: `end.rows` sent in `end.parts`,
        `end.lost` that could not be sent, of the `end.seen` request events."""
        try:
            self.runner.send_message(DONE, {**end.body(), "run": self.run_id})
        except Exception as e:
            raise OSError(f"cannot tell the master the records are complete: {e}") from None
        log.info(
            "request records: %d sent in %d parts, %d acknowledged so far, %d lost",
            end.rows,
            end.parts,
            self.acked_rows,
            end.lost,
        )


@dataclass
class _Landed:
    rows: int = 0
    parts: int = 0
    seqs: set[int] = field(default_factory=set)
    done: dict[str, Any] | None = None


@dataclass
class RecordIntake:
    """Master side: every worker's parts and done markers, written into the run folder."""

    runner: Any
    folder: RunFolder | None = None
    failures: int = 0
    _landed: dict[tuple[str, int], _Landed] = field(default_factory=dict)

    def start(self, folder: RunFolder) -> None:
        """A new run: records from now on land in `folder`."""
        self.folder = folder
        self._landed = {}

    def landed(self) -> dict[str, int]:
        """Rows landed per worker."""
        out: dict[str, int] = {}
        for (worker, _), got in self._landed.items():
            out[worker] = out.get(worker, 0) + got.rows
        return out

    def _ours(self, data: Mapping[str, Any]) -> bool:
        """The records are this run's (a late batch of an earlier run is not written here)."""
        if self.folder is None:
            log.error("request records from %s before any run: dropped", data.get("worker"))
            return False
        run = data.get("run")
        if run and run != self.folder.path.name:
            log.error("request records of run %s from %s after it ended: dropped",
                      run, data.get("worker"))  # fmt: skip
            return False
        return True

    def on_records(self, environment: Any = None, msg: Any = None, **_: Any) -> None:
        data: Mapping[str, Any] = getattr(msg, "data", None) or {}
        if not self._ours(data) or self.folder is None:
            return
        worker, pid, seq = str(data.get("worker")), int(data.get("pid", 0)), int(data["seq"])
        got = self._landed.setdefault((worker, pid), _Landed())
        if seq not in got.seqs:
            try:
                table = decode(bytes(data["ipc"]))
                self.folder.write_part(table, worker, pid, seq)
            except Exception as e:  # unacknowledged: the worker sends it again
                self.failures += 1
                log.error("cannot write %s's request records (part %d): %s", worker, seq, e)
                return
            got.seqs.add(seq)
            got.rows += table.num_rows
            got.parts += 1
            if got.done is not None:  # a resent part after the done message
                self._mark(worker, pid, got)
        try:
            self.runner.send_message(ACK, {"pid": pid, "seq": seq}, client_id=msg.node_id)
        except Exception as e:
            log.warning("cannot acknowledge %s's records: %s", worker, e)

    def on_done(self, environment: Any = None, msg: Any = None, **_: Any) -> None:
        data: Mapping[str, Any] = getattr(msg, "data", None) or {}
        if not self._ours(data):
            return
        worker, pid = str(data.get("worker")), int(data.get("pid", 0))
        got = self._landed.setdefault((worker, pid), _Landed())
        got.done = dict(data)
        self._mark(worker, pid, got)

    def _mark(self, worker: str, pid: int, got: _Landed) -> None:
        assert got.done is not None
        if self.folder is None:
            return
        sent = int(got.done.get("rows") or 0)  # the worker's rows: sent to the master
        lost = int(got.done.get("lost") or 0) + max(sent - got.rows, 0)
        seen = None if got.done.get("seen") is None else int(got.done["seen"])
        end = CaptureEnd(worker, pid, got.rows, got.parts, lost=lost, seen=seen, sent=sent)
        try:
            self.folder.mark_done(end)
        except OSError as e:
            log.error("cannot mark %s's records done in %s: %s", worker, self.folder.path, e)
