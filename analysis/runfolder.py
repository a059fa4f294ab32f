"""Read a run folder (the contract in DESIGN.md) into tidy frames.

A run cut short (Ctrl-C, a crash) must still load: a broken request part is skipped and named
in `Run.notes`; absent telemetry gives empty frames with the right columns. Only a missing or
unreadable `run.json`, or one written by a newer meshload, stops the load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analysis.frames import (
    METRIC_COLUMNS,
    REQUEST_COLUMNS,
    REQUEST_OPTIONAL_COLUMNS,
    SPAN_COLUMNS,
    empty_frame,
    from_arrow,
    labels_json,
    to_arrow,
)
from meshcore.errors import RunFolderError

# The newest run.json layout this code understands; older ones load as they are.
SCHEMA_VERSION = 1


@dataclass
class Run:
    """One run's metadata and frames, plus what was missing or broken while reading it."""

    path: Path
    meta: dict[str, Any]
    requests: pd.DataFrame
    spans: pd.DataFrame
    metrics: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def load_run(path: str | os.PathLike[str]) -> Run:
    """Load `results/<run-id>/`: run.json, request parts, spans and metrics."""
    folder = Path(path)
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: no such run folder; pass a folder under results/")
    notes: list[str] = []
    meta = read_meta(folder, notes)
    requests = _read_requests(folder, notes)
    spans = _read_single(folder / "spans.parquet", SPAN_COLUMNS, notes, "spans")
    metrics = _read_single(folder / "metrics.parquet", METRIC_COLUMNS, notes, "metrics")
    return Run(folder, meta, requests, spans, metrics, notes)


def read_meta(folder: Path, notes: list[str]) -> dict[str, Any]:
    """run.json, with its schema version checked."""
    meta_path = folder / "run.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(
            f"{meta_path}: missing; this is not a meshload run folder (run `meshload run` first)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(
            f"{meta_path}: unreadable ({exc.__class__.__name__}); restore it from a backup"
        ) from None
    if not isinstance(meta, dict):
        raise RunFolderError(f"{meta_path}: not a JSON object; restore it from a backup")
    version = meta.get("schema_version")
    if version is None:
        notes.append(f"run.json has no schema_version; read as version {SCHEMA_VERSION}")
    elif not isinstance(version, int) or isinstance(version, bool):
        raise RunFolderError(f"{meta_path}: schema_version {version!r} is not an integer")
    elif version > SCHEMA_VERSION:
        raise RunFolderError(
            f"{meta_path}: schema_version {version} is newer than this meshload reads "
            f"({SCHEMA_VERSION}); upgrade meshload (pip install -U meshload)"
        )
    return meta


def request_parts(folder: Path) -> list[Path]:
    """requests.parquet and/or requests/*.parquet (one part per worker), in name order."""
    parts = [folder / "requests.parquet"] if (folder / "requests.parquet").is_file() else []
    if (folder / "requests").is_dir():
        parts += sorted((folder / "requests").glob("*.parquet"))
    return parts


def _read_requests(folder: Path, notes: list[str]) -> pd.DataFrame:
    parts = request_parts(folder)
    if not parts:
        notes.append("no request records (requests.parquet or requests/*.parquet)")
        return empty_frame(REQUEST_COLUMNS)
    tables: list[pa.Table] = []
    for part in parts:
        try:
            tables.append(pq.read_table(part, read_dictionary=_categorical(part, REQUEST_COLUMNS)))
        except (OSError, pa.ArrowException) as exc:
            rel = part.relative_to(folder)
            notes.append(f"{rel}: unreadable, skipped ({_first_line(exc)})")
    if not tables:
        return empty_frame(REQUEST_COLUMNS)
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as exc:
        raise RunFolderError(
            f"{folder}: request parts have clashing columns ({_first_line(exc)}); "
            "remove the part written by another meshload version"
        ) from None
    if "start_ns" in table.column_names and not _ascending(table.column("start_ns")):
        table = table.sort_by("start_ns")
    frame, missing = from_arrow(table, REQUEST_COLUMNS, REQUEST_OPTIONAL_COLUMNS)
    if missing:
        notes.append(f"request records lack column(s) {', '.join(missing)}; filled with nulls")
    return frame


def _read_single(
    path: Path, columns: Mapping[str, str], notes: list[str], what: str
) -> pd.DataFrame:
    if not path.is_file():
        notes.append(f"no {what} ({path.name} absent)")
        return empty_frame(columns)
    try:
        table = pq.read_table(path, read_dictionary=_categorical(path, columns))
    except (OSError, pa.ArrowException) as exc:
        notes.append(f"{path.name}: unreadable, {what} left out ({_first_line(exc)})")
        return empty_frame(columns)
    if what == "metrics":
        table = _metrics_table(table)
    frame, missing = from_arrow(table, columns)
    if missing:
        notes.append(f"{path.name} lacks column(s) {', '.join(missing)}; filled with nulls")
    return frame


def _metrics_table(table: pa.Table) -> pa.Table:
    """Accept `t` as a timestamp and labels as one column per label (both allowed by DESIGN)."""
    if "t" in table.column_names and pa.types.is_timestamp(table.column("t").type):
        seconds = table.column("t").cast(pa.timestamp("ns")).cast(pa.int64()).to_numpy() / 1e9
        table = table.set_column(table.column_names.index("t"), "t", pa.array(seconds))
    if "labels" in table.column_names:
        return table
    label_names = [c for c in table.column_names if c not in METRIC_COLUMNS]
    frame = table.select(label_names).to_pandas()
    labels = [
        labels_json({k: v for k, v in zip(label_names, row, strict=True) if isinstance(v, str)})
        for row in frame.itertuples(index=False, name=None)
    ]
    kept = [c for c in table.column_names if c in METRIC_COLUMNS]
    return table.select(kept).append_column("labels", pa.array(labels, type=pa.large_string()))


def save_frame(frame: pd.DataFrame, path: Path, columns: Mapping[str, str]) -> None:
    """Write a frame as parquet atomically: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(to_arrow(frame, columns), tmp)
    os.replace(tmp, path)


def _categorical(path: Path, columns: Mapping[str, str]) -> list[str]:
    """Categorical columns present in the file, read as dictionaries (no string copies)."""
    names = pq.read_schema(path).names
    return [n for n, dtype in columns.items() if dtype == "category" and n in names]


def _ascending(values: pa.ChunkedArray) -> bool:
    flat = values.combine_chunks()
    if len(flat) < 2:
        return True
    return bool(pc.all(pc.greater_equal(flat[1:], flat[:-1])).as_py())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
