"""A synthetic run folder of any size, written window by window in bounded memory.

`write_long_run` writes what a long embedded run leaves behind: run.json (the plan of
`analysis.synthetic.DEFAULT_STEPS` over the whole run, an open-model run, `completed`), request
parts under `requests/` (one per load worker per window, with each capture's done marker), span
parts under `spans/` (spans in the order they started, `span_part_rows` to a part, as the
embedded trace store's flush every 2 s leaves them at 50,000 spans/s: a trace may cross into
the next part) and metric parts under `metrics/` (the frontend
sidecar's `istio_requests_total` and `istio_request_duration_milliseconds_bucket`, reported by
the destination, per destination_version, scraped every 5 s and at each weight change, as the
embedded scraper does), with the recorders' state files marked done.

Each window's requests and spans are drawn by `analysis.synthetic.draw_requests` under one
schedule for the whole run, so a window costs the same whatever the run's length: memory stays
near one window's frames (500,000 requests, 2.5 M spans: under 1 GB). The metrics count a
request once it ended (start + latency), as a sidecar does, so they agree with the records
to the requests in flight at a scrape.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.frames import labels_json
from analysis.synthetic import (
    DEFAULT_STEPS,
    ENDPOINTS,
    T0_NS,
    Schedule,
    Traffic,
    draw_requests,
    run_info,
    schedule,
)
from meshcore.runfolder import METRICS_DIR, SPANS_DIR, CaptureEnd, RecorderState, RunFolder
from meshcore.schemas import METRIC_SCHEMA, OPEN_MODEL_SCHEMA, SPAN_SCHEMA
from meshsim.telemetry.metrics import DURATION, DURATION_BUCKETS_MS, REQUESTS

SCRAPE_EVERY_S = 5.0
# Fixed ids, so a seed gives the same folder byte for byte: one per load worker, then the mesh's.
WORKER_PID = 41_000  # + the worker's number
TRACESTORE_PID = 42_000
SCRAPER_PID = 43_000
TRACESTORE, SCRAPER = "tracestore", "scraper"
# Body bytes per endpoint (ENDPOINTS' order): fixed, so no draw is added to the synthetic run's.
RESPONSE_BYTES = (11_264, 7_936, 5_120, 96, 3_072)
LATE_TOLERANCE_MS = 1.0  # loadgen.conductor's


def write_long_run(
    folder: Path,
    n_requests: int,
    *,
    seed: int = 5,
    chunk_requests: int = 500_000,
    rps: float = 2000.0,
    span_part_rows: int = 100_000,
) -> dict[str, Any]:
    """Write a run of `n_requests` at `rps` into `folder` (created), `chunk_requests` at a
    time; returns what it wrote: requests, spans, samples, parts (per folder), bytes, seconds."""
    if n_requests < 1 or chunk_requests < 1:
        raise ValueError(f"n_requests ({n_requests}) and chunk_requests must be at least 1")
    started = time.perf_counter()
    out = RunFolder(folder)
    out.requests_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    duration_ns = int(n_requests / rps * 1e9)
    plan = schedule(DEFAULT_STEPS, duration_ns)
    traffic = Traffic(open_model=True)
    scrapes = Scrapes(plan, duration_ns)
    requests = Captures()
    spans = RecorderState(TRACESTORE, TRACESTORE_PID)
    metrics = RecorderState(SCRAPER, SCRAPER_PID)
    late = 0
    edges = [T0_NS + lo * duration_ns // n_requests for lo in range(0, n_requests, chunk_requests)]
    for k, (lo_ns, hi_ns) in enumerate(zip(edges, [*edges[1:], T0_NS + duration_ns], strict=True)):
        n = min(chunk_requests, n_requests - k * chunk_requests)
        gaps = rng.exponential(1.0, n)  # as make_run spreads its starts, within the window
        start_ns = lo_ns + (np.cumsum(gaps) / gaps.sum() * (hi_ns - lo_ns - 1)).astype(np.int64)
        drawn = draw_requests(rng, start_ns, plan, traffic)
        table = request_table(drawn.requests, drawn.traced)
        lateness_ns = start_ns - drawn.requests["intended_ns"].to_numpy()
        late += int((lateness_ns > LATE_TOLERANCE_MS * 1e6).sum())
        requests.write(out, table)
        spilled = to_schema(drawn.spans, SPAN_SCHEMA)  # in arrival order, a part a flush
        spilled = spilled.take(np.argsort(drawn.spans["start_ns"].to_numpy(), kind="stable"))
        for at in range(0, spilled.num_rows, span_part_rows):
            _record(out, SPANS_DIR, spans, spilled.slice(at, span_part_rows))
        scrapes.add(drawn.requests)
        del drawn, table  # the next window's frames replace these, not join them
        _record(out, METRICS_DIR, metrics, scrapes.until(hi_ns))
    _record(out, METRICS_DIR, metrics, scrapes.close())
    for state, parts_dir in ((spans, SPANS_DIR), (metrics, METRICS_DIR)):
        state.done = True
        out.write_recording(parts_dir, state)
    requests.close(out)
    run = run_info(f"synthetic-long-{seed}", plan, duration_ns)
    run.update(
        status="completed",
        failure=None,
        exit_code=0,
        arrival_rate=rps,
        trace_sampling=traffic.trace_sample,
        version_header="x-version",
        step_boundary="requested_ns",
        requests=requests.reconciled(out),
        open_model={
            "scheduled": n_requests,
            "late_arrivals": late,
            "late_tolerance_ms": LATE_TOLERANCE_MS,
        },
    )
    out.write_run(run)
    return {
        "requests": requests.rows,
        "spans": spans.rows,
        "samples": metrics.rows,
        "parts": {"requests": requests.parts, "spans": spans.parts, "metrics": metrics.parts},
        "bytes": sum(p.stat().st_size for p in out.path.rglob("*") if p.is_file()),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _record(folder: RunFolder, parts_dir: str, state: RecorderState, table: pa.Table) -> None:
    """A recorder's next part (unless empty) and its state, as the recorder writes them."""
    if table.num_rows:
        folder.write_telemetry_part(parts_dir, table, state.writer, state.pid, state.parts)
        state.rows += table.num_rows
        state.parts += 1
    folder.write_recording(parts_dir, state)


