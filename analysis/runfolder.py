"""Read a run folder (`meshcore.runfolder`) into tidy frames.

A run cut short (Ctrl-C, a crash) must still load: a broken part is skipped and named in
`Run.notes`; absent telemetry gives empty frames with the right columns. Spans and metrics
come from the single files (`spans.parquet`, `metrics.parquet`: fetched from the backends) and
the parts the embedded mesh recorded during the run (`spans/`, `metrics/`); a recorder that
stopped before the run ended, or could not write everything, is a note too. Only a missing or
unreadable `run.json`, or one written by a newer meshload, stops the load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
    METRICS_DIR,
    METRICS_FILE,
    REQUESTS_DIR,
    REQUESTS_FILE,
    SPANS_DIR,
    SPANS_FILE,
    RunFolder,
    write_parquet,
)

# What each recorder of the embedded mesh records, and who it is, for the notes.
RECORDED = {SPANS_DIR: ("spans", "the trace store"), METRICS_DIR: ("samples", "the scraper")}


@dataclass
class Run:
    """One run's metadata and frames, plus what was missing or broken while reading it.

    `recordings` holds the state of every recorder of the embedded mesh (`spans`, `metrics`:
    `RunFolder.recordings`); empty when the telemetry was fetched or absent."""

    path: Path
    meta: dict[str, Any]
    requests: pd.DataFrame
    spans: pd.DataFrame
    metrics: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    recordings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def recorded(self, parts_dir: str) -> bool:
        """Whether the mesh recorded this telemetry (SPANS_DIR, METRICS_DIR) during the run:
        a recorder's state, or parts without one (a state that could not be written)."""
        return bool(self.recordings.get(parts_dir)) or bool(self.recorded_parts(parts_dir))

    def recorded_parts(self, parts_dir: str) -> list[Path]:
        folder = RunFolder(self.path)
        listed = folder.span_parts() if parts_dir == SPANS_DIR else folder.metric_parts()
        return [p for p in listed if p.parent.name == parts_dir]


def load_run(path: str | os.PathLike[str], *, telemetry: bool = True, spans: bool = True) -> Run:
    """Load `results/<run-id>/`: run.json, request parts, spans and metrics (unless
    `telemetry` is false: then their frames are empty and only the recorders' states read).
    `spans=False` leaves the spans on disk (an empty frame, no note about them): the report
    reads them a chunk at a time (`analysis.span_chunks`)."""
    folder = RunFolder(path)
    notes: list[str] = []
    meta = folder.read_run(notes)
    requests = _read_requests(folder, notes)
    recordings = {d: folder.recordings(d) for d in (SPANS_DIR, METRICS_DIR)}
    if telemetry:
        span_frame = (
            _read_telemetry(folder, folder.span_parts(), SPAN_COLUMNS, notes, "spans")
            if spans
            else empty_frame(SPAN_COLUMNS)
        )
        metrics = _read_telemetry(folder, folder.metric_parts(), METRIC_COLUMNS, notes, "metrics")
        for parts_dir, states in recordings.items():
            notes += recording_notes(parts_dir, states)
    else:
        span_frame, metrics = empty_frame(SPAN_COLUMNS), empty_frame(METRIC_COLUMNS)
    # The tables read are gone; Arrow's allocator keeps their pages (0.6 of 1.5 GB at 5 M
    # spans) unless told, and numpy's arrays of the figures would come on top of them.
    pa.default_memory_pool().release_unused()
    return Run(folder.path, meta, requests, span_frame, metrics, notes, recordings)


def unversioned_requests(path: str | os.PathLike[str]) -> pd.DataFrame:
    """trace_id | version of the requests that carried no version, read from the request parts
    alone (two columns, only the rows without a version: little memory whatever the run); an
    unreadable part is left to `load_run` to note."""
    columns = {"version": REQUEST_COLUMNS["version"], "trace_id": REQUEST_COLUMNS["trace_id"]}
    tables = []
    for part in RunFolder(path).parts():
        try:
            names = [c for c in columns if c in pq.read_schema(part).names]
            if len(names) < len(columns):
                continue
            table = pq.read_table(part, columns=names)
        except (OSError, pa.ArrowException):
            continue
        tables.append(
            table.filter(pc.is_null(table.column("version"))).cast(
                pa.schema([("version", pa.large_string()), ("trace_id", pa.large_string())])
            )
        )
    if not tables:
        return empty_frame(columns)
    return from_arrow(pa.concat_tables(tables), columns)[0]


