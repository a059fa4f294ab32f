"""Recording into a run folder: every span received, as parts of the folder, while the run goes.

`Recording.add` is all the receive path does (it keeps references to the rows); a thread
turns them into `SPAN_SCHEMA` rows by the rule of `meshcore.spanrows` and writes them as
`spans/tracestore-<pid>-<seq>.parquet` every `flush_s`, with the recorder's state beside them
(`RunFolder.write_recording`). A store killed mid-run so leaves every span it received up to
`flush_s` before; `close()` writes the rest and marks the recording done.

A write that fails is logged once and tried again at the next flush; rows waiting beyond
`max_pending` are dropped (oldest first) and counted as `lost`, so a full disk never grows
the store without bound; a span that cannot become a row is left out and counted as lost,
never allowed to hold the others back. Telemetry never breaks what it measures: nothing here
raises into the receiver.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshcore.runfolder import SPANS_DIR, RecorderState, RunFolder
from meshcore.spanrows import SpanColumns, otlp_tags
from meshsim.tracestore.otlp import resource_of, scope_of, value_to_raw
from meshsim.tracestore.receiver import END_NS, RESOURCE, SCOPE, SPAN, START_NS, Row

log = logging.getLogger(__name__)

WRITER = "tracestore"
DEFAULT_FLUSH_S = 2.0
DEFAULT_MAX_PENDING = 1_000_000
_NO_PARENT = b"\x00" * 8
# What a malformed span raises on its way to a row (never the disk's errors: those are retried).
_UNCONVERTIBLE = (pa.ArrowException, ValueError, TypeError, DecodeError)


@lru_cache(maxsize=4096)
def _resource(raw: bytes) -> tuple[str | None, dict[str, Any]]:
    """A resource's `service.name` and attributes (a mesh has few, shared by every span)."""
    attributes = {kv.key: value_to_raw(kv.value) for kv in resource_of(raw).attributes}
    name = attributes.get("service.name")
    return (str(name) if name is not None else None), attributes


def span_table(rows: Sequence[Row]) -> pa.Table:
    """Stored rows as SPAN_SCHEMA rows (what analysis reads from Jaeger for the same spans)."""
    columns = SpanColumns()
    for row in rows:
        span = Span.FromString(row[SPAN])
        scope = scope_of(row[SCOPE])
        service_name, resource = _resource(row[RESOURCE])
        parent = span.parent_span_id
        columns.add(
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_id=parent.hex() if parent and parent != _NO_PARENT else None,
            service_name=service_name,
            operation=span.name,
            kind=span.kind,
            start_ns=row[START_NS],
            duration_ms=(row[END_NS] - row[START_NS]) / 1e6,
            tags=otlp_tags(
                _attributes(span),
                kind=span.kind,
                status_code=span.status.code,
                status_message=span.status.message,
                scope_name=scope.name,
                scope_version=scope.version,
                trace_state=span.trace_state,
            ),
            resource=resource,
        )
    return columns.table()


def _attributes(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        # Nearly every attribute is a string: a non-empty one is that, no conversion needed.
        text = value.string_value
        out[kv.key] = text if text else value_to_raw(value)
    return out


class Recording:
    """Spans received from now on, written into `folder` until `close()`."""

    def __init__(
        self,
        folder: RunFolder,
        *,
        flush_s: float = DEFAULT_FLUSH_S,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.folder = folder
        self.flush_s = flush_s
        self.max_pending = max_pending
        self.state = RecorderState(WRITER, os.getpid())
        self.last_received = time.monotonic()
        self.write_error: str | None = None
        self._pending: list[Row] = []
        self._lock = threading.Lock()  # between the receiver (add) and the writer thread
        self._write_lock = threading.Lock()  # one flush at a time
        self._stop = threading.Event()
        self._save_state()
        self._thread = threading.Thread(target=self._run, name="span-recording", daemon=True)
        self._thread.start()

    def add(self, rows: list[Row]) -> None:
        """Keep the rows for the next part (references only: the receive path stays as cheap)."""
        with self._lock:
            self._pending.extend(rows)
        self.last_received = time.monotonic()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def flush(self) -> None:
        """Write what is pending as one part (safe from any thread)."""
        with self._write_lock:
            with self._lock:
                rows, self._pending = self._pending, []
            if not rows:
                return
            table = self._table(rows)
            try:
                self.folder.write_telemetry_part(
                    SPANS_DIR, table, WRITER, self.state.pid, self.state.parts
                )
            except OSError as exc:
                self._keep_for_retry(rows, exc)
                return
            self.state.rows += table.num_rows
            self.state.parts += 1
            self._save_state()

    def _table(self, rows: list[Row]) -> pa.Table:
        """The rows as a part; a row that cannot be one (however often tried) is left out and
        counted as lost, never allowed to hold the others back."""
        try:
            return span_table(rows)
        except _UNCONVERTIBLE:
            pass
        good = []
        for row in rows:
            try:
                span_table([row])
            except _UNCONVERTIBLE as exc:
                self.state.lost += 1
                log.error("a span cannot be recorded (%s); left out and counted as lost", exc)
            else:
                good.append(row)
        return span_table(good)

    def _keep_for_retry(self, rows: list[Row], exc: Exception) -> None:
        if self.write_error is None:
            log.error(
                "cannot record spans into %s (%s); retrying at every flush",
                self.folder.path,
                exc,
            )
        self.write_error = str(exc)
        with self._lock:
            self._pending[:0] = rows
            over = len(self._pending) - self.max_pending
            if over > 0:
                del self._pending[:over]
                self.state.lost += over

    def _save_state(self) -> None:
        try:
            self.folder.write_recording(SPANS_DIR, self.state)
        except OSError as exc:
            if self.write_error is None:
                log.error("cannot record spans into %s (%s)", self.folder.path, exc)
            self.write_error = str(exc)

    def close(self) -> dict[str, int]:
        """Stop the thread, write the rest, mark the recording done; return its counts.

        Rows that still cannot be written count as lost."""
        state = self.state
        if not state.done:
            self._stop.set()
            self._thread.join()
            self.flush()
            with self._lock:
                state.lost += len(self._pending)
                self._pending = []
            state.done = True
            self._save_state()
        return {"rows": state.rows, "parts": state.parts, "lost": state.lost}
