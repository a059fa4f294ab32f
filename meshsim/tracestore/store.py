"""Span storage: the newest spans in memory (a bounded count), older ones spilled to parquet.

Spilled segments stay queryable: a small index (time range, services, trace ids per segment)
decides which segments a query must read, and the last segments read are kept decoded. Spilling
drops memory to half the limit at once, so a steady stream writes one segment per
`max_spans / 2` spans instead of one tiny file per request.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from meshsim.tracestore.query import TraceQuery
from meshsim.tracestore.receiver import (
    END_NS,
    KIND,
    NAME,
    SERVICE,
    START_NS,
    TRACE_ID,
    Row,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_SPANS = 200_000
_COLUMNS = (
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
_SCHEMA = pa.schema(
    [
        ("trace_id", pa.binary(16)),
        ("span_id", pa.binary(8)),
        ("start_ns", pa.uint64()),
        ("end_ns", pa.uint64()),
        ("service", pa.string()),
        ("name", pa.string()),
        ("kind", pa.int32()),
        ("status", pa.int32()),
        ("resource", pa.binary()),
        ("scope", pa.binary()),
        ("span", pa.binary()),
    ]
)
_CACHED_SEGMENTS = 2

# Decides from a span's row whether it satisfies what the index cannot (tags).
SpanPredicate = Callable[[Row], bool]


@dataclass
class _Segment:
    path: Path
    count: int
    start_min_ns: int
    start_max_ns: int
    services: frozenset[str]


class SpanStore:
    """Every span received, queryable by trace id, service, operation, kind and start time."""

    def __init__(
        self,
        *,
        max_spans: int = DEFAULT_MAX_SPANS,
        spill_dir: Path | None = None,
    ) -> None:
        if max_spans < 2:
            raise ValueError(f"max_spans must be at least 2, got {max_spans}")
        self.max_spans = max_spans
        self._own_dir = spill_dir is None
        self.spill_dir = (
            Path(tempfile.mkdtemp(prefix="tracestore-")) if spill_dir is None else spill_dir
        )
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self._rows: list[Row] = []
        self._by_trace: dict[bytes, list[Row]] = {}
        self._segments: list[_Segment] = []
        self._disk_traces: dict[bytes, list[int]] = {}
        self._cache: OrderedDict[int, tuple[list[Row], dict[bytes, list[Row]]]] = OrderedDict()
        # service -> {(operation, kind): None}, insertion ordered; never shrinks on spill.
        self._operations: dict[str, dict[tuple[str, int], None]] = {}
        self.received = 0

    # -- writing -------------------------------------------------------------------------
    def add(self, rows: list[Row]) -> None:
        if not rows:
            return
        self._rows.extend(rows)
        by_trace = self._by_trace
        for row in rows:
            bucket = by_trace.get(row[TRACE_ID])
            if bucket is None:
                by_trace[row[TRACE_ID]] = [row]
            else:
                bucket.append(row)
        for service, name, kind in {(r[SERVICE], r[NAME], r[KIND]) for r in rows}:
            self._operations.setdefault(service, {})[(name, kind)] = None
        self.received += len(rows)
        if len(self._rows) > self.max_spans:
            self._spill(len(self._rows) - self.max_spans // 2)

    def _spill(self, count: int) -> None:
        old, self._rows = self._rows[:count], self._rows[count:]
        index = len(self._segments)
        path = self.spill_dir / f"spans-{index:06d}.parquet"
        columns = list(zip(*old, strict=True))
        table = pa.Table.from_arrays(
            [pa.array(col, type=_SCHEMA.field(i).type) for i, col in enumerate(columns)],
            schema=_SCHEMA,
        )
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
        starts = columns[START_NS]
        self._segments.append(
            _Segment(path, count, min(starts), max(starts), frozenset(columns[SERVICE]))
        )
        spilled: dict[bytes, int] = {}
        for tid in columns[TRACE_ID]:
            spilled[tid] = spilled.get(tid, 0) + 1
        for tid, n in spilled.items():
            # Rows of a trace sit in arrival order, so the spilled ones are its first n.
            rest = self._by_trace[tid][n:]
            if rest:
                self._by_trace[tid] = rest
            else:
                del self._by_trace[tid]
            self._disk_traces.setdefault(tid, []).append(index)
        log.info("spilled %d spans to %s", count, path)

    # -- reading -------------------------------------------------------------------------
    @property
    def memory_count(self) -> int:
        return len(self._rows)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def services(self) -> list[str]:
        return sorted(self._operations)

    def operations(self, service: str, span_kind: int | None = None) -> list[tuple[str, int]]:
        """(name, kind) pairs seen for a service, sorted by name, optionally of one kind."""
        ops = self._operations.get(service, {})
        return sorted(op for op in ops if span_kind is None or op[1] == span_kind)

    def trace(self, trace_id: bytes) -> list[Row]:
        """Every span of a trace, oldest stored first; [] when unknown."""
        rows: list[Row] = []
        for index in self._disk_traces.get(trace_id, ()):
            rows.extend(self._load(index)[1].get(trace_id, ()))
        rows.extend(self._by_trace.get(trace_id, ()))
        return rows

    def find_trace_ids(
        self,
        query: TraceQuery,
        matches: SpanPredicate | None = None,
    ) -> list[bytes]:
        """Ids of traces with a span matching the query, most recent first, at most limit."""
        latest: dict[bytes, int] = {}
        for rows in self._candidate_row_sets(query):
            for row in _filter(rows, query, matches):
                tid = row[TRACE_ID]
                if latest.get(tid, -1) < row[START_NS]:
                    latest[tid] = row[START_NS]
        ordered = sorted(latest, key=latest.__getitem__, reverse=True)
        return ordered[: query.limit] if query.limit > 0 else ordered

    def _candidate_row_sets(self, query: TraceQuery) -> Iterable[list[Row]]:
        for index, seg in enumerate(self._segments):
            if query.service is not None and query.service not in seg.services:
                continue
            if query.start_min_ns is not None and seg.start_max_ns < query.start_min_ns:
                continue
            if query.start_max_ns is not None and seg.start_min_ns > query.start_max_ns:
                continue
            yield self._load(index)[0]
        yield self._rows

    def _load(self, index: int) -> tuple[list[Row], dict[bytes, list[Row]]]:
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        table = pq.read_table(self._segments[index].path)
        columns = [table.column(name).to_pylist() for name in _COLUMNS]
        rows: list[Row] = list(zip(*columns, strict=True))
        by_trace: dict[bytes, list[Row]] = {}
        for row in rows:
            by_trace.setdefault(row[TRACE_ID], []).append(row)
        self._cache[index] = (rows, by_trace)
        while len(self._cache) > _CACHED_SEGMENTS:
            self._cache.popitem(last=False)
        return rows, by_trace

    def close(self) -> None:
        self._cache.clear()
        if self._own_dir:
            shutil.rmtree(self.spill_dir, ignore_errors=True)


def _filter(rows: list[Row], q: TraceQuery, matches: SpanPredicate | None) -> Iterable[Row]:
    for row in rows:
        if q.service is not None and row[SERVICE] != q.service:
            continue
        if q.operation is not None and row[NAME] != q.operation:
            continue
        if q.span_kind is not None and row[KIND] != q.span_kind:
            continue
        start = row[START_NS]
        if q.start_min_ns is not None and start < q.start_min_ns:
            continue
        if q.start_max_ns is not None and start > q.start_max_ns:
            continue
        if q.duration_min_ns is not None or q.duration_max_ns is not None:
            duration = row[END_NS] - start
            if q.duration_min_ns is not None and duration < q.duration_min_ns:
                continue
            if q.duration_max_ns is not None and duration > q.duration_max_ns:
                continue
        if matches is not None and not matches(row):
            continue
        yield row