def recording_notes(parts_dir: str, states: Sequence[Mapping[str, Any]]) -> list[str]:
    """A recorder that stopped before the run ended, or could not write everything."""
    what, who = RECORDED[parts_dir]
    notes = []
    for state in states:
        rows = int(state.get("rows") or 0)
        if not state.get("done"):
            notes.append(
                f"{who} stopped before the run ended: {rows} {what} recorded until then "
                f"({parts_dir}/, up to a few seconds before it stopped); later ones are missing"
            )
        if state.get("lost"):
            notes.append(f"{who} could not write {state['lost']} {what} into {parts_dir}/")
    return notes


def recorded_count(states: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(rows, parts) written by the recorders of one kind."""
    return (
        sum(int(s.get("rows") or 0) for s in states),
        sum(int(s.get("parts") or 0) for s in states),
    )


def _read_requests(folder: RunFolder, notes: list[str]) -> pd.DataFrame:
    parts = folder.parts()
    if not parts:
        notes.append(f"no request records ({REQUESTS_FILE} or {REQUESTS_DIR}/*.parquet)")
        return empty_frame(REQUEST_COLUMNS)
    held = _request_table(folder, parts, notes)
    if not held:
        return empty_frame(REQUEST_COLUMNS)
    # parts of several workers interleave: the frame is in start order
    starts = held[0].column("start_ns") if "start_ns" in held[0].column_names else None
    order = None if starts is None or _ascending(starts) else pc.sort_indices(starts)
    del starts
    # handed over, not kept: from_arrow lets each column go once converted, and takes the
    # rows in order column by column (no sorted copy of the whole table)
    frame, missing = from_arrow(held.pop(), REQUEST_COLUMNS, REQUEST_OPTIONAL_COLUMNS, order=order)
    if missing:
        notes.append(f"request records lack column(s) {', '.join(missing)}; filled with nulls")
    return frame


def _request_table(folder: RunFolder, parts: list[Path], notes: list[str]) -> list[pa.Table]:
    """Every readable request part as one table, alone in a list the caller
    empties (so no name of its own keeps it alive); empty when no part could be read."""
    tables = _read_parts(folder, parts, REQUEST_COLUMNS, notes, "skipped")
    if not tables:
        return []
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as exc:
        raise RunFolderError(
            f"{folder.path}: request parts have clashing columns ({_first_line(exc)}); "
            "remove the part written by another meshload version"
        ) from None
    del tables
    return [table]


def _read_parts(
    folder: RunFolder, parts: list[Path], columns: Mapping[str, str], notes: list[str], fate: str
) -> list[pa.Table]:
    """Every readable part (categorical columns as dictionaries); an unreadable one is a note
    saying its `fate`."""
    tables = []
    for part in parts:
        try:
            tables.append(pq.read_table(part, read_dictionary=_categorical(part, columns)))
        except (OSError, pa.ArrowException) as exc:
            rel = part.relative_to(folder.path)
            notes.append(f"{rel}: unreadable, {fate} ({_first_line(exc)})")
    return tables


def _read_telemetry(
    folder: RunFolder, parts: list[Path], columns: Mapping[str, str], notes: list[str], what: str
) -> pd.DataFrame:
    """The single file and the recorded parts of spans or metrics, as one frame."""
    single, parts_dir = (SPANS_FILE, SPANS_DIR) if what == "spans" else (METRICS_FILE, METRICS_DIR)
    if not parts:
        notes.append(f"no {what} ({single} and {parts_dir}/ absent)")
        return empty_frame(columns)
    tables = [
        _dictionaries(_metrics_table(table) if what == "metrics" else table, columns)
        for table in _read_parts(folder, parts, columns, notes, f"{what} left out")
    ]
    if not tables:
        return empty_frame(columns)
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as exc:
        notes.append(f"{what} files have clashing columns ({_first_line(exc)}); {what} left out")
        return empty_frame(columns)
    frame, missing = from_arrow(table, columns)
    if missing:
        notes.append(f"{what} lack column(s) {', '.join(missing)}; filled with nulls")
    if what == "spans" and len(tables) > 1 and parts[0] == folder.file(single):
        # Fetched and recorded both (an older report): a span counts once.
        dup = frame.duplicated(subset=["trace_id", "span_id"])
        if dup.any():
            frame = frame.loc[~dup].reset_index(drop=True)
    return frame


def _dictionaries(table: pa.Table, columns: Mapping[str, str]) -> pa.Table:
    """Categorical columns dictionary-encoded, so the files of a run concatenate."""
    for name, dtype in columns.items():
        if dtype == "category" and name in table.column_names:
            column = table.column(name)
            if not pa.types.is_dictionary(column.type):
                at = table.column_names.index(name)
                encoded = pc.dictionary_encode(column.cast(pa.string()))
                table = table.set_column(at, name, encoded)
    return table


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
