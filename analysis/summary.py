"""summary.json: every figure of a run as one JSON-safe dict with a stable key order.

Each figure is computed by its own module; this one only wires them together, records what could
not be computed in `notes`, and turns NaN into null so the file is strict JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from analysis.agreement import METRICS_RULE, consistency_rows
from analysis.consistency import step_windows
from analysis.graph import graph_records
from analysis.health import run_health
from analysis.hop_stats import hop_records, hop_table
from analysis.judge import judge
from analysis.latency import latency_by_version, latency_percentiles, latency_records
from analysis.span_digest import SpanDigest, digest_spans, frame_chunks
from analysis.split import mark_steps, split_accuracy, split_records
from analysis.stamped import ESTIMATE, STAMPED, propagation
from analysis.sticky import stickiness
from analysis.versions import fill_from_traces, missing_ids
from meshcore.runfolder import SCHEMA_VERSION


def json_safe(value: Any) -> Any:
    """Plain Python for json.dumps(allow_nan=False): NaN/inf/NA -> None, numpy -> builtins."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str):
        return value
    return str(value)


def build_summary(
    run: Mapping[str, Any],
    requests: pd.DataFrame,
    spans: pd.DataFrame | SpanDigest | None = None,
    metrics_counts: pd.DataFrame | None = None,
    *,
    tolerance_pp: float = 2.0,
    margin_ms: float = 1000.0,
    baseline: str | None = None,
    canary: str | None = None,
    judge_options: Mapping[str, Any] | None = None,
    frontend: str = "frontend",
    user_col: str | None = None,
    versions_from_traces: bool = True,
) -> dict[str, Any]:
    """All figures of a run. `spans` is a frame or what `analysis.span_digest` gathered from
    one chunk of traces at a time; `metrics_counts` is step | version | requests (and the
    scrapes counted between) from `analysis.consistency.metrics_counts_from_istio`.

    Requests without a version take their trace's first (`analysis.versions`), unless the
    caller did that already (`versions_from_traces=False`)."""
    notes: list[str] = []
    digest = spans if isinstance(spans, SpanDigest) else None
    if isinstance(spans, pd.DataFrame) and not spans.empty:
        wanted = missing_ids(requests) if versions_from_traces else None
        digest = digest_spans(frame_chunks(spans), frontend=frontend, wanted=wanted)
    if versions_from_traces:
        filled = fill_from_traces(requests, digest.trace_versions() if digest else None)
        requests = filled.requests
        notes += filled.notes()
    changes = propagation(requests, run, margin_ms=margin_ms)
    split = split_accuracy(
        requests,
        run,
        changes=changes,
        tolerance_pp=tolerance_pp,
        margin_ms=margin_ms,
        user_col=user_col,
    )
    verdict = judge(
        requests, baseline=baseline, canary=canary, run=run, **dict(judge_options or {})
    )
    has_co = "co_latency_ms" in requests.columns
    by_step = latency_percentiles(requests, ("version", "step"))
    by_name = latency_percentiles(requests, ("version", "name"))

    hops: dict[str, Any] | None = None
    graph: list[dict[str, Any]] | None = None
    traced: pd.DataFrame | None = None
    coverage: float | None = None
    windows = step_windows(run, requests)
    if digest is None or digest.empty:
        notes.append("no spans: hops, graph and traced counts are missing")
    else:
        stats = digest.hop_stats()
        b, c = verdict["baseline"], verdict["canary"]
        hops = {
            "baseline": b,
            "canary": c,
            "table": hop_records(hop_table(stats, b, c)) if b and c else [],
            "by_version": hop_records(stats),
        }
        graph = graph_records(digest.graph())
        traced = digest.trace_counts(windows)
        coverage = digest.coverage(requests)
    if changes.empty:
        notes.append("run.json has no weight events: split and propagation are empty")
    if metrics_counts is None:
        notes.append("no Prometheus counts: the consistency table has no metrics column")
    notes += method_notes(run, changes)
    notes.extend(f"step {r.step}: {r.reason}" for r in changes.itertuples() if r.reason)

    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.get("run_id"),
        "run_health": run_health(run),
        "split": mark_steps(split_records(split), run, requests),
        "propagation": [
            {
                "step": r.step,
                "method": r.method,
                "accepted_ns": r.accepted_ns,
                "effective_ns": r.effective_ns,
                "detected": r.detected,
                "delay_ms": r.delay_ms,
                "delay_range_ms": [r.delay_lo_ms, r.delay_hi_ms],
                "resolution_ms": r.resolution_ms,
                "last_old_ns": r.last_old_ns,
                "stale_ms": r.stale_ms,
                "n_window": r.n_window,
                "by_replica": r.by_replica,
                "reason": r.reason or None,
            }
            for r in changes.itertuples()
        ],
        "latency": latency_by_version(latency_percentiles(requests)),
        "latency_co": (
            latency_by_version(latency_percentiles(requests, column="co_latency_ms"))
            if has_co
            else None
        ),
        "latency_by_step": latency_records(by_step, ["version", "step"]),
        "latency_by_endpoint": latency_records(by_name, ["version", "name"]),
        "judge": verdict,
        "hops": hops,
        "graph": graph,
        "consistency": {
            "counts": consistency_rows(
                requests,
                metrics_counts,
                traced,
                windows,
                (run.get("first_stamp") or {}).get("by_version"),
            ),
            "metrics_counted": METRICS_RULE if metrics_counts is not None else None,
            "trace_coverage": coverage,
        },
        "sticky": stickiness(requests, user_col=user_col) if user_col else None,
        "notes": notes,
    }
    return json_safe(summary)


def method_notes(run: Mapping[str, Any], changes: pd.DataFrame) -> list[str]:
    """How split and propagation were measured: from the stamps, or estimated."""
    if changes.empty:
        return []
    method = dict(zip(changes["step"], changes["method"], strict=True))
    later = [int(s) for s in list(method)[1:]]  # the first weights have nothing to switch from
    stamped = [s for s in later if method[s] == STAMPED]
    estimated = [s for s in later if method[s] == ESTIMATE]
    if stamped and not estimated:
        measured = "split and propagation from the stamps every response carried"
        return [f"{measured} (x-meshload-config): measured, not estimated"]
    if not estimated:
        return []
    why = run.get("stamping") or ("an older run" if "stamps" not in run else "stamps off")
    estimate = "a change-point estimate with its support interval, not a measured delay"
    if stamped:
        listed = ", ".join(map(str, estimated))
        return [f"step(s) {listed} carried no stamps ({why}): their propagation is {estimate}"]
    return [f"not stamped ({why}): propagation is {estimate}; split counts the requests after it"]
