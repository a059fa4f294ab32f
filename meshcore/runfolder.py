"""The run folder `results/<run-id>/`: its file names, run.json's version, reading and writing.

The contract (every file, column and key) is docs/design.md; the columns are
`meshcore.schemas`. The master writes run.json, each process that sends load writes request
parts, the mesh or `meshload report` writes the telemetry files, and analysis reads them all,
each through this class. Every file appears by an atomic rename (`meshcore.files`), so a reader,
or a run cut short by SIGKILL, never sees half a file. Names that start with `.` or `_`
(temporary files, end-of-capture markers) are not parts.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from meshcore.errors import RunFolderError
from meshcore.files import replacing, write_atomic

# The newest run.json layout this code writes and reads; older ones load as they are.
SCHEMA_VERSION = 1

RUN_JSON = "run.json"
REQUESTS_DIR = "requests"  # requests/<worker>-<pid>-<seq>.parquet, one part per batch
REQUESTS_FILE = "requests.parquet"  # one file instead of parts (written by other tools)
SPANS_FILE = "spans.parquet"  # one file: fetched from a trace backend
METRICS_FILE = "metrics.parquet"  # one file: fetched from Prometheus
# Telemetry recorded while the run goes, by the embedded mesh: <writer>-<pid>-<seq>.parquet
# parts and a state marker _<writer>-<pid>.json per writer (see `RunFolder.write_recording`).
SPANS_DIR = "spans"
METRICS_DIR = "metrics"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def new_run_id(scenario: str, now_ns: int | None = None) -> str:
    """`<scenario>-<UTC yyyymmdd-HHMMSS>-<4 hex>`: sorts by time, unique across parallel runs."""
    t = time.gmtime((now_ns if now_ns is not None else time.time_ns()) / 1e9)
    return f"{safe_name(scenario)}-{time.strftime('%Y%m%d-%H%M%S', t)}-{secrets.token_hex(2)}"


def safe_name(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_") or "x"


def write_parquet(path: str | os.PathLike[str], table: pa.Table, **options: Any) -> Path:
    """One complete parquet file by rename; `options` go to pyarrow's write_table."""
    with replacing(path) as tmp:
        pq.write_table(table, tmp, **options)
    return Path(path)


