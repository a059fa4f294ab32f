"""One record per request, from Locust's `request` event, streamed to the run folder in batches.

Latency is Locust's own `response_time`: FastHttpUser measures it with `perf_counter` as a float
in milliseconds (its rounded buckets only exist in the stats tables). The serving version comes
from the response header, the trace id from the request's context (set by `TracedSession`), the
step from the step clock at the request's start. Records wait in column lists and are written
as one parquet part per batch (columns: `meshcore.schemas.REQUEST_SCHEMA`), so memory stays
bounded and a crash loses at most one batch. A batch that cannot be written (a full or
read-only disk) stays in memory, up to `buffer_bytes`, and is written by the next flush that
succeeds; what is finally not written is counted (`rows_lost`) in the capture's end marker.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from loadgen.steps import StepClock
from meshcore.runfolder import CaptureEnd, RunFolder
from meshcore.schemas import OPEN_MODEL_SCHEMA, REQUEST_SCHEMA
from meshcore.stamps import CONFIG_HEADER, REPLICA_HEADER, config_step, replica_id

log = logging.getLogger(__name__)

_ERROR_CHARS = 300


class RequestCapture:
    """Collects request records in one process and writes them as parquet parts."""

    def __init__(
        self,
        *,
        clock: StepClock,
        version_header: str = "x-version",
        batch_rows: int = 5000,
        flush_interval_s: float = 2.0,
        open_model: bool = False,
        buffer_bytes: int = 256 * 2**20,
        token: str | None = None,
    ) -> None:
        self.clock = clock
        self.version_header = version_header
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self.buffer_bytes = buffer_bytes
        self.token = token  # the run's stamp token (meshcore.stamps); None: unstamped
        self.schema = OPEN_MODEL_SCHEMA if open_model else REQUEST_SCHEMA
        self.folder: RunFolder | None = None
        self.worker = "local"
        self.pid = os.getpid()
        self.rows_seen = 0  # request events while open
        self.rows_written = 0
        self.rows_lost = 0
        self.parts_written = 0
        self.flush_failures = 0
        self._seq = 0
        self._columns: dict[str, list[Any]] = {f.name: [] for f in self.schema}
        self._pending: list[pa.Table] = []  # batches to write, oldest first
        self._failing = False
        self._last_flush = time.monotonic()
        self._closed = True

    def open(self, folder: RunFolder, worker: str) -> None:
        """Start capturing into `folder` (records before this are not part of any run)."""
        self.folder = folder
        self.worker = worker
        self.pid = os.getpid()  # a forked worker must not reuse its parent's part names
        self.rows_seen = self.rows_written = self.rows_lost = self.parts_written = 0
        self._seq = 0
        self._pending = []
        self._closed = False

    @property
    def buffered(self) -> int:
        return len(self._columns["start_ns"])

    # -- the request event ---------------------------------------------------------------
    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float | None,
        response_length: int | None = 0,
        response: Any = None,
        context: dict[str, Any] | None = None,
        exception: BaseException | None = None,
        start_time: float | None = None,
        **_: Any,
    ) -> None:
        if self._closed:
            return
        self.rows_seen += 1
        ctx = context or {}
        start_ns = int(start_time * 1e9) if start_time is not None else time.time_ns()
        latency_ms = float(response_time) if response_time is not None else float("nan")
        c = self._columns
        c["start_ns"].append(start_ns)
        c["latency_ms"].append(latency_ms)
        c["name"].append(str(name))
        c["method"].append(str(request_type))
        c["status"].append(_status(response))
        c["ok"].append(exception is None)
        c["error"].append(_error_text(exception))
        c["version"].append(_header(response, self.version_header))
        c["trace_id"].append(ctx.get("trace_id"))
        c["sampled"].append(ctx.get("sampled"))
        c["step"].append(self.clock.step_at(start_ns))
        c["worker"].append(self.worker)
        c["user_id"].append(ctx.get("user_id"))
        c["cohort"].append(ctx.get("cohort"))
        c["response_length"].append(int(response_length or 0))
        if self.token is None:
            c["config_step"].append(None)
            c["replica"].append(None)
        else:
            c["config_step"].append(config_step(_header(response, CONFIG_HEADER), self.token))
            c["replica"].append(replica_id(_header(response, REPLICA_HEADER)))
        if "intended_ns" in c:
            intended = ctx.get("intended_ns")
            c["intended_ns"].append(intended)
            c["co_latency_ms"].append(
                (start_ns - intended) / 1e6 + latency_ms if intended is not None else latency_ms
            )
        if len(c["start_ns"]) >= self.batch_rows:
            self.flush()

    # -- writing -------------------------------------------------------------------------
    @property
    def pending_rows(self) -> int:
        return sum(t.num_rows for t in self._pending)

    def flush(self) -> int:
        """Write the buffered records as one part, after any part that failed before (kept in
        memory up to `buffer_bytes`, the oldest dropped and counted lost beyond); returns the
        rows written now."""
        self._last_flush = time.monotonic()
        if self.folder is None:
            return 0
        if self.buffered:
            columns, self._columns = self._columns, {f.name: [] for f in self.schema}
            self._pending.append(pa.Table.from_pydict(columns, schema=self.schema))
        written = 0
        while self._pending:
            table = self._pending[0]
            try:
                self.folder.write_part(table, self.worker, self.pid, self._seq)
            except Exception as e:  # a full disk must not stop the load test: keep, retry
                self.flush_failures += 1
                if not self._failing:
                    log.error(
                        "cannot write request records to %s (%s); keeping them in memory "
                        "(up to %d MB) and retrying",
                        self.folder.path,
                        e,
                        self.buffer_bytes // 2**20,
                    )
                self._failing = True
                self._bound_pending()
                break
            self._pending.pop(0)
            self._seq += 1
            self.parts_written += 1
            self.rows_written += table.num_rows
            written += table.num_rows
            if self._failing:
                log.warning("request records written to %s again", self.folder.path)
                self._failing = False
        return written

    def _bound_pending(self) -> None:
        while len(self._pending) > 1 and sum(t.nbytes for t in self._pending) > self.buffer_bytes:
            dropped = self._pending.pop(0)
            self.rows_lost += dropped.num_rows
            log.error(
                "request record buffer over %d MB: %d records dropped (%d lost so far)",
                self.buffer_bytes // 2**20,
                dropped.num_rows,
                self.rows_lost,
            )

    def flush_if_due(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def close(self, retries: int = 3, retry_s: float = 0.5) -> None:
        """Flush (retrying a failing write a few times) and mark this capture done, counting
        what could not be written; safe to call from every exit path, repeatedly."""
        if self._closed:
            return
        self.flush()
        for _ in range(retries):
            if not self._pending:
                break
            time.sleep(retry_s)
            self.flush()
        self._closed = True
        if self._pending:
            self.rows_lost += self.pending_rows
            log.error("%d request records could not be written: lost", self.pending_rows)
            self._pending.clear()
        if self.folder is not None:
            try:
                end = CaptureEnd(
                    self.worker,
                    self.pid,
                    self.rows_written,
                    self.parts_written,
                    lost=self.rows_lost,
                    seen=self.rows_seen,
                )
                self.folder.mark_done(end)
            except OSError as e:
                log.error("cannot mark the request capture done in %s: %s", self.folder.path, e)

    def flusher(self, sleep: Callable[[float], Any] = time.sleep) -> Callable[[], None]:
        """A loop for a greenlet: flush every `flush_interval_s` until closed."""

        def loop() -> None:
            while not self._closed:
                sleep(self.flush_interval_s / 4)
                self.flush_if_due()

        return loop


def _status(response: Any) -> int:
    code = getattr(response, "status_code", None)
    try:
        return int(code) if code is not None else 0
    except (TypeError, ValueError):
        return 0


def _header(response: Any, header: str) -> str | None:
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        value = headers.get(header)
    except Exception:
        return None
    return str(value) if value is not None else None


def _error_text(exception: BaseException | None) -> str | None:
    if exception is None:
        return None
    text = f"{type(exception).__name__}: {exception}"
    return text[:_ERROR_CHARS]