def to_schema(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """`frame`'s columns as `schema`'s fields (dictionaries stay dictionaries, no string copy);
    a column the frame lacks is null."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    arrays = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(frame), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def request_table(requests: pd.DataFrame, traced: np.ndarray) -> pa.Table:
    """A window's requests as request records: the columns loadgen writes that the synthetic
    frame lacks are filled as a run without users or stamps has them."""
    sampled = np.zeros(len(requests), dtype=bool)
    sampled[traced] = True
    endpoint = requests["name"].cat.codes.to_numpy()
    order = [ENDPOINTS.index(str(c)) for c in requests["name"].cat.categories]
    filled = requests.assign(
        sampled=sampled, response_length=np.asarray(RESPONSE_BYTES)[np.asarray(order)[endpoint]]
    )
    return to_schema(filled, OPEN_MODEL_SCHEMA)


class Captures:
    """The load workers' captures: each writes its own parts, then its done marker."""

    def __init__(self) -> None:
        self.rows_by_worker: dict[str, int] = {}
        self.parts_by_worker: dict[str, int] = {}

    @property
    def rows(self) -> int:
        return sum(self.rows_by_worker.values())

    @property
    def parts(self) -> int:
        return sum(self.parts_by_worker.values())

    def write(self, folder: RunFolder, table: pa.Table) -> None:
        workers = table["worker"].combine_chunks()
        codes = workers.indices.to_numpy()
        for code, worker in enumerate(workers.dictionary.to_pylist()):
            mine = table.filter(pa.array(codes == code))
            if mine.num_rows == 0:
                continue
            seq = self.parts_by_worker.get(worker, 0)
            folder.write_part(mine, worker, self._pid(worker), seq)
            self.parts_by_worker[worker] = seq + 1
            self.rows_by_worker[worker] = self.rows_by_worker.get(worker, 0) + mine.num_rows

    def close(self, folder: RunFolder) -> None:
        for worker, rows in self.rows_by_worker.items():
            parts = self.parts_by_worker[worker]
            folder.mark_done(
                CaptureEnd(worker, self._pid(worker), rows, parts, seen=rows, sent=rows)
            )

    def reconciled(self, folder: RunFolder) -> dict[str, Any]:
        """run.json's `requests`, as loadgen.outcome.reconcile writes it for a clean run."""
        by_worker = {
            w: {"on_disk": n, "written": n, "sent": n, "lost": 0, "locust": n}
            | {"closed": True, "missing": 0}
            for w, n in sorted(self.rows_by_worker.items())
        }
        return {
            "rows": self.rows,
            "parts": len(folder.parts()),
            "workers": sorted(self.rows_by_worker),
            "locust": self.rows,
            "lost": 0,
            "by_worker": by_worker,
        }

    @staticmethod
    def _pid(worker: str) -> int:
        return WORKER_PID + int(worker.lstrip("w") or 0)


class Scrapes:
    """The frontend sidecar's Istio series, as the embedded scraper samples them: every
    SCRAPE_EVERY_S from a second before the traffic, at each weight change's request, and
    once after the run ended. A series appears with its first request, as Istio creates it.

    `add` counts a window's requests into the scrapes they ended before; `until(t_ns)` gives
    the samples of the scrapes before t_ns (final once every request starting before t_ns was
    added), `close()` the rest."""

    BOUNDS_LE = [str(b) for b in DURATION_BUCKETS_MS] + ["+Inf"]

    def __init__(self, plan: Schedule, duration_ns: int) -> None:
        self.ended_ns = T0_NS + duration_ns
        grid = np.arange(T0_NS - 1_000_000_000, self.ended_ns, int(SCRAPE_EVERY_S * 1e9))
        self.t_ns = np.unique(np.concatenate([grid, plan.requested[1:]])).astype(np.int64)
        self.last_ended_ns = self.ended_ns
        self.versions = plan.versions
        self.codes = (200, 503)
        n_series, n_le = len(self.versions) * len(self.codes), len(self.BOUNDS_LE)
        # requests ending in (t[j-1], t[j]], per series and bucket; row len(t_ns): the last scrape
        self.ended = np.zeros((len(self.t_ns) + 1, n_series, n_le), dtype=np.int64)
        self.total = np.zeros((n_series, n_le), dtype=np.int64)  # of the scrapes given out
        self.given = 0
        labels = [self._labels(v, c) for v in self.versions for c in self.codes]
        self.dictionary = pa.array(
            [labels_json(lb) for lb in labels]
            + [labels_json({**lb, "le": le}) for lb in labels for le in self.BOUNDS_LE]
        )

    @staticmethod
    def _labels(version: str, code: int) -> dict[str, str]:
        return {
            "reporter": "destination",
            "source_workload": "istio-ingressgateway",
            "source_workload_namespace": "istio-system",
            "destination_app": "frontend",
            "destination_version": version,
            "destination_workload": f"frontend-{version}",
            "destination_workload_namespace": "default",
            "destination_service_name": "frontend",
            "destination_canonical_revision": version,
            "request_protocol": "http",
            "response_code": str(code),
            "response_flags": "-",
            "connection_security_policy": "mutual_tls",
        }

    def add(self, requests: pd.DataFrame) -> None:
        version = requests["version"]
        seen = version.notna().to_numpy() & (requests["status"].to_numpy() != 0)
        vcode = np.array([self.versions.index(str(v)) for v in version.cat.categories])
        code = (requests["status"].to_numpy()[seen] == 503).astype(np.int64)
        series = vcode[version.cat.codes.to_numpy()[seen]] * len(self.codes) + code
        latency_ms = requests["latency_ms"].to_numpy()[seen]
        # the frontend's own time (its server span's), as its sidecar measures it
        le = np.searchsorted(DURATION_BUCKETS_MS, np.maximum(latency_ms - 0.4, 0.1), side="left")
        ended_ns = requests["start_ns"].to_numpy()[seen] + (latency_ms * 1e6).astype(np.int64)
        scrape = np.searchsorted(self.t_ns, ended_ns, side="left")
        shape = self.ended.shape
        flat = (scrape * shape[1] + series) * shape[2] + le
        self.ended += np.bincount(flat, minlength=self.ended.size).reshape(shape)
        if len(ended_ns):
            self.last_ended_ns = max(self.last_ended_ns, int(ended_ns.max()))

    def until(self, t_ns: int) -> pa.Table:
        return self._samples(int(np.searchsorted(self.t_ns, t_ns, side="left")))

    def close(self) -> pa.Table:
        """The remaining samples, the last scrape once every request had ended."""
        return self._samples(len(self.t_ns) + 1)

    def _samples(self, upto: int) -> pa.Table:
        last_ns = max(self.ended_ns, self.last_ended_ns) + 1_000_000_000
        t_s = np.append(self.t_ns, last_ns)[self.given : upto] / 1e9
        per_le = self.total + np.cumsum(self.ended[self.given : upto], axis=0)
        if len(per_le):
            self.total = per_le[-1]
        self.given = max(self.given, upto)
        n_t, n_series, n_le = per_le.shape
        count = per_le.sum(axis=2)  # (scrape, series)
        buckets = np.cumsum(per_le, axis=2)  # le is cumulative; its last is +Inf, the count
        live = count > 0
        scrape, series = np.nonzero(live)
        bucket_label = n_series + series[:, None] * n_le + np.arange(n_le)
        t = np.concatenate([t_s[scrape], np.repeat(t_s[scrape], n_le)])
        label = np.concatenate([series, bucket_label.ravel()]).astype(np.int32)
        value = np.concatenate([count[live], buckets[live].ravel()]).astype(float)
        metric = np.concatenate([np.zeros(len(series)), np.ones(len(series) * n_le)])
        return pa.Table.from_arrays(
            [
                pa.array(t, pa.float64()),
                pa.DictionaryArray.from_arrays(
                    pa.array(metric, pa.int32()), pa.array([REQUESTS, f"{DURATION}_bucket"])
                ),
                pa.DictionaryArray.from_arrays(pa.array(label), self.dictionary),
                pa.array(value, pa.float64()),
            ],
            schema=METRIC_SCHEMA,
        )
