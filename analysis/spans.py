"""`load_spans`: any supported trace source -> the spans frame of docs/design.md.

Sources: a Jaeger query URL (v1 `/api/traces`, v2 `/api/v3/traces`, a single trace URL, or
the base URL, probed), a Zipkin URL, or a file (Jaeger v1 JSON with or without the `data`
envelope, a Jaeger v2 answer, OTLP-JSON from any store, Zipkin v2 JSON). The format is read
from the content, not from the file name.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from analysis.spans_formats import FORMATS_HINT, SpanRows, parse_document
from analysis.spans_http import classify, fetch_documents, list_services, probe
from meshcore.errors import ConfigError

# Jaeger UI's largest page; more traces in a window are read by splitting the window.
DEFAULT_LIMIT = 1500


def load_spans(
    source: str | os.PathLike[str] | dict[str, Any] | list[Any],
    *,
    service: str | Sequence[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    limit: int = DEFAULT_LIMIT,
    timeout_s: float = 30.0,
    progress: TextIO | bool = True,
    notes: list[str] | None = None,
) -> pd.DataFrame:
    """Read spans into the spans frame (columns and dtypes of `analysis.frames.SPAN_COLUMNS`).

    For a URL, `service` (one name, several, or None for every service the backend knows),
    `start_ns`/`end_ns` (default: the last hour) and `limit` (traces per request; a full page
    splits its window) drive the search, and an unreachable backend raises `BackendError`.
    `progress` (True: stderr, False: silent, or a stream) gets one line per page fetched;
    `notes` a line for every search that could not read some full page (no silent cap) and
    one counting spans an answer held twice (kept once).
    For a file or an already decoded document, `service` and the window keep the traces that
    have a span of that service starting inside the window.
    """
    services = [service] if isinstance(service, str) else list(service) if service else None
    rows = SpanRows(notes=notes)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        # Pages decode to millions of small acyclic objects; the cycle collector would walk
        # them all again and again while they are built (a third of the decoding time).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for doc in fetch_documents(
                source,
                services=services,
                start_ns=start_ns,
                end_ns=end_ns,
                limit=limit,
                timeout_s=timeout_s,
                progress=_stream(progress),
                notes=notes,
            ):
                parse_document(doc, rows)
                del doc  # let a parsed page go before the next one arrives
        finally:
            if collecting:
                gc.enable()
        return rows.frame()
    if isinstance(source, dict | list):
        parse_document(source, rows)
    else:
        path = Path(source)
        try:
            for doc in _read_documents(path):
                parse_document(doc, rows)
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError) and str(exc).startswith(str(path)):
                raise
            raise ConfigError(f"{path}: {_reason(exc)}") from None
    return select_traces(rows.frame(), services=services, start_ns=start_ns, end_ns=end_ns)


def select_traces(
    spans: pd.DataFrame,
    *,
    services: Sequence[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> pd.DataFrame:
    """Whole traces having a span of one of `services` that starts in [start_ns, end_ns]."""
    if not services and start_ns is None and end_ns is None:
        return spans
    hit = pd.Series(True, index=spans.index)
    if services:
        hit &= spans["service"].isin(services)
    if start_ns is not None:
        hit &= spans["start_ns"] >= start_ns
    if end_ns is not None:
        hit &= spans["start_ns"] <= end_ns
    keep = spans["trace_id"].isin(spans.loc[hit, "trace_id"].unique())
    return spans.loc[keep].reset_index(drop=True)


def _read_documents(path: Path) -> list[Any]:
    """One JSON document, or JSON lines (a stream of /api/v3 chunks or OTLP file exporter)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such trace file; pass a JSON file or a Jaeger URL") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc.__class__.__name__})") from None
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON (line {exc.lineno}); pass a trace JSON file") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ConfigError):
        return str(exc)
    return f"a span lacks a field or holds a bad value ({exc!r}); {FORMATS_HINT}"


def list_trace_services(url: str, *, timeout_s: float = 30.0) -> list[str]:
    """The service names a Jaeger or Zipkin backend knows (raises BackendError if down)."""
    ep = classify(url)
    ep.trace_id = None
    return probe(ep, timeout_s) if ep.flavour is None else list_services(ep, timeout_s)


def _stream(progress: TextIO | bool) -> TextIO | None:
    """True: stderr as it is at call time (so redirections and test captures see it)."""
    if progress is True:
        return sys.stderr
    return progress or None
