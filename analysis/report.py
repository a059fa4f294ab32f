"""Build a run's report into its folder: summary.json, the PNG charts and report.html.

`build_report` is what `meshload report` and the end of a run call. It reads only the run folder
(after an optional telemetry fetch into it), so a report rebuilds offline at any later time.
Whatever is missing or broken in the folder becomes a line in the summary's `notes`, shown at
the top of the HTML; only a folder without a usable run.json raises (RunFolderError).

Beside the figures of `analysis.summary`, summary.json carries what the report and the gates
need from the run itself: `run` (scenario, mesh, target, times, versions, plan, roles),
`tolerance_pp`, `errors` per version, `mesh_latency` (quantiles from Istio's histograms, when
recorded), `transport` (`analysis.transport`: TLS to the gateway, mTLS per hop) and `charts`
(the PNG file names).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.backends import by_backend, label_to_backend
from analysis.changepoint import label_codes
from analysis.charts import CHART_NAMES, render_charts
from analysis.consistency import metrics_counts_from_istio, step_windows
from analysis.fetch import fetch_telemetry
from analysis.html import render_html
from analysis.latency import PERCENTILE_COLUMNS, PERCENTILES
from analysis.promql import bucket_quantile, label_table
from analysis.runfolder import load_run, unversioned_requests
from analysis.span_reading import SpanReading
from analysis.summary import build_summary, json_safe
from analysis.transport import transport_security
from analysis.versions import fill_from_traces, missing_ids
from meshcore.errors import MeshloadError, RunFolderError
from meshcore.files import write_atomic, write_json
from meshcore.runfolder import METRICS_DIR, REPORT_FILE, SPANS_DIR, SUMMARY_FILE, RunFolder

log = logging.getLogger(__name__)

# run.json keys copied into summary.json's `run`; `roles` is the pair loadgen's gates watched
RUN_KEYS = (
    "run_id",
    "scenario",
    "mesh",
    "target",
    "started_ns",
    "ended_ns",
    "versions",
    "plan",
    "roles",
    "stamps",
    "stamping",
    "replica_pods",
)
BUCKET_METRIC = "istio_request_duration_milliseconds_bucket"
TOP_ERRORS = 5
USER_COLUMNS = ("user_id", "user")


@dataclass(frozen=True)
class ReportResult:
    """What build_report wrote, and the summary it wrote into summary.json."""

    run_dir: Path
    summary: dict[str, Any]
    summary_path: Path
    html_path: Path
    chart_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def notes(self) -> list[str]:
        return list(self.summary.get("notes") or [])


def build_report(
    run_dir: str | os.PathLike[str],
    *,
    jaeger_url: str | None = None,
    prometheus_url: str | None = None,
    tolerance_pp: float = 2.0,
    progress: bool = True,
    workers: int = 1,
) -> ReportResult:
    """Load the run (fetching telemetry first when a URL is given), write every output.
    `workers` processes read a large run's spans (`analysis.span_reading`)."""
    folder = Path(run_dir)
    started = time.perf_counter()
    fetch_notes: list[str] = []
    if jaeger_url or prometheus_url:
        fetch_notes = _fetch(folder, jaeger_url, prometheus_url, progress)
    # spans are read a chunk of whole traces at a time, never all at once (analysis.span_chunks),
    # before the requests load: a run's largest frames never meet in memory
    with SpanReading(folder, workers) as reading:
        read = reading.digest(
            wanted=missing_ids(unversioned_requests(folder)),
            backend_names=label_to_backend(RunFolder(folder).read_run()),
        )
    spans = read.digest
    spans.hop_stats()  # the per-span durations go once the percentiles are taken
    log.debug(
        "spans digested in %.1f s (%d processes)", time.perf_counter() - started, read.workers
    )
    run, named = by_backend(load_run(folder, spans=False))
    meta = run.meta
    spans.coverage(run.requests)  # and the traces' keys go
    notes = [*run.notes, *read.notes, *fetch_notes, *named]
    if not (jaeger_url or prometheus_url):
        # Recorded telemetry is never suggested for a fetch: its backend may be gone.
        no_spans = spans.empty and not run.recorded(SPANS_DIR)
        notes += _unfetched(meta, no_spans, run.metrics.empty and not run.recorded(METRICS_DIR))
    counts = None
    if not run.metrics.empty:
        try:
            windows = step_windows(meta, run.requests)
            run_start = meta.get("started_ns")
            counts = metrics_counts_from_istio(
                run.metrics, windows, started_ns=run_start if isinstance(run_start, int) else None
            )
        except MeshloadError as exc:
            notes.append(f"Prometheus counts left out: {exc}")
        if counts is not None and counts.empty:
            notes.append("metrics.parquet has no istio_requests_total samples of the frontend")
            counts = None
    # loadgen records `user_id`; per-user version consistency needs it (sticky scenarios)
    users = next((c for c in USER_COLUMNS if _recorded(run.requests, c)), None)
    # a response without a version takes its trace's, for every figure per version
    filled = fill_from_traces(run.requests, spans.trace_versions())
    requests = filled.requests
    notes += filled.notes()
    options: dict[str, Any] = {
        "tolerance_pp": tolerance_pp,
        "user_col": users,
        "versions_from_traces": False,
    }
    try:
        summary = build_summary(meta, requests, spans, counts, **options)
    except RunFolderError as exc:  # broken weight events: every other figure still stands
        notes.append(f"{exc}; split and propagation left out")
        meta = {**meta, "events": []}
        summary = build_summary(meta, requests, spans, counts, **options)
    log.debug("summary built in %.1f s", time.perf_counter() - started)

    charts, chart_notes = render_charts(meta, requests, summary)
    log.debug("charts drawn in %.1f s", time.perf_counter() - started)
    transport, transport_notes = transport_security(meta, run.metrics)
    extras = {
        "run": {k: meta.get(k) for k in RUN_KEYS},
        "tolerance_pp": tolerance_pp,
        "errors": error_counts(requests),
        "mesh_latency": mesh_latency(run.metrics, started_s=_seconds(meta.get("started_ns"))),
        "transport": transport,
        "charts": [f"{name}.png" for name in charts],
    }
    notes += [*summary.pop("notes", []), *chart_notes, *transport_notes]
    summary = json_safe({**summary, **extras, "notes": list(dict.fromkeys(notes))})

    summary_path = write_json(folder / SUMMARY_FILE, summary)
    chart_paths: dict[str, Path] = {}
    for name in CHART_NAMES:
        path = folder / f"{name}.png"
        if name in charts:
            write_atomic(path, charts[name])
            chart_paths[name] = path
        elif path.exists():  # an old chart beside a new summary would contradict it
            path.unlink()
    html_path = write_atomic(folder / REPORT_FILE, render_html(summary, charts))
    log.debug("report written in %.1f s", time.perf_counter() - started)
    return ReportResult(folder, summary, summary_path, html_path, chart_paths)


