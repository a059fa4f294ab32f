"""The report's charts as PNG bytes, drawn with matplotlib's Agg canvas (no display, no pyplot).

Plotting is kept apart from the figures: the series drawn here are bucketed with numpy
(bincount over time buckets, a few hundred points per line) or read from summary.json, so a run
of a million requests draws as fast as one of a thousand. Every label that came from outside
(versions, services) goes through `analysis.chart_png.label`; the service graph is drawn in
analysis/graph_chart.py.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.changepoint import label_codes, weight_events
from analysis.chart_png import DPI, label, png
from analysis.graph_chart import plot_graph
from analysis.latency import latency_over_time

CHART_NAMES = (
    "split_over_time",
    "latency_over_time",
    "latency_cdf",
    "hops",
    "error_rate",
    "service_graph",
)
_NICE_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
_CDF_POINTS = 600
_PLAIN = FuncFormatter(lambda v, _pos: f"{v:g}")

log = logging.getLogger(__name__)


def bucket_seconds(duration_s: float, n_requests: int = 0, target_buckets: int = 150) -> float:
    """A round bucket length: about `target_buckets` buckets, each of 30 requests or more."""
    want = max(duration_s, 1.0) / target_buckets
    if n_requests:  # a share of 5 requests jumps by 20 points: noise, not routing
        want = max(want, duration_s * 30 / n_requests)
    return float(next((s for s in _NICE_S if s >= want), math.ceil(want)))


def version_colors(versions: Sequence[str]) -> dict[str, str]:
    """The same colour for a version on every chart ("unknown" in grey)."""
    palette = [f"C{i}" for i in range(10)]
    known = sorted(v for v in set(versions) if v != "unknown")
    colors = {v: palette[i % len(palette)] for i, v in enumerate(known)}
    colors["unknown"] = "0.6"
    return colors


def bucketed(
    requests: pd.DataFrame, bucket_s: float, t0_ns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """bucket start (s since t0), version names, requests and errors per bucket x version."""
    codes, names = label_codes(requests["version"])
    bucket_ns = int(bucket_s * 1e9)
    bucket = (requests["start_ns"].to_numpy() - t0_ns) // bucket_ns
    bucket = np.maximum(bucket, 0).astype(np.int64)
    n_buckets = int(bucket.max()) + 1 if len(bucket) else 0
    n_versions = len(names)
    flat = bucket * n_versions + codes
    size = n_buckets * n_versions
    total = np.bincount(flat, minlength=size).reshape(n_buckets, n_versions)
    failed = ~requests["ok"].to_numpy(dtype=bool)
    errors = np.bincount(flat[failed], minlength=size).reshape(n_buckets, n_versions)
    return np.arange(n_buckets) * bucket_s, names, total, errors


def configured_shares(meta: Mapping[str, Any], t0_ns: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Accept times (s since t0) of the weight changes and the configured share per version."""
    events = weight_events(meta)
    if events.empty:
        return np.array([]), pd.DataFrame()
    at = [
        a if a is not None and not pd.isna(a) else r
        for a, r in zip(events["accepted_ns"], events["requested_ns"], strict=True)
    ]
    t_s = (np.array(at, dtype=np.int64) - t0_ns) / 1e9
    shares = pd.DataFrame(list(events["configured"])).fillna(0.0)
    order = np.argsort(t_s, kind="stable")
    return t_s[order], shares.iloc[order].reset_index(drop=True)


def cdf_points(requests: pd.DataFrame, n_points: int = _CDF_POINTS) -> dict[str, np.ndarray]:
    """Per version, latencies at n_points evenly spaced ranks of its sorted sample."""
    codes, names = label_codes(requests["version"])
    latency = requests["latency_ms"].to_numpy(dtype=float)
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        values = latency[(codes == i) & ~np.isnan(latency)]
        if len(values):
            values = np.sort(values)
            ranks = np.linspace(0, len(values) - 1, min(n_points, len(values))).round()
            out[str(name)] = values[ranks.astype(np.int64)]
    return out


