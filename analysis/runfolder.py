"""Read a run folder (`meshcore.runfolder`) into tidy frames.

A run cut short (Ctrl-C, a crash) must still load: a broken request part is skipped and named
in `Run.notes`; absent telemetry gives empty frames with the right columns. Only a missing or
unreadable `run.json`, or one written by a newer meshload, stops the load.
"""

from __future__ import annotations

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
from meshcore.runfolder import (
    METRICS_FILE,
    REQUESTS_DIR,
    REQUESTS_FILE,
    SPANS_FILE,
    RunFolder,
    write_parquet,
)


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
    folder = RunFolder(path)
    notes: list[str] = []
    meta = folder.read_run(notes)
    requests = _read_requests(folder, notes)
    spans = _read_single(folder.file(SPANS_FILE), SPAN_COLUMNS, notes, "spans")
    metrics = _read_single(folder.file(METRICS_FILE), METRIC_COLUMNS, notes, "metrics")
    return Run(folder.path, meta, requests, spans, metrics, notes)


def _read_requests(folder: RunFolder, notes: list[str]) -> pd.DataFrame:
    parts = folder.parts()
    if not parts:
        notes.append(f"no request records ({REQUESTS_FILE} or {REQUESTS_DIR}/*.parquet)")
        return empty_frame(REQUEST_COLUMNS)
    tables: list[pa.Table] = []
    for part in parts:
        try:
            tables.append(pq.read_table(part, read_dictionary=_categorical(part, REQUEST_COLUMNS)))
        except (OSError, pa.ArrowException) as exc:
            rel = part.relative_to(folder.path)
            notes.append(f"{rel}: unreadable, skipped ({_first_line(exc)})")
    if not tables:
        return empty_frame(REQUEST_COLUMNS)
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as exc:
        raise RunFolderError(
            f"{folder.path}: request parts have clashing columns ({_first_line(exc)}); "
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
    """Accept `t` as a timestamp, labels as one column per label (docs/design.md allows both)."""
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


def save_frame(frame: pd.DataFrame, path: Path, schema: pa.Schema) -> None:
    """Write a frame as parquet of `schema` (meshcore.schemas), whole or not at all."""
    write_parquet(path, to_arrow(frame, schema))


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