def _fetch(
    folder: Path, jaeger_url: str | None, prometheus_url: str | None, progress: bool
) -> list[str]:
    """Telemetry into the folder; a failing backend is a note, a broken folder still raises."""
    try:
        return fetch_telemetry(
            folder, jaeger_url=jaeger_url, prometheus_url=prometheus_url, progress=progress
        )
    except RunFolderError:
        raise
    except (MeshloadError, OSError, ValueError) as exc:
        return [f"telemetry not fetched: {exc}"]


def _unfetched(meta: Mapping[str, Any], no_spans: bool, no_metrics: bool) -> list[str]:
    """Say how to fetch what run.json says exists but the folder lacks (never fetch unasked)."""
    telemetry = meta.get("telemetry")
    if not isinstance(telemetry, Mapping):
        return []
    out = []
    for key, flag, missing in (
        ("jaeger_url", "--jaeger-url", no_spans),
        ("prometheus_url", "--prometheus-url", no_metrics),
    ):
        url = telemetry.get(key)
        if url and missing:
            out.append(f"run.json names {url} but nothing was fetched; rerun with {flag} {url}")
    return out


def _recorded(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and bool(frame[column].notna().any())


def _seconds(ns: Any) -> float | None:
    return ns / 1e9 if isinstance(ns, int | float) and not isinstance(ns, bool) else None


_KIND = re.compile(r"^([A-Za-z_][\w.]*):\s")
_URL = re.compile(r"https?://[^/\s]+(/[^\s:,]*)?")


def error_counts(requests: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """{version: {n, errors, rate, top}}; top lists the commonest kinds of failure, each
    [label, count, example]: the label names the exception kind, the status and the grouped
    endpoint (`LocustBadStatusCode: 500 on GET /product/[id]`, the same for every product and
    every run), the example one URL path it happened on (no host or port)."""
    if requests.empty:
        return {}
    codes, names = label_codes(requests["version"])
    failed = ~requests["ok"].to_numpy(dtype=bool)
    n = np.bincount(codes, minlength=len(names))
    errors = np.bincount(codes[failed], minlength=len(names))
    out: dict[str, dict[str, Any]] = {}
    for i in np.argsort(names):
        mine = requests[failed & (codes == i)]
        groups: dict[str, list[Any]] = {}
        for text, status, method, name in zip(
            mine["error"].astype(object), mine["status"], mine["method"].astype(str),
            mine["name"].astype(str), strict=True,
        ):  # fmt: skip
            label, example = _failure(text, int(status), method, name)
            got = groups.setdefault(label, [label, 0, example])
            got[1] += 1
            got[2] = got[2] or example
        top = sorted(groups.values(), key=lambda g: (-g[1], g[0]))[:TOP_ERRORS]
        out[str(names[i])] = {
            "n": int(n[i]),
            "errors": int(errors[i]),
            "rate": float(errors[i] / n[i]) if n[i] else None,
            "top": top,
        }
    return out


def _failure(text: Any, status: int, method: str, name: str) -> tuple[str, str | None]:
    """A failed request's label (kind, status, grouped endpoint) and example URL path."""
    text = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    kind = (
        m.group(1) if (m := _KIND.match(text)) else _URL.sub(lambda u: u.group(1) or "/", text)[:80]
    )
    where = f"{status}" if status else "no response"
    if kind == f"HTTP {status}":  # the text says no more than the status
        kind = ""
    label = f"{kind + ': ' if kind else ''}{where} on {method} {name}"
    url = _URL.search(text)
    return label, (url.group(1) or "/") if url else None


def mesh_latency(
    metrics: pd.DataFrame,
    *,
    started_s: float | None = None,
    app: str = "frontend",
    reporter: str = "destination",
) -> dict[str, dict[str, Any]] | None:
    """Quantiles per destination_version from Istio's histogram over the whole recorded window.

    Each bucket series counts its reset-corrected increase from first to last sample (no
    extrapolation); a series first scraped after `started_s` was born during the run (Istio
    creates a series on its first request), so its first value counts too. Buckets are summed
    per version and `le`, then interpolated as PromQL's histogram_quantile does. None when no
    histogram samples were recorded.
    """
    if metrics.empty:
        return None
    samples = metrics[metrics["metric"].astype(str).to_numpy() == BUCKET_METRIC]
    if samples.empty:
        return None
    labels = label_table(samples, ["reporter", "destination_app", "destination_version", "le"])
    keep = (labels["reporter"] == reporter) & (labels["destination_app"] == app)
    if not keep.any():
        return None
    frame = pd.DataFrame(
        {
            "series": samples["labels"].astype(str).to_numpy(),
            "t": samples["t"].to_numpy(dtype=float),
            "value": samples["value"].to_numpy(dtype=float),
            "version": labels["destination_version"].fillna("unknown").to_numpy(),
            "le": pd.to_numeric(labels["le"], errors="coerce").to_numpy(),
        }
    )[keep.to_numpy()]
    frame = frame.sort_values(["series", "t"], kind="stable")
    value = frame["value"].to_numpy()
    series = frame["series"].to_numpy()
    same = np.concatenate(([False], series[1:] == series[:-1]))
    step = np.concatenate(([0.0], np.diff(value)))
    born = ~same & (frame["t"].to_numpy() > (np.inf if started_s is None else started_s))
    frame["increase"] = np.where(same, np.where(step >= 0, step, value), np.where(born, value, 0.0))
    buckets = frame.dropna(subset=["le"]).groupby(["version", "le"], sort=True)["increase"].sum()
    out: dict[str, dict[str, Any]] = {}
    for version, per_le in buckets.groupby(level="version", sort=True):
        bounds = per_le.index.get_level_values("le").to_numpy(dtype=float)
        counts = per_le.to_numpy(dtype=float)
        if not np.isfinite(bounds).any() or counts.max(initial=0.0) <= 0:
            continue
        # counters count whole requests: the +Inf bucket's increase is a request count
        rec: dict[str, Any] = {"n": round(float(counts[np.argmax(bounds)]))}
        for p, name in zip(PERCENTILES, PERCENTILE_COLUMNS, strict=True):
            rec[name] = bucket_quantile(p / 100.0, list(bounds), list(counts))
        out[str(version)] = rec
    return out or None


def load_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """summary.json of a run folder, built first when the folder has none yet."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return build_report(run_dir, progress=False).summary
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(
            f"{path}: unreadable ({exc.__class__.__name__}); rebuild it with `meshload report "
            f"{run_dir}`"
        ) from None
    if not isinstance(data, Mapping):
        raise RunFolderError(f"{path}: not a JSON object; rebuild it with `meshload report`")
    return dict(data)
