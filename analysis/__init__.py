"""meshload's analysis: a run folder and telemetry backends -> tidy frames -> figures -> report.

analysis never imports loadgen or meshsim: it reads only the run folder and the backends.
Names are imported on first use (pandas, scipy and matplotlib load only when needed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analysis.changepoint import propagation as propagation
    from analysis.compare import compare_runs as compare_runs
    from analysis.consistency import consistency_table as consistency_table
    from analysis.consistency import metrics_counts_from_istio as metrics_counts_from_istio
    from analysis.fetch import fetch_telemetry as fetch_telemetry
    from analysis.gates import CheckResult as CheckResult
    from analysis.gates import check_run as check_run
    from analysis.gates import write_junit as write_junit
    from analysis.graph import service_graph as service_graph
    from analysis.hops import hop_stats as hop_stats
    from analysis.hops import hop_table as hop_table
    from analysis.hops import hop_times as hop_times
    from analysis.judge import judge as judge
    from analysis.latency import latency_over_time as latency_over_time
    from analysis.latency import latency_percentiles as latency_percentiles
    from analysis.prometheus import PrometheusClient as PrometheusClient
    from analysis.prometheus import read_metrics as read_metrics
    from analysis.report import ReportResult as ReportResult
    from analysis.report import build_report as build_report
    from analysis.runfolder import Run as Run
    from analysis.runfolder import load_run as load_run
    from analysis.spans import load_spans as load_spans
    from analysis.split import split_accuracy as split_accuracy
    from analysis.split import wilson_interval as wilson_interval
    from analysis.sticky import cohort_reach as cohort_reach
    from analysis.sticky import stickiness as stickiness
    from analysis.summary import build_summary as build_summary

_WHERE = {
    "CheckResult": "analysis.gates",
    "ReportResult": "analysis.report",
    "build_report": "analysis.report",
    "check_run": "analysis.gates",
    "compare_runs": "analysis.compare",
    "write_junit": "analysis.gates",
    "PrometheusClient": "analysis.prometheus",
    "Run": "analysis.runfolder",
    "build_summary": "analysis.summary",
    "cohort_reach": "analysis.sticky",
    "consistency_table": "analysis.consistency",
    "fetch_telemetry": "analysis.fetch",
    "hop_stats": "analysis.hops",
    "hop_table": "analysis.hops",
    "hop_times": "analysis.hops",
    "judge": "analysis.judge",
    "latency_over_time": "analysis.latency",
    "latency_percentiles": "analysis.latency",
    "load_run": "analysis.runfolder",
    "load_spans": "analysis.spans",
    "metrics_counts_from_istio": "analysis.consistency",
    "propagation": "analysis.changepoint",
    "read_metrics": "analysis.prometheus",
    "service_graph": "analysis.graph",
    "split_accuracy": "analysis.split",
    "stickiness": "analysis.sticky",
    "wilson_interval": "analysis.split",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
