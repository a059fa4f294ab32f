"""Copy a run's telemetry into its folder, so a report rebuilds offline and later.

Traces for the run window come from Jaeger (or Zipkin), Istio/Envoy samples from Prometheus;
both are saved as `spans.parquet` / `metrics.parquet`. What the embedded mesh already recorded
into the folder during the run (`spans/`, `metrics/`) is not fetched again: the parts hold it,
also when the backend has died since, and a fetch would count it twice. Telemetry never breaks
anything: a backend that is absent or down becomes a note for the report, never an exception.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import pyarrow as pa

from analysis.prometheus import PrometheusClient
from analysis.runfolder import Run, load_run, recorded_count, save_frame
from analysis.spans import list_trace_services, load_spans
from meshcore.errors import BackendError
from meshcore.runfolder import METRICS_DIR, METRICS_FILE, SPANS_DIR, SPANS_FILE
from meshcore.schemas import METRIC_SCHEMA, SPAN_SCHEMA

# Samples read raw (not resampled) so analysis.promql reproduces Prometheus's own answers.
DEFAULT_METRICS = (
    "istio_requests_total",
    "istio_request_duration_milliseconds_bucket",
    "istio_request_duration_milliseconds_sum",
    "istio_request_duration_milliseconds_count",
    "envoy_cluster_upstream_rq_total",
    "envoy_cluster_upstream_rq",
    "envoy_cluster_upstream_rq_time_bucket",
    "envoy_cluster_upstream_rq_time_count",
)
# Margin around the run: increase() at the run's edges needs the samples just outside it.
DEFAULT_MARGIN_S = 60.0


def fetch_telemetry(
    run_dir: str | os.PathLike[str],
    *,
    jaeger_url: str | None = None,
    prometheus_url: str | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    margin_s: float = DEFAULT_MARGIN_S,
    timeout_s: float = 30.0,
    progress: TextIO | bool = True,
) -> list[str]:
    """Fetch spans and metrics for the run window into the run folder; return notes.

    URLs default to run.json's `telemetry`. Raises only RunFolderError (no usable run.json).
    """
    run = load_run(run_dir, telemetry=False)
    telemetry: dict[str, Any] = run.meta.get("telemetry") or {}
    jaeger_url = jaeger_url or telemetry.get("jaeger_url")
    prometheus_url = prometheus_url or telemetry.get("prometheus_url")
    window = run_window_ns(run)
    if window is None:
        return ["no run window (run.json has no started_ns and there are no requests)"]
    start_ns = window[0] - int(margin_s * 1e9)
    end_ns = window[1] + int(margin_s * 1e9)
    notes: list[str] = []
    if run.recorded(SPANS_DIR):
        notes.append(_recorded(run, SPANS_DIR, "spans", jaeger_url))
    elif jaeger_url:
        notes += _fetch_spans(run, jaeger_url, start_ns, end_ns, timeout_s, progress)
    else:
        notes.append("no Jaeger URL (telemetry.jaeger_url); traces not fetched")
    if run.recorded(METRICS_DIR):
        notes.append(_recorded(run, METRICS_DIR, "samples", prometheus_url))
    elif prometheus_url:
        notes += _fetch_metrics(
            run, prometheus_url, metrics, start_ns / 1e9, end_ns / 1e9, timeout_s
        )
    else:
        notes.append("no Prometheus URL (telemetry.prometheus_url); metrics not fetched")
    return notes


def _parts(n: int) -> str:
    return f"{n:,} part" + ("" if n == 1 else "s")


def _recorded(run: Run, parts_dir: str, what: str, url: str | None) -> str:
    kind = "spans" if parts_dir == SPANS_DIR else "metrics"
    states = run.recordings.get(parts_dir)
    if states:
        rows, parts = recorded_count(states)
        held = f"{rows:,} {what} in {_parts(parts)}"
    else:  # parts whose recorder could not write its state
        held = _parts(len(run.recorded_parts(parts_dir)))
    return f"{kind} recorded during the run: {held} ({parts_dir}/); not fetched" + (
        f" from {url}" if url else ""
    )


def run_window_ns(run: Run) -> tuple[int, int] | None:
    """[started, ended] of the run; a run cut short ends at its last response (or now)."""
    requests = run.requests
    started = run.meta.get("started_ns")
    ended = run.meta.get("ended_ns")
    if started is None and not requests.empty:
        started = int(requests["start_ns"].min())
    if started is None:
        return None
    if ended is None:
        if requests.empty:
            ended = time.time_ns()
        else:
            ends = requests["start_ns"] + (requests["latency_ms"].fillna(0) * 1e6).astype("int64")
            ended = int(ends.max())
    return int(started), int(ended)


def _fetch_spans(
    run: Run, url: str, start_ns: int, end_ns: int, timeout_s: float, progress: TextIO | bool
) -> list[str]:
    try:
        services = list_trace_services(url, timeout_s=timeout_s)
        # Every request enters through the gateway and Jaeger returns whole traces, so the
        # gateway's traces are all of them; other services would fetch each trace again.
        entry = [s for s in services if "ingressgateway" in s] or services
        if not entry:
            return [f"Jaeger at {url} knows no services; no traces fetched"]
        notes: list[str] = []
        spans = load_spans(
            url,
            service=entry,
            start_ns=start_ns,
            end_ns=end_ns,
            timeout_s=timeout_s,
            progress=progress,
            notes=notes,
        )
    except BackendError as exc:
        return [f"traces not fetched: {exc}"]
    run_ids = _run_trace_ids(run)
    if run_ids:
        found = spans["trace_id"].isin(run_ids)
        traced = int(spans.loc[found, "trace_id"].nunique())
        notes.append(f"{traced} of the run's {len(run_ids)} traced requests found in the traces")
        spans = spans.loc[found].reset_index(drop=True)
    notes.append(f"{len(spans)} spans of {spans['trace_id'].nunique()} traces fetched from {url}")
    _save(run.path / SPANS_FILE, spans, SPAN_SCHEMA, notes)
    return notes


def _fetch_metrics(
    run: Run,
    url: str,
    metrics: Sequence[str],
    start_s: float,
    end_s: float,
    timeout_s: float,
) -> list[str]:
    client = PrometheusClient(url, timeout_s=timeout_s)
    frames: list[pd.DataFrame] = []
    empty: list[str] = []
    try:
        for name in metrics:
            frame = client.raw_samples(name, start_s, end_s)
            if frame.empty:
                empty.append(name)
            else:
                frames.append(frame)
    except BackendError as exc:
        return [*client.notes, f"metrics not fetched: {exc}"]
    notes = list(client.notes)  # warnings, infos, native histograms left out
    if empty:
        notes.append(f"Prometheus has no samples of {', '.join(empty)} in the run window")
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if frames:
        for name in ("metric", "labels"):
            merged[name] = merged[name].astype("str").astype("category")
        notes.append(f"{len(merged)} samples of {merged['metric'].nunique()} metrics fetched")
        _save(run.path / METRICS_FILE, merged, METRIC_SCHEMA, notes)
    return notes


def _run_trace_ids(run: Run) -> set[str]:
    ids = run.requests["trace_id"].dropna()
    return set(ids[ids != ""].str.lower())


def _save(path: Path, frame: pd.DataFrame, schema: pa.Schema, notes: list[str]) -> None:
    """Write, but never replace recorded data with an empty fetch."""
    if frame.empty and path.exists():
        notes.append(f"{path.name} kept as recorded: the fetch returned nothing")
        return
    try:
        save_frame(frame, path, schema)
    except OSError as exc:
        notes.append(f"{path.name} not written ({exc.strerror or exc}); check the folder")