def _figure(height_in: float = 4.0) -> tuple[Figure, Any]:
    fig = Figure(figsize=(10, height_in), dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def _change_markers(ax: Any, summary: Mapping[str, Any], t0_ns: int) -> None:
    drawn: set[str] = set()
    for i, p in enumerate(summary.get("propagation") or []):
        label = "weight change accepted" if i == 0 else None
        if p.get("accepted_ns") is not None:
            x = (p["accepted_ns"] - t0_ns) / 1e9
            ax.axvline(x, color="0.35", ls=":", lw=1, label=label)
            top = ("data", "axes fraction")
            ax.annotate(f"step {p['step']}", (x, 1.0), xycoords=top, fontsize=7, va="bottom")
        if p.get("detected") and p.get("effective_ns") is not None:
            stamped = p.get("method") == "stamped"
            what = "first response of the new configuration" if stamped else "estimated switch"
            label = what if what not in drawn else None
            drawn.add(what)
            style = "-" if stamped else "--"
            ax.axvline((p["effective_ns"] - t0_ns) / 1e9, color="k", lw=0.8, ls=style, label=label)


def _time_axes(
    ax: Any, summary: Mapping[str, Any], t0_ns: int, bucket_s: float, ylabel: str, title: str
) -> None:
    """What the three charts over time share: change markers, labels, legend beside the plot."""
    _change_markers(ax, summary, t0_ns)
    ax.set_xlabel(f"seconds since start ({bucket_s:g} s buckets)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, pad=12)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)


def plot_split(
    requests: pd.DataFrame,
    meta: Mapping[str, Any],
    summary: Mapping[str, Any],
    t0_ns: int,
    bucket_s: float,
) -> bytes:
    t_s, names, total, _ = bucketed(requests, bucket_s, t0_ns)
    colors = version_colors(list(names))
    fig, ax = _figure()
    per_bucket = total.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = total / per_bucket[:, None] * 100.0
    share[per_bucket == 0] = np.nan
    for j, v in enumerate(names):
        ax.plot(
            t_s + bucket_s / 2, share[:, j], color=colors[v], lw=1.4, label=f"{label(v)} served"
        )
    change_s, configured = configured_shares(meta, t0_ns)
    if len(change_s):
        end_s = max(float(t_s[-1] + bucket_s) if len(t_s) else 0.0, float(change_s[-1]))
        for v in configured.columns:
            y = np.append(configured[v].to_numpy() * 100.0, configured[v].iloc[-1] * 100.0)
            ax.step(
                np.append(change_s, end_s),
                y,
                where="post",
                ls="--",
                lw=1.2,
                color=colors.get(v, "0.3"),
                label=f"{label(v)} configured",
            )
    ax.set_ylim(-3, 103)
    title = "Served split over time vs configured weights"
    _time_axes(ax, summary, t0_ns, bucket_s, "share of requests (%)", title)
    return png(fig)


def plot_latency_over_time(
    requests: pd.DataFrame, summary: Mapping[str, Any], t0_ns: int, bucket_s: float
) -> bytes:
    frame = latency_over_time(requests, bucket_s=bucket_s, t0_ns=t0_ns)
    colors = version_colors([str(v) for v in frame["version"]])
    fig, ax = _figure()
    for version, g in frame.groupby("version", sort=True):
        c = colors[str(version)]
        x = g["t_s"].to_numpy() + bucket_s / 2
        ax.plot(x, g["p50_ms"], color=c, lw=1.4, label=f"{label(version)} p50")
        ax.plot(x, g["p99_ms"], color=c, lw=1.0, ls="--", label=f"{label(version)} p99")
    if (frame["p50_ms"] > 0).any():
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(_PLAIN)
        ax.yaxis.set_minor_formatter(_PLAIN)
    title = "Client latency percentiles over time per version"
    _time_axes(ax, summary, t0_ns, bucket_s, "latency (ms)", title)
    return png(fig)


def plot_latency_cdf(requests: pd.DataFrame) -> bytes:
    points = cdf_points(requests)
    colors = version_colors(list(points))
    codes, names = label_codes(requests["version"])
    timed = np.bincount(
        codes[~np.isnan(requests["latency_ms"].to_numpy(dtype=float))], minlength=len(names)
    )
    n = dict(zip(names.tolist(), timed.tolist(), strict=True))
    fig, ax = _figure()
    for version, x in sorted(points.items()):
        y = np.linspace(0, 100, len(x)) if len(x) > 1 else np.array([100.0])
        ax.plot(x, y, color=colors[version], lw=1.4, label=f"{label(version)} (n={n[version]:,})")
    if any((x > 0).any() for x in points.values()):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.xaxis.set_minor_formatter(_PLAIN)  # a range under a decade is labelled by minor ticks
    for q in (50, 99):
        ax.axhline(q, color="0.8", lw=0.8)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests at or below (%)")
    ax.set_title("Latency CDF per version", pad=12)
    ax.legend(loc="lower right", fontsize=8)
    return png(fig)


def plot_hops(hops: Mapping[str, Any]) -> bytes:
    table = pd.DataFrame(hops.get("table") or [])
    if table.empty:
        raise ValueError("no per-hop table (needs spans of a baseline and a canary)")
    table = table.iloc[::-1].reset_index(drop=True)  # largest delta on top
    y = np.arange(len(table))
    fig = Figure(figsize=(10, max(2.5, 0.45 * len(table) + 1.2)), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, what, title in zip(
        axes, ("critical", "self"), ("critical path", "self time"), strict=True
    ):
        for off, role, color in ((0.2, "baseline", "C0"), (-0.2, "canary", "C1")):
            ax.barh(
                y + off,
                table[f"{role}_{what}_ms"].fillna(0.0),
                height=0.4,
                color=color,
                label=f"{label(hops.get(role))} ({role})",
            )
        ends = table[[f"baseline_{what}_ms", f"canary_{what}_ms"]].max(axis=1).fillna(0.0)
        for yi, end, d in zip(y, ends, table[f"delta_{what}_ms"], strict=True):
            if pd.notna(d):
                beside: dict[str, Any] = {"xytext": (4, 0), "textcoords": "offset points"}
                ax.annotate(f"Δ {d:+.2f} ms", (end, yi), fontsize=8, va="center", **beside)
        ax.set_xlim(0, max(float(ends.max()), 1e-3) * 1.3)
        ax.set_xlabel(f"{title}: mean ms per trace")
    axes[0].set_yticks(y, [label(s) for s in table["service"]])
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle("Per-hop breakdown: where the canary's latency goes (Δ = canary - baseline)")
    return png(fig)


def plot_error_rate(
    requests: pd.DataFrame, summary: Mapping[str, Any], t0_ns: int, bucket_s: float
) -> bytes:
    t_s, names, total, errors = bucketed(requests, bucket_s, t0_ns)
    colors = version_colors(list(names))
    fig, ax = _figure()
    x = t_s + bucket_s / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        for j, v in enumerate(names):
            rate = np.where(total[:, j] > 0, errors[:, j] / total[:, j] * 100.0, np.nan)
            ax.plot(x, rate, color=colors[v], lw=1.2, label=label(v))
        all_rate = errors.sum(axis=1) / total.sum(axis=1) * 100.0
    ax.plot(x, all_rate, color="0.5", lw=0.8, label="all versions")
    title = "Error rate over time per version"
    _time_axes(ax, summary, t0_ns, bucket_s, "failed requests (%)", title)
    return png(fig)


def render_charts(
    meta: Mapping[str, Any], requests: pd.DataFrame, summary: Mapping[str, Any]
) -> tuple[dict[str, bytes], list[str]]:
    """Every chart that can be drawn as PNG bytes, and a note for each one that cannot."""
    starts = requests["start_ns"].to_numpy()
    started = meta.get("started_ns")
    if isinstance(started, bool) or not isinstance(started, int):
        started = int(starts.min()) if len(starts) else 0
    t0_ns = min(started, int(starts.min())) if len(starts) else started
    end_ns = int(starts.max()) if len(starts) else t0_ns
    bucket_s = bucket_seconds((end_ns - t0_ns) / 1e9, len(requests))
    has_requests = len(requests) > 0
    makers: dict[str, Callable[[], bytes]] = {
        "split_over_time": lambda: plot_split(requests, meta, summary, t0_ns, bucket_s),
        "latency_over_time": lambda: plot_latency_over_time(requests, summary, t0_ns, bucket_s),
        "latency_cdf": lambda: plot_latency_cdf(requests),
        "hops": lambda: plot_hops(summary.get("hops") or {}),
        # errors are rare: coarser buckets keep a 2 % rate from reading as 0 % then 14 %
        "error_rate": lambda: plot_error_rate(requests, summary, t0_ns, 4 * bucket_s),
        "service_graph": lambda: plot_graph(summary.get("graph") or []),
    }
    needs_requests = {"split_over_time", "latency_over_time", "latency_cdf", "error_rate"}
    charts: dict[str, bytes] = {}
    notes: list[str] = []
    for name, make in makers.items():
        if name in needs_requests and not has_requests:
            notes.append(f"chart {name} not drawn: no request records")
            continue
        try:
            charts[name] = make()
        except Exception as exc:  # a chart that cannot be drawn must never cost the report
            log.debug("chart %s failed", name, exc_info=True)
            notes.append(f"chart {name} not drawn: {exc}")
    return charts, notes
