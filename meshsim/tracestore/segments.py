"""Spilled spans on disk: one parquet file per spill, sorted by trace id, small row groups.

Sorting by trace id puts a trace's spans side by side, so fetching a trace reads one row
group (a few hundred kB), found by bisecting the groups' first trace ids. Each segment keeps
in memory only its time range, its services and a sorted array of 8-byte trace-id prefixes
(8 bytes per trace) to tell whether a trace may be in it at all. Searches read the small index
columns and filter them with pyarrow; rows are built only for the spans that matched.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from meshcore.runfolder import write_parquet
from meshsim.tracestore.query import TraceQuery
from meshsim.tracestore.receiver import SERVICE, START_NS, TRACE_ID, Row
from meshsim.tracestore.tags import TagHint

ROW_GROUP_ROWS = 1024
# Only columns that repeat are worth a dictionary: trying one for every span's own bytes and
# ids costs a third of the write, and nothing reads the files' statistics (the segment keeps
# what it needs in memory).
_DICTIONARY_COLUMNS = ["service", "name", "kind", "status", "resource", "scope"]
_CACHED_GROUPS = 64
_CACHED_INDEXES = 8
_CHUNK = 4096
COLUMNS = (
    "trace_id",
    "span_id",
    "start_ns",
    "end_ns",
    "service",
    "name",
    "kind",
    "status",
    "resource",
    "scope",
    "span",
)
INDEX_COLUMNS = ["trace_id", "start_ns", "end_ns", "service", "name", "kind"]
SCHEMA = pa.schema(
    [
        ("trace_id", pa.binary(16)),
        ("span_id", pa.binary(8)),
        ("start_ns", pa.int64()),
        ("end_ns", pa.int64()),
        ("service", pa.string()),
        ("name", pa.string()),
        ("kind", pa.int32()),
        ("status", pa.int32()),
        ("resource", pa.binary()),
        ("scope", pa.binary()),
        ("span", pa.binary()),
    ]
)


def _prefix(trace_id: bytes) -> int:
    return int.from_bytes(trace_id[:8], "big")


def prefixes_of(trace_ids: Sequence[bytes]) -> np.ndarray[Any, np.dtype[np.uint64]]:
    return np.fromiter(map(_prefix, trace_ids), dtype=np.uint64, count=len(trace_ids))


@dataclass
class Segment:
    """What stays in memory of one spilled file."""

    path: Path
    count: int
    start_min_ns: int
    start_max_ns: int
    services: frozenset[str]
    group_first_ids: list[bytes]
    prefixes: np.ndarray[Any, np.dtype[np.uint64]]

    def may_hold(self, trace_id: bytes) -> bool:
        key = np.uint64(_prefix(trace_id))
        at = int(np.searchsorted(self.prefixes, key))
        return at < len(self.prefixes) and self.prefixes[at] == key

    def holding(self, keys: np.ndarray[Any, np.dtype[np.uint64]]) -> np.ndarray[Any, Any]:
        """Indices of the trace-id prefixes `keys` (see `prefixes_of`) this segment may hold:
        one vectorized lookup for many traces instead of one `may_hold` each."""
        prefixes = self.prefixes
        at = np.minimum(np.searchsorted(prefixes, keys), len(prefixes) - 1)
        return np.flatnonzero(prefixes[at] == keys)

    def groups_for(self, trace_id: bytes) -> range:
        """Row groups that can hold a trace: its spans are contiguous, maybe across groups."""
        first = max(0, bisect.bisect_left(self.group_first_ids, trace_id) - 1)
        last = bisect.bisect_right(self.group_first_ids, trace_id)
        return range(first, max(first + 1, last))


def write_segment(path: Path, rows: list[Row]) -> Segment:
    """Write rows (any order) as a segment; the file appears complete or not at all."""
    ordered = sorted(rows, key=itemgetter(TRACE_ID))  # stable: a trace keeps arrival order
    columns = list(zip(*ordered, strict=True))
    table = pa.Table.from_arrays(
        [pa.array(col, type=SCHEMA.field(i).type) for i, col in enumerate(columns)], schema=SCHEMA
    )
    write_parquet(
        path,
        table,
        row_group_size=ROW_GROUP_ROWS,
        use_dictionary=_DICTIONARY_COLUMNS,
        write_statistics=False,
    )
    starts = columns[START_NS]
    trace_ids = columns[TRACE_ID]
    ids = table.column("trace_id").combine_chunks()
    # A fixed-size binary column is one buffer of 16-byte ids: their first 8 bytes, big endian.
    halves = np.frombuffer(
        ids.buffers()[1], dtype=">u8", count=2 * len(ids), offset=16 * ids.offset
    )
    prefixes = np.unique(halves[::2].astype(np.uint64))
    return Segment(
        path=path,
        count=len(rows),
        start_min_ns=min(starts),
        start_max_ns=max(starts),
        services=frozenset(columns[SERVICE]),
        group_first_ids=list(trace_ids[::ROW_GROUP_ROWS]),
        prefixes=prefixes,
    )


class SegmentReader:
    """Reads segments back, keeping recently used row groups and index columns decoded."""

    def __init__(self) -> None:
        self._groups: OrderedDict[tuple[Path, int], list[Row]] = OrderedDict()
        self._indexes: OrderedDict[Path, pa.Table] = OrderedDict()

    def group_rows(self, segment: Segment, group: int) -> list[Row]:
        key = (segment.path, group)
        rows = self._groups.get(key)
        if rows is None:
            table = pq.ParquetFile(segment.path).read_row_group(group)
            rows = list(zip(*(table.column(name).to_pylist() for name in COLUMNS), strict=True))
            self._groups[key] = rows
            while len(self._groups) > _CACHED_GROUPS:
                self._groups.popitem(last=False)
        else:
            self._groups.move_to_end(key)
        return rows

    def trace_rows(self, segment: Segment, trace_id: bytes) -> list[Row]:
        if not segment.may_hold(trace_id):
            return []
        return [
            row
            for group in segment.groups_for(trace_id)
            for row in self.group_rows(segment, group)
            if row[TRACE_ID] == trace_id
        ]

    def _index(self, segment: Segment) -> pa.Table:
        table = self._indexes.get(segment.path)
        if table is None:
            table = pq.read_table(segment.path, columns=INDEX_COLUMNS)
            self._indexes[segment.path] = table
            while len(self._indexes) > _CACHED_INDEXES:
                self._indexes.popitem(last=False)
        else:
            self._indexes.move_to_end(segment.path)
        return table

    def _matching(self, segment: Segment, q: TraceQuery) -> tuple[pa.Table, pa.Array]:
        table = self._index(segment)
        return table, _matching(table, q)

    def latest_per_trace(
        self,
        segment: Segment,
        q: TraceQuery,
        k: int,
    ) -> list[tuple[int, bytes]]:
        """(latest matching start, trace id) of this segment's k most recent matching traces.

        A trace in the overall top k is in the top k of the segment holding its latest
        matching span, so merging the segments' top k gives the overall top k.
        """
        table, indices = self._matching(segment, q)
        if len(indices) == 0:
            return []
        spans = table.select(["trace_id", "start_ns"]).take(indices)
        latest = spans.group_by("trace_id").aggregate([("start_ns", "max")])
        if latest.num_rows > k:
            latest = latest.take(
                pc.select_k_unstable(latest, k, sort_keys=[("start_ns_max", "descending")])
            )
        return list(
            zip(latest["start_ns_max"].to_pylist(), latest["trace_id"].to_pylist(), strict=True)
        )

    def newest_first(
        self,
        segment: Segment,
        q: TraceQuery,
        hints: Sequence[TagHint],
    ) -> Iterator[tuple[int, bytes, Row]]:
        """Matching spans as (start_ns, trace id, row), newest first, decoded in chunks."""
        table = pq.read_table(segment.path)
        indices = _matching(table, q, hints)
        starts = pc.take(table["start_ns"], indices)
        ordered = pc.take(indices, pc.array_sort_indices(starts, order="descending"))
        for at in range(0, len(ordered), _CHUNK):
            part = table.take(ordered[at : at + _CHUNK])
            rows: list[Row] = list(
                zip(*(part.column(name).to_pylist() for name in COLUMNS), strict=True)
            )
            for row in rows:
                yield row[START_NS], row[TRACE_ID], row

    def forget(self) -> None:
        self._groups.clear()
        self._indexes.clear()


def _matching(table: pa.Table, q: TraceQuery, hints: Sequence[TagHint] = ()) -> pa.Array:
    """Indices of the rows passing every indexed condition and every tag hint."""
    duration = None
    if q.duration_min_ns is not None or q.duration_max_ns is not None:
        duration = pc.subtract(table["end_ns"], table["start_ns"])
    conditions = (
        (pc.equal, table["service"], q.service),
        (pc.equal, table["name"], q.operation),
        (pc.equal, table["kind"], q.span_kind),
        (pc.greater_equal, table["start_ns"], q.start_min_ns),
        (pc.less_equal, table["start_ns"], q.start_max_ns),
        (pc.greater_equal, duration, q.duration_min_ns),
        (pc.less_equal, duration, q.duration_max_ns),
    )
    masks = [compare(column, value) for compare, column, value in conditions if value is not None]
    masks.extend(_hint_mask(table, hint) for hint in hints)
    if not masks:
        return pa.array(np.arange(table.num_rows, dtype=np.int64))
    return pc.indices_nonzero(functools.reduce(pc.and_, masks))


def _hint_mask(table: pa.Table, hint: TagHint) -> pa.ChunkedArray:
    options = []
    if hint.needles:
        # One regex of escaped literals scans each column once, whatever the needle count.
        pattern = "|".join(re.escape(needle) for needle in hint.needles)
        options.append(pc.match_substring_regex(table["span"], pattern))
        options.append(pc.match_substring_regex(table["resource"], pattern))
    if hint.status is not None:
        options.append(pc.equal(table["status"], hint.status))
    if hint.kind is not None:
        options.append(pc.equal(table["kind"], hint.kind))
    if hint.scope_needle is not None:
        options.append(pc.match_substring(table["scope"], hint.scope_needle))
    return functools.reduce(pc.or_, options)
