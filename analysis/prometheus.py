"""Prometheus's HTTP API -> the metrics frame (`t` epoch s, `metric`, `labels` JSON, `value`).

`raw_samples` reads the stored samples themselves (range-vector queries), which is what
`analysis.promql` needs to reproduce `increase`/`rate` exactly; `query_range` reads values
resampled on a step grid, chunked to stay under Prometheus's 11,000 points per series.

An answer can succeed and still say something is off: `warnings` (a remote-read endpoint or
store that did not answer, so the data may be partial; PromQL's own warnings since 2.48) and
`infos` (PromQL infos of newer versions, e.g. "metric might not be a counter"). The data is
kept and each remark becomes a note, once. Native-histogram series (`histogram`/`histograms`
instead of `value`/`values`) have no float to put in the frame: they are left out and a note
counts them.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.frames import METRIC_COLUMNS, from_columns, labels_json
from analysis.http_json import get_json
from analysis.runfolder import Run, load_run
from meshcore.errors import BackendError

MAX_POINTS_PER_SERIES = 11_000


class PrometheusClient:
    """A small, synchronous client of Prometheus's `/api/v1` endpoints.

    `notes` says, each once, what the answers so far held beside their float data: warnings,
    infos, and one line for all the native-histogram series left out.
    """

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._remarks: list[str] = []
        self._histograms: Counter[tuple[str, str]] = Counter()  # series -> samples left out

    @property
    def notes(self) -> list[str]:
        """Warnings and infos of the answers so far, then the native histograms left out."""
        held = [histogram_note(self._histograms)] if self._histograms else []
        return [*self._remarks, *held]

    def query(self, expr: str, at_s: float | None = None) -> pd.DataFrame:
        """An instant query (vector, matrix or scalar answer) as a metrics frame."""
        params: dict[str, Any] = {"query": expr}
        if at_s is not None:
            params["time"] = _time(at_s)
        return _parse(self._get("/api/v1/query", params), self._histograms)

    def query_range(self, expr: str, start_s: float, end_s: float, step_s: float) -> pd.DataFrame:
        """A range query over [start_s, end_s], split so no request exceeds 11,000 points."""
        if step_s <= 0:
            raise ValueError("step_s must be > 0")
        span_s = step_s * (MAX_POINTS_PER_SERIES - 1)
        frames = []
        lo = start_s
        while lo <= end_s:
            hi = min(lo + span_s, end_s)
            params = {"query": expr, "start": _time(lo), "end": _time(hi), "step": _time(step_s)}
            frames.append(_parse(self._get("/api/v1/query_range", params), self._histograms))
            lo = hi + step_s
        return _concat(frames)

    def raw_samples(
        self, selector: str, start_s: float, end_s: float, *, chunk_s: float = 3600.0
    ) -> pd.DataFrame:
        """Every stored sample of `selector` with timestamp in [start_s, end_s] (as scraped)."""
        frames = []
        lo = start_s
        while lo < end_s:
            hi = min(lo + chunk_s, end_s)
            # 1 ms wider: Prometheus 3 excludes a sample sitting exactly on the left edge
            window_ms = round((hi - lo) * 1000) + 1
            frame = self.query(f"{selector}[{window_ms}ms]", at_s=hi)
            frames.append(frame[(frame["t"] >= lo) & (frame["t"] <= hi)])
            lo = hi
        return _concat(frames)

    def series(self, match: str, start_s: float, end_s: float) -> list[dict[str, str]]:
        """Label sets of the series matching `match` in the window (`/api/v1/series`)."""
        params = {"match[]": match, "start": _time(start_s), "end": _time(end_s)}
        data = self._get("/api/v1/series", params)
        return [dict(s) for s in data or []]

    def buildinfo(self) -> dict[str, str]:
        """Version facts (`/api/v1/status/buildinfo`); PromQL details changed across versions."""
        return dict(self._get("/api/v1/status/buildinfo", {}) or {})

    def _get(self, path: str, params: Mapping[str, Any]) -> Any:
        doc = get_json(self.url + path, params, timeout_s=self.timeout_s, what="Prometheus")
        if doc is None:
            raise BackendError(f"Prometheus at {self.url} has no {path}; is it Prometheus?")
        if doc.get("status") != "success":
            raise BackendError(
                f"Prometheus at {self.url} refused the query: "
                f"{doc.get('errorType', 'error')}: {doc.get('error', 'no reason given')}"
            )
        answer_notes(doc, self._remarks)
        return doc.get("data")


def answer_notes(doc: Mapping[str, Any], notes: list[str]) -> None:
    """Add the `warnings` and `infos` of a successful answer to `notes`, each once."""
    for key, kind in (("warnings", "a warning"), ("infos", "an info")):
        for remark in doc.get(key) or ():
            _add(notes, f"Prometheus answered with {kind} (its data kept): {remark}")


def parse_response(
    data: Mapping[str, Any] | None, *, notes: list[str] | None = None
) -> pd.DataFrame:
    """The `data` of an /api/v1 answer (or the whole answer) as a metrics frame.

    `notes` gets the answer's warnings and infos and a line counting the native-histogram
    series left out; without it they are dropped unsaid.
    """
    found: list[str] = [] if notes is None else notes
    if data and "status" in data:
        if data["status"] != "success":
            raise BackendError(
                f"Prometheus answered an error: {data.get('errorType', 'error')}: "
                f"{data.get('error', 'no reason given')}"
            )
        answer_notes(data, found)
        data = data.get("data")
    histograms: Counter[tuple[str, str]] = Counter()
    frame = _parse(data, histograms)
    if histograms:
        _add(found, histogram_note(histograms))
    return frame


def _parse(data: Mapping[str, Any] | None, histograms: Counter[tuple[str, str]]) -> pd.DataFrame:
    """The float samples of `data`; native-histogram samples counted per series instead."""
    columns: dict[str, list[Any]] = {"t": [], "metric": [], "labels": [], "value": []}
    result_type = (data or {}).get("resultType")
    result = (data or {}).get("result") or []
    if result_type in ("scalar", "string"):
        result = [{"metric": {}, "value": result}]
    for series in result:
        labels = dict(series.get("metric") or {})
        name = labels.pop("__name__", "")
        key = labels_json(labels)
        held = series.get("histograms") or ([series["histogram"]] if "histogram" in series else [])
        if held:  # a series may hold floats and histograms, if its type changed
            histograms[name, key] += len(held)
        points = series.get("values") or ([series["value"]] if "value" in series else [])
        for t, value in points:
            columns["t"].append(float(t))
            columns["metric"].append(name)
            columns["labels"].append(key)
            columns["value"].append(_float(value))
    return from_columns(columns, METRIC_COLUMNS)


def histogram_note(samples: Mapping[tuple[str, str], int]) -> str:
    """One line for the native-histogram samples left out, per (metric, labels) series."""
    names = sorted({name for name, _ in samples})
    shown = ", ".join(n or "(no __name__)" for n in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return (
        f"{len(samples)} native-histogram series of {shown}{more} left out "
        f"({sum(samples.values())} histogram samples): the metrics frame holds floats only; "
        "query histogram_count(), histogram_sum() or histogram_quantile() of them instead"
    )


def _add(notes: list[str], note: str) -> None:
    if note not in notes:
        notes.append(note)


def read_metrics(source: str | os.PathLike[str] | Run) -> pd.DataFrame:
    """The metrics frame of a run (a `Run` or its folder), empty if it has none."""
    run = source if isinstance(source, Run) else load_run(Path(source))
    return run.metrics


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return from_columns({}, METRIC_COLUMNS)
    frame = pd.concat(frames, ignore_index=True)
    for name in ("metric", "labels"):
        frame[name] = frame[name].astype("str").astype("category")
    frame = frame.drop_duplicates(subset=["metric", "labels", "t"], ignore_index=True)
    return frame.sort_values(["metric", "labels", "t"], ignore_index=True)


def _float(value: Any) -> float:
    # Prometheus writes "NaN", "+Inf", "-Inf" as strings; float() reads all three.
    return float(value) if value is not None else math.nan


def _time(seconds: float) -> str:
    return f"{seconds:.3f}"
