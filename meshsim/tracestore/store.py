"""Span storage: the newest spans in memory (a bounded count), older ones spilled to disk.

When memory holds more than `max_spans` spans, the oldest are written as one parquet segment
(see segments.py) until half the limit remains, so a steady stream writes one segment per
`max_spans / 2` spans rather than one tiny file per request. Spilled spans stay queryable.

The limit is what bounds the store's memory: measured on the embedded mesh, a span held in
memory costs about 0.9 kB, 60 % of it its own protobuf bytes (kept whole: every attribute stays
queryable), the rest the row tuple, its ids and times and the per-trace index. 20,000 spans are
about 20 MB; spilling costs the same per span whatever the segment size.

`record(folder)` also writes every span received from then on into a run folder
(`recording.Recording`); the receive path only hands it the rows it already has.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from operator import itemgetter
from pathlib import Path

from meshcore.runfolder import RunFolder
from meshsim.tracestore.query import TraceQuery
from meshsim.tracestore.receiver import END_NS, KIND, NAME, SERVICE, START_NS, TRACE_ID, Row
from meshsim.tracestore.recording import DEFAULT_FLUSH_S, Recording
from meshsim.tracestore.segments import Segment, SegmentReader, prefixes_of, write_segment
from meshsim.tracestore.tags import TagSearch

log = logging.getLogger(__name__)

DEFAULT_MAX_SPANS = 20_000
_TRACE_ID = itemgetter(TRACE_ID)
_OPERATION = itemgetter(SERVICE, NAME, KIND)


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
        self._segments: list[Segment] = []
        self._reader = SegmentReader()
        # service -> {(operation, kind): None}, insertion ordered; never shrinks on spill.
        self._operations: dict[str, dict[tuple[str, int], None]] = {}
        self.received = 0
        self.spill_error: str | None = None
        self._next_segment = 0
        self._spill_task: asyncio.Task[None] | None = None
        self.recording: Recording | None = None

    # -- writing -------------------------------------------------------------------------
    def add(self, rows: list[Row]) -> None:
        """Store rows, spilling the oldest to disk right here when over the limit."""
        self._append(rows)
        count = self._spill_due()
        if count is not None and self._spill_task is None:
            old = self._rows[:count]
            self._finish_spill(old, self._write(old, self._segment_path()))

    async def add_async(self, rows: list[Row]) -> None:
        """Store rows; a spill they make due is written in a worker thread while the event
        loop goes on serving (an exporter waiting on a slow answer times out and drops
        spans). Until the segment is complete its spans are still answered from memory."""
        self._append(rows)
        count = self._spill_due()
        if count is None or self._spill_task is not None:
            return
        old = self._rows[:count]
        self._spill_task = asyncio.create_task(self._spill_in_thread(old))

    async def _spill_in_thread(self, old: list[Row]) -> None:
        try:
            segment = await asyncio.to_thread(self._write, old, self._segment_path())
            self._finish_spill(old, segment)
        finally:
            self._spill_task = None

    async def wait_spilled(self) -> None:
        """Wait for a spill running in the background, if any."""
        while self._spill_task is not None:
            await asyncio.shield(self._spill_task)

    def _append(self, rows: list[Row]) -> None:
        if self.recording is not None:
            self.recording.add(rows)
        self._rows.extend(rows)
        by_trace = self._by_trace
        for row in rows:
            bucket = by_trace.get(row[TRACE_ID])
            if bucket is None:
                by_trace[row[TRACE_ID]] = [row]
            else:
                bucket.append(row)
        for service, name, kind in set(map(_OPERATION, rows)):
            self._operations.setdefault(service, {})[(name, kind)] = None
        self.received += len(rows)

    def _spill_due(self) -> int | None:
        if len(self._rows) <= self.max_spans:
            return None
        return len(self._rows) - self.max_spans // 2

    def _segment_path(self) -> Path:
        path = self.spill_dir / f"spans-{self._next_segment:06d}.parquet"
        self._next_segment += 1
        return path

    def _write(self, old: list[Row], path: Path) -> Segment | None:
        """Write a segment (safe in a worker thread: it touches no shared state)."""
        try:
            return write_segment(path, old)
        except OSError as exc:
            # Keep the spans in memory rather than lose them; say so once, not per batch.
            if self.spill_error is None:
                log.error(
                    "cannot spill spans to %s (%s); keeping them in memory, which "
                    "now grows past the span limit",
                    self.spill_dir,
                    exc,
                )
            self.spill_error = str(exc)
            return None

    def _finish_spill(self, old: list[Row], segment: Segment | None) -> None:
        """Swap the written rows for their segment (rows only ever join at the end, so the
        spilled ones are still the first len(old) rows)."""
        if segment is None:
            return
        self._segments.append(segment)
        del self._rows[: len(old)]
        for trace_id, n in Counter(map(_TRACE_ID, old)).items():
            # A trace's rows sit in arrival order, so the spilled ones are its first n.
            rest = self._by_trace[trace_id][n:]
            if rest:
                self._by_trace[trace_id] = rest
            else:
                del self._by_trace[trace_id]
        log.info("spilled %d spans to %s", len(old), segment.path)

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
        """Every span of a trace, spilled ones first; [] when unknown."""
        return self.traces([trace_id])[0]

    def traces(self, trace_ids: Sequence[bytes]) -> list[list[Row]]:
        """`trace` of each id, every segment asked once for all of them (a long run has
        thousands)."""
        found: list[list[Row]] = [[] for _ in trace_ids]
        if self._segments and trace_ids:
            keys = prefixes_of(trace_ids)
            for segment in self._segments:
                for at in segment.holding(keys).tolist():
                    found[at].extend(self._reader.trace_rows(segment, trace_ids[at]))
        for rows, trace_id in zip(found, trace_ids, strict=True):
            rows.extend(self._by_trace.get(trace_id, ()))
        return found

    def find_trace_ids(
        self,
        query: TraceQuery,
        tags: TagSearch | None = None,
    ) -> list[bytes]:
        """Ids of traces with a span matching the query, by their latest such span (newest
        first), at most `query.limit` of them (all when the limit is 0 or less).

        Tags are checked last, on the newest candidates first, after their hints refused
        what they could (in pyarrow for spilled spans).
        """
        segments = [seg for seg in self._segments if _may_match(seg, query)]
        memory = [row for row in self._rows if _row_matches(row, query)]
        limit = query.limit if query.limit > 0 else self.received
        if tags is None:
            return self._latest_traces(query, memory, segments, limit)
        # Newest spans first: a trace's first match is its latest, and once `limit` traces are
        # found no older span can rank above them, so the costly per-span check stops early.
        memory.sort(key=itemgetter(START_NS), reverse=True)
        found: dict[bytes, None] = {}
        for _, trace_id, row in self._newest_first(query, memory, segments, tags):
            if trace_id not in found and tags.matches(row):
                found[trace_id] = None
                if len(found) >= limit:
                    break
        return list(found)

    def _latest_traces(
        self, query: TraceQuery, memory: list[Row], segments: list[Segment], limit: int
    ) -> list[bytes]:
        """The `limit` traces with the latest matching spans, reading only the segments that
        can hold one of them.

        Segments are read newest first; once `limit` traces are known whose latest span
        starts after everything a segment holds, neither it nor any older one can change the
        answer (a span there can only lower a trace's rank), so a search on a long run reads
        a segment or two instead of every one. The answer is merged in the store's order
        (segments as spilled, then memory), as if every segment had been read."""
        latest: dict[bytes, int] = {}
        for row in memory:
            if latest.get(row[TRACE_ID], -1) < row[START_NS]:
                latest[row[TRACE_ID]] = row[START_NS]
        best = dict(latest)  # each trace's latest start known so far
        read: dict[int, list[tuple[int, bytes]]] = {}
        for at in sorted(range(len(segments)), key=lambda i: -segments[i].start_max_ns):
            if len(best) >= limit and segments[at].start_max_ns < _kth(best, limit):
                break
            found = read[at] = self._reader.latest_per_trace(segments[at], query, limit)
            for start, trace_id in found:
                if best.get(trace_id, -1) < start:
                    best[trace_id] = start
        merged: dict[bytes, int] = {}
        for at in sorted(read):
            for start, trace_id in read[at]:
                if merged.get(trace_id, -1) < start:
                    merged[trace_id] = start
        for trace_id, start in latest.items():
            if merged.get(trace_id, -1) < start:
                merged[trace_id] = start
        return heapq.nlargest(limit, merged, key=merged.__getitem__)

    def _newest_first(
        self, query: TraceQuery, memory: list[Row], segments: list[Segment], tags: TagSearch
    ) -> Iterator[tuple[int, bytes, Row]]:
        """Candidates from memory and segments merged newest first; a segment is read only
        once the merge reaches its newest start, so a search satisfied early skips old ones."""
        pending = sorted(segments, key=lambda seg: seg.start_max_ns)
        heap: list[tuple[int, int, tuple[int, bytes, Row], Iterator[tuple[int, bytes, Row]]]]
        heap = []
        order = 0

        def push(source: Iterator[tuple[int, bytes, Row]]) -> None:
            nonlocal order
            item = next(source, None)
            if item is not None:
                order += 1
                heapq.heappush(heap, (-item[0], order, item, source))

        push((row[START_NS], row[TRACE_ID], row) for row in memory)
        while heap or pending:
            while pending and (not heap or pending[-1].start_max_ns >= -heap[0][0]):
                push(self._reader.newest_first(pending.pop(), query, tags.hints))
            if not heap:
                continue
            _, _, item, source = heapq.heappop(heap)
            yield item
            push(source)

    # -- recording into a run folder -----------------------------------------------------
    def record(self, folder: RunFolder, *, flush_s: float = DEFAULT_FLUSH_S) -> Recording:
        """Write every span received from now on into `folder` (the one recording: asking
        again for the same folder keeps it, another folder closes it first)."""
        if self.recording is not None:
            if self.recording.folder.path == folder.path:
                return self.recording
            self.stop_recording()
        self.recording = Recording(folder, flush_s=flush_s)
        log.info("recording spans into %s", folder.path)
        return self.recording

    def end_recording(self) -> Recording | None:
        """Stop handing rows to the recording (close it next, maybe in a worker thread)."""
        recording, self.recording = self.recording, None
        return recording

    def stop_recording(self) -> dict[str, int] | None:
        """Write what the recording holds and close it; its counts, None when not recording."""
        recording = self.end_recording()
        return recording.close() if recording is not None else None

    def close(self) -> None:
        self.stop_recording()
        self._reader.forget()
        if self._own_dir:
            shutil.rmtree(self.spill_dir, ignore_errors=True)


def _kth(latest: dict[bytes, int], k: int) -> int:
    """The k-th highest of the traces' latest starts (k <= len(latest))."""
    return heapq.nlargest(k, latest.values())[-1]


def _may_match(segment: Segment, q: TraceQuery) -> bool:
    if q.service is not None and q.service not in segment.services:
        return False
    if q.start_min_ns is not None and segment.start_max_ns < q.start_min_ns:
        return False
    return q.start_max_ns is None or segment.start_min_ns <= q.start_max_ns


def _row_matches(row: Row, q: TraceQuery) -> bool:
    if q.service is not None and row[SERVICE] != q.service:
        return False
    if q.operation is not None and row[NAME] != q.operation:
        return False
    if q.span_kind is not None and row[KIND] != q.span_kind:
        return False
    start = row[START_NS]
    if q.start_min_ns is not None and start < q.start_min_ns:
        return False
    if q.start_max_ns is not None and start > q.start_max_ns:
        return False
    duration = row[END_NS] - start
    if q.duration_min_ns is not None and duration < q.duration_min_ns:
        return False
    return q.duration_max_ns is None or duration <= q.duration_max_ns
