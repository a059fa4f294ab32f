"""Writing a run folder (the contract is in DESIGN.md): run.json and the request parts.

Every file appears by an atomic rename, so a reader, or a run cut short by SIGKILL, never sees
half a file: `run.json` is rewritten whole at each event, and each batch of request records is
a complete parquet part `requests/<worker>-<pid>-<seq>.parquet`. Names that start with `.` or
`_` (temporary files, end-of-capture markers) are skipped by pyarrow's dataset readers.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from meshload.errors import ConfigError

SCHEMA_VERSION = 1
REQUESTS_DIR = "requests"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def new_run_id(scenario: str, now_ns: int | None = None) -> str:
    """`<scenario>-<UTC yyyymmdd-HHMMSS>-<4 hex>`: sorts by time, unique across parallel runs."""
    t = time.gmtime((now_ns if now_ns is not None else time.time_ns()) / 1e9)
    return f"{safe_name(scenario)}-{time.strftime('%Y%m%d-%H%M%S', t)}-{secrets.token_hex(2)}"


def safe_name(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_") or "x"


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_writable(results_dir: Path) -> None:
    """Fail before the run starts, not at its first record, when results cannot be written."""
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = results_dir / f".meshload-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"--results-dir {results_dir}: cannot write there ({e.strerror}); pass a writable "
            "directory"
        ) from None


class RunFolder:
    """One `results/<run-id>/` folder, written by the master (run.json) and every worker."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, results_dir: str | Path, run_id: str) -> RunFolder:
        folder = cls(Path(results_dir).resolve() / run_id)
        folder.requests_dir.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def requests_dir(self) -> Path:
        return self.path / REQUESTS_DIR

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    def write_run(self, info: Mapping[str, Any]) -> None:
        body = {"schema_version": SCHEMA_VERSION, **info}
        write_atomic(self.run_json, json.dumps(body, indent=2, default=str).encode() + b"\n")

    def read_run(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run_json.read_text(encoding="utf-8"))
        return data

    # -- request parts -------------------------------------------------------------------
    def part_path(self, worker: str, pid: int, seq: int) -> Path:
        return self.requests_dir / f"{safe_name(worker)}-{pid}-{seq:06d}.parquet"

    def write_part(self, table: pa.Table, worker: str, pid: int, seq: int) -> Path:
        """Write one complete parquet part; it becomes visible only once whole."""
        self.requests_dir.mkdir(parents=True, exist_ok=True)
        final = self.part_path(worker, pid, seq)
        tmp = final.with_name(f".{final.name}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, final)
        return final

    def mark_done(self, worker: str, pid: int, rows: int, parts: int) -> None:
        """Tell the master this capture is complete (how many rows in how many parts)."""
        marker = self.requests_dir / f"_{safe_name(worker)}-{pid}.done.json"
        body = {"worker": worker, "pid": pid, "rows": rows, "parts": parts}
        write_atomic(marker, json.dumps(body).encode())

    def done_markers(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.requests_dir.glob("_*.done.json")):
            try:
                out.append(json.loads(p.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return out

    def parts(self) -> list[Path]:
        return sorted(self.requests_dir.glob("[!._]*.parquet"))

    def read_requests(self) -> pa.Table:
        """All parts as one table (for tests and quick looks; analysis has its own reader)."""
        parts = self.parts()
        if not parts:
            return pa.table({})
        return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