@dataclass(frozen=True)
class CaptureEnd:
    """A request capture's end, as its done marker holds it: `rows` written in `parts`, `lost`
    that could not be written, of the `seen` request events. A worker's capture tells the
    master its `rows` sent; the master's marker for it has `sent` and the `rows` that landed."""

    worker: str
    pid: int
    rows: int
    parts: int
    lost: int = 0
    seen: int | None = None
    sent: int | None = None

    def body(self) -> dict[str, Any]:
        """The marker's keys: every field that is set."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class RecorderState:
    """What one recorder of telemetry (the trace store, the scraper) has written into a run
    folder: `rows` in `parts`, `lost` rows it could not write, `done` once it closed."""

    writer: str
    pid: int
    rows: int = 0
    parts: int = 0
    lost: int = 0
    done: bool = False


class RunFolder:
    """One `results/<run-id>/` folder, for its writers and its readers alike."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, results_dir: str | os.PathLike[str], run_id: str) -> RunFolder:
        folder = cls(Path(results_dir).resolve() / run_id)
        folder.requests_dir.mkdir(parents=True, exist_ok=True)
        return folder

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def requests_dir(self) -> Path:
        return self.path / REQUESTS_DIR

    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    # -- run.json --------------------------------------------------------------------------
    def write_run(self, info: Mapping[str, Any]) -> None:
        body = {"schema_version": SCHEMA_VERSION, **info}
        write_atomic(self.run_json, json.dumps(body, indent=2, default=str) + "\n")

    def read_run(self, notes: list[str] | None = None) -> dict[str, Any]:
        """run.json, its schema version checked; RunFolderError when it cannot be used.

        A missing schema_version is read as the current one, with a line in `notes`."""
        path = self.run_json
        if not self.path.is_dir():
            raise RunFolderError(f"{self.path}: no such run folder; pass a folder under results/")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunFolderError(
                f"{path}: missing; this is not a meshload run folder (record one with "
                "`locust -f scenarios/canary.py --headless`)"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunFolderError(
                f"{path}: unreadable ({exc.__class__.__name__}); restore it from a backup"
            ) from None
        if not isinstance(meta, dict):
            raise RunFolderError(f"{path}: not a JSON object; restore it from a backup")
        version = meta.get("schema_version")
        if version is None:
            if notes is not None:
                notes.append(f"run.json has no schema_version; read as version {SCHEMA_VERSION}")
        elif not isinstance(version, int) or isinstance(version, bool):
            raise RunFolderError(f"{path}: schema_version {version!r} is not an integer")
        elif version > SCHEMA_VERSION:
            raise RunFolderError(
                f"{path}: schema_version {version} is newer than this meshload reads "
                f"({SCHEMA_VERSION}); upgrade meshload (pip install -U meshload)"
            )
        return meta

    # -- request records -------------------------------------------------------------------
    def part_path(self, worker: str, pid: int, seq: int) -> Path:
        return self.requests_dir / f"{safe_name(worker)}-{pid}-{seq:06d}.parquet"

    def write_part(self, table: pa.Table, worker: str, pid: int, seq: int) -> Path:
        """One complete parquet part of request records; visible only once whole."""
        self.requests_dir.mkdir(parents=True, exist_ok=True)
        return write_parquet(self.part_path(worker, pid, seq), table, compression="zstd")

    def mark_done(self, end: CaptureEnd) -> None:
        """The capture `end` tells of is complete: its done marker, written whole."""
        marker = self.requests_dir / f"_{safe_name(end.worker)}-{end.pid}.done.json"
        write_atomic(marker, json.dumps(end.body()))

    def done_markers(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.requests_dir.glob("_*.done.json")):
            try:
                out.append(json.loads(p.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return out

    def parts(self) -> list[Path]:
        """requests.parquet and the request parts, in name order."""
        return self._parts(REQUESTS_FILE, REQUESTS_DIR)

    def _parts(self, single_name: str, parts_dir: str) -> list[Path]:
        """The single file (when there is one), then the whole parts of a folder, by name."""
        single = self.path / single_name
        found = [single] if single.is_file() else []
        folder = self.path / parts_dir
        if folder.is_dir():
            found += sorted(folder.glob("[!._]*.parquet"))
        return found

    def read_requests(self, columns: list[str] | None = None) -> pa.Table:
        """Every part as one arrow table, of `columns` (default: all); for the end of a run,
        analysis reads frames."""
        parts = self.parts()
        if not parts:
            return pa.table({})
        tables = [pq.read_table(p, columns=columns) for p in parts]
        return pa.concat_tables(tables, promote_options="permissive")

    # -- telemetry recorded during the run -------------------------------------------------
    def span_parts(self) -> list[Path]:
        """spans.parquet and the span parts the embedded trace store recorded, in name order."""
        return self._parts(SPANS_FILE, SPANS_DIR)

    def metric_parts(self) -> list[Path]:
        """metrics.parquet and the metric parts the embedded scraper recorded, in name order."""
        return self._parts(METRICS_FILE, METRICS_DIR)

    def write_telemetry_part(
        self, parts_dir: str, table: pa.Table, writer: str, pid: int, seq: int
    ) -> Path:
        """One complete part of `parts_dir` (SPANS_DIR or METRICS_DIR); visible only once whole."""
        folder = self.path / parts_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{safe_name(writer)}-{pid}-{seq:06d}.parquet"
        return write_parquet(path, table, compression="zstd")

    def write_recording(self, parts_dir: str, state: RecorderState) -> None:
        """A recorder's state beside its parts, `_<writer>-<pid>.json`. Rewritten with every
        part, so a recorder that died leaves its last state with `done` false."""
        folder = self.path / parts_dir
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / f"_{safe_name(state.writer)}-{state.pid}.json"
        write_atomic(marker, json.dumps(asdict(state)))

    def recordings(self, parts_dir: str) -> list[dict[str, Any]]:
        """The state of every recorder of `parts_dir`, by name; [] when nothing was recorded."""
        out = []
        for p in sorted((self.path / parts_dir).glob("_*.json")):
            try:
                state = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(state, dict):
                out.append(state)
        return out
