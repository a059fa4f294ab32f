"""Trace backends over HTTP: Jaeger v1 `/api/traces`, Jaeger v2 `/api/v3/traces`, Zipkin v2.

A search answers at most `limit` traces, so a window that fills a page is split (into pieces
placed by where the full page's traces lie) until every page holds fewer; a window too short to
split (1 ms) is asked again with twice the limit: the whole window is read, never a silent
sample of it. Where that still fails (a backend that answers no more than some number of
traces, or ignores the window so that splitting never ends: at most `_MAX_PAGES` pages per
service), a line in `notes` says how many pages came back full. The next page is requested
while the caller parses the last. One stderr line per page shows progress. Any transport
failure is a `BackendError` with one line.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from analysis.http_json import get_json
from meshcore.errors import BackendError, ConfigError

V1, V3, ZIPKIN = "jaeger-v1", "jaeger-v3", "zipkin"
_MIN_WINDOW_NS = 1_000_000  # Zipkin counts in ms; below this a window cannot be split
_MAX_PAGES = 5000
_PIECES_BELOW = 32
_AHEAD = 2  # requests in flight: one answered while the caller parses the other
_DEFAULT_LOOKBACK_NS = 3600 * 10**9  # as Jaeger UI: the last hour
_SINGLE = (
    (V1, re.compile(r"^(?P<base>.*?)/api/traces/(?P<id>[0-9a-fA-F]+)/?$")),
    (V3, re.compile(r"^(?P<base>.*?)/api/v3/traces/(?P<id>[0-9a-fA-F]+)/?$")),
    (ZIPKIN, re.compile(r"^(?P<base>.*?)/api/v2/trace/(?P<id>[0-9a-fA-F]+)/?$")),
)
_SEARCH = (
    (V1, re.compile(r"^(?P<base>.*?)/api/traces/?$")),
    (V3, re.compile(r"^(?P<base>.*?)/api/v3/traces/?$")),
    (ZIPKIN, re.compile(r"^(?P<base>.*?)/api/v2/traces/?$")),
)
# Jaeger >= 2.1x spells these in camelCase; older v2 only knows the snake_case names.
_V3_CAMEL = {
    "query.service_name": "query.serviceName",
    "query.start_time_min": "query.startTimeMin",
    "query.start_time_max": "query.startTimeMax",
    "query.search_depth": "query.searchDepth",
}


@dataclass
class Endpoint:
    """A trace backend URL taken apart: flavour (None until probed), base, one trace or a search."""

    flavour: str | None
    base: str
    trace_id: str | None = None
    params: dict[str, str] = field(default_factory=dict)


def classify(url: str) -> Endpoint:
    """Which API a URL names: one trace, a search with parameters, or a base to probe."""
    parts = urllib.parse.urlsplit(url)
    path_url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    params = dict(urllib.parse.parse_qsl(parts.query))
    for flavour, pattern in _SINGLE:
        if m := pattern.match(path_url):
            return Endpoint(flavour, m["base"], m["id"].lower(), params)
    for flavour, pattern in _SEARCH:
        if m := pattern.match(path_url):
            return Endpoint(flavour, m["base"], None, params)
    return Endpoint(None, path_url.rstrip("/"), None, params)


def fetch_documents(
    url: str,
    *,
    services: Sequence[str] | None,
    start_ns: int | None,
    end_ns: int | None,
    limit: int,
    timeout_s: float,
    progress: TextIO | None,
    notes: list[str] | None = None,
) -> Iterator[Any]:
    """Yield the backend's JSON answers (one per page) for one trace or a windowed search;
    `notes` gets a line for every service whose search could not read some full page."""
    ep = classify(url)
    if ep.trace_id is not None:
        yield from _single(ep, timeout_s)
        return
    known = probe(ep, timeout_s) if ep.flavour is None else None
    url_service, url_start, url_end, url_limit = _take_url_window(ep)
    end = end_ns if end_ns is not None else url_end or time.time_ns()
    start = start_ns if start_ns is not None else url_start or end - _DEFAULT_LOOKBACK_NS
    limit = url_limit or limit
    wanted = list(services) if services else [url_service] if url_service else None
    if wanted is None:
        wanted = known if known is not None else list_services(ep, timeout_s)
    for service in wanted:
        yield from _search(ep, service, start, end, limit, timeout_s, progress, notes)


def list_services(ep: Endpoint, timeout_s: float) -> list[str]:
    """Service names the backend knows (for a search over all of them)."""
    path = {V1: "/api/services", V3: "/api/v3/services", ZIPKIN: "/api/v2/services"}
    doc = get_json(ep.base + path[str(ep.flavour)], timeout_s=timeout_s, what=_what(ep))
    return _services_of(doc) or []


def _services_of(doc: Any) -> list[str] | None:
    if isinstance(doc, list):
        return [str(s) for s in doc]
    if isinstance(doc, dict):
        names = doc.get("data", doc.get("services"))
        if isinstance(names, list):
            return [str(s) for s in names]
    return None


def probe(ep: Endpoint, timeout_s: float) -> list[str]:
    """Find the API flavour of a base URL by its services endpoint; return the services."""
    for flavour, path in (
        (V1, "/api/services"),
        (V3, "/api/v3/services"),
        (ZIPKIN, "/api/v2/services"),
    ):
        doc = get_json(ep.base + path, timeout_s=timeout_s, what="trace backend")
        names = _services_of(doc)
        if names is not None:
            ep.flavour = flavour
            return names
    raise BackendError(
        f"trace backend at {ep.base} answers neither Jaeger's nor Zipkin's query API; "
        "pass the Jaeger query URL (port 16686) or a Zipkin URL (port 9411)"
    )


def _single(ep: Endpoint, timeout_s: float) -> Iterator[Any]:
    path = {V1: "/api/traces/", V3: "/api/v3/traces/", ZIPKIN: "/api/v2/trace/"}
    doc = get_json(
        ep.base + path[str(ep.flavour)] + str(ep.trace_id),
        ep.params or None,
        timeout_s=timeout_s,
        what=_what(ep),
    )
    if doc is not None:  # 404: the trace is not (or no longer) stored
        yield doc


@dataclass
class _Window:
    """A piece of a search: its bounds, the limit asked, the traces a full page of it held
    before (when asked again with a larger limit), the request once sent."""

    lo: int
    hi: int
    limit: int
    before: int | None = None
    sent: Future[tuple[Any, int]] | None = None


def _search(
    ep: Endpoint,
    service: str,
    start_ns: int,
    end_ns: int,
    limit: int,
    timeout_s: float,
    progress: TextIO | None,
    notes: list[str] | None,
) -> Iterator[Any]:
    """Pages of one service's window, earliest first, fetched `_AHEAD` at a time so the
    backend answers the next page while the caller parses this one."""
    queue = [_Window(start_ns, end_ns, limit)]  # in time order
    pages = 0
    full: list[tuple[int, _Window]] = []  # pages that came back full and could not be read on
    with ThreadPoolExecutor(max_workers=_AHEAD, thread_name_prefix="trace-page") as pool:
        try:
            while queue:
                for w in queue[:_AHEAD]:
                    if w.sent is None:
                        w.sent = pool.submit(_page, ep, service, w.lo, w.hi, w.limit, timeout_s)
                w = queue.pop(0)
                assert w.sent is not None
                doc, n = w.sent.result()
                pages += 1
                if n >= w.limit and pages < _MAX_PAGES:
                    if w.hi - w.lo > _MIN_WINDOW_NS:
                        pieces = _split(w.lo, w.hi, _trace_starts_ns(doc), w.limit)
                        queue[:0] = [_Window(a, b, limit) for a, b in pieces]
                        continue
                    if w.before is None or n > w.before:  # no split left: a larger page
                        queue.insert(0, _Window(w.lo, w.hi, 2 * w.limit, n))
                        continue
                # Full, or asked again with a larger limit and answered no more than before.
                capped = n >= w.limit or (w.before is not None and n <= w.before)
                if capped:
                    full.append((n, w))
                if progress is not None:
                    flag = " (page full: some traces may be missing)" if capped else ""
                    print(
                        f"meshload: {ep.flavour} {service} {_clock(w.lo)}..{_clock(w.hi)}: "
                        f"{n} traces{flag}",
                        file=progress,
                        flush=True,
                    )
                yield doc
        finally:
            for w in queue:  # the caller stopped early or a page failed
                if w.sent is not None:
                    w.sent.cancel()
    if full and notes is not None:
        notes.append(_full_note(ep, service, full, pages))


def _full_note(ep: Endpoint, service: str, full: list[tuple[int, _Window]], pages: int) -> str:
    read = sum(n for n, _ in full)
    why = (
        f"the search stopped after {_MAX_PAGES} pages (does {_what(ep)} ignore the window?)"
        if pages >= _MAX_PAGES
        else f"{_what(ep)} answered no more however large the limit"
    )
    spans = ", ".join(f"{_clock(w.lo)}..{_clock(w.hi)}" for _, w in full[:3])
    more = f" and {len(full) - 3} more" if len(full) > 3 else ""
    return (
        f"traces of {service} may be missing: {len(full)} page(s) came back full ({read} "
        f"traces read from {spans}{more}) and {why}; how many were left out is not known"
    )


def _split(lo: int, hi: int, starts_ns: list[int], limit: int) -> list[tuple[int, int]]:
    """Pieces of a window whose page came back full, in time order, from that page's traces.

    Backends answer the newest traces, so the page shows where they lie from its oldest one
    up to `hi`: cut there every half page. Below it nothing is known: pieces as wide as the
    oldest known half page (an empty page costs little, a full one a whole page), at most
    `_PIECES_BELOW`, then one for the rest, split again by what it shows if full. A backend
    answering in another order still gets every trace, by more splitting."""
    half = max(1, limit // 2)
    starts = sorted(t for t in starts_ns if lo <= t <= hi)
    cuts = set(starts[len(starts) - half : 0 : -half])
    if starts:
        width = max(_MIN_WINDOW_NS, starts[min(half, len(starts) - 1)] - starts[0])
        edge = starts[0]
        for _ in range(_PIECES_BELOW):
            if edge <= lo:
                break
            cuts.add(edge)
            edge -= width
    bounds = sorted(c for c in cuts if lo < c <= hi)
    if not bounds:  # nothing to go by: halves
        bounds = [lo + (hi - lo) // 2 + 1]
    lows = [lo, *bounds]
    return [(a, b - 1) for a, b in zip(lows, bounds, strict=False)] + [(lows[-1], hi)]


def _trace_starts_ns(doc: Any) -> list[int]:
    """Each trace's earliest span start in a page (any flavour)."""
    firsts: list[int] = []
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):  # Jaeger v1
        for trace in doc["data"]:
            starts = [s.get("startTime") for s in trace.get("spans") or []]
            starts = [int(t) * 1000 for t in starts if t is not None]
            if starts:
                firsts.append(min(starts))
    elif isinstance(doc, list):  # Zipkin: a list of traces, each a list of spans
        for trace in doc:
            starts = [int(s["timestamp"]) * 1000 for s in trace if s.get("timestamp")]
            if starts:
                firsts.append(min(starts))
    elif isinstance(doc, dict):  # Jaeger v3: OTLP, traces mixed in resourceSpans
        by_trace: dict[str, int] = {}
        result = doc.get("result", doc)
        for rs in result.get("resourceSpans") or []:
            for scope in rs.get("scopeSpans") or []:
                for span in scope.get("spans") or []:
                    start = int(span.get("startTimeUnixNano") or 0)
                    trace_id = span.get("traceId")
                    if start and (trace_id not in by_trace or start < by_trace[trace_id]):
                        by_trace[trace_id] = start
        firsts = list(by_trace.values())
    return firsts


def _page(
    ep: Endpoint, service: str, lo: int, hi: int, limit: int, timeout_s: float
) -> tuple[Any, int]:
    url = (
        ep.base
        + {V1: "/api/traces", V3: "/api/v3/traces", ZIPKIN: "/api/v2/traces"}[str(ep.flavour)]
    )
    what = _what(ep)
    if ep.flavour == V1:
        params = {"service": service, "start": lo // 1000, "end": -(-hi // 1000), "limit": limit}
        doc = get_json(url, {**ep.params, **params}, timeout_s=timeout_s, what=what)
        if doc is None:
            raise BackendError(f"{what} at {ep.base} has no /api/traces; is it Jaeger query?")
        return doc, len(doc.get("data") or [])
    if ep.flavour == ZIPKIN:
        end_ms = -(-hi // 1_000_000)
        params = {
            "serviceName": service,
            "endTs": end_ms,
            "lookback": end_ms - lo // 1_000_000,
            "limit": limit,
        }
        doc = get_json(url, {**ep.params, **params}, timeout_s=timeout_s, what=what)
        if doc is None:
            raise BackendError(f"{what} at {ep.base} has no /api/v2/traces; is it Zipkin?")
        return doc, len(doc)
    snake = {
        "query.service_name": service,
        "query.start_time_min": _rfc3339(lo),
        "query.start_time_max": _rfc3339(hi),
        "query.search_depth": limit,
    }
    try:
        doc = get_json(url, {**ep.params, **snake}, timeout_s=timeout_s, what=what)
    except BackendError as exc:
        if "HTTP 400" not in str(exc):
            raise
        camel = {_V3_CAMEL[k]: v for k, v in snake.items()}
        doc = get_json(url, {**ep.params, **camel}, timeout_s=timeout_s, what=what)
    if doc is None:  # Jaeger v2 answers 404 "No traces found" to an empty search
        return {"result": {"resourceSpans": []}}, 0
    return doc, _count_otlp_traces(doc)


def _count_otlp_traces(doc: Any) -> int:
    result = doc.get("result", doc) if isinstance(doc, dict) else {}
    ids = {
        span.get("traceId")
        for rs in result.get("resourceSpans") or []
        for scope in rs.get("scopeSpans") or []
        for span in scope.get("spans") or []
    }
    return len(ids)


def _take_url_window(ep: Endpoint) -> tuple[str | None, int | None, int | None, int | None]:
    """Service, window and limit written into a search URL (removed from the passed-on params)."""
    p = ep.params
    if ep.flavour == V1:
        start, end = p.pop("start", None), p.pop("end", None)
        p.pop("lookback", None)
        limit = p.pop("limit", None)
        return (
            p.pop("service", None),
            int(start) * 1000 if start else None,
            int(end) * 1000 if end else None,
            int(limit) if limit else None,
        )
    if ep.flavour == ZIPKIN:
        end_ms, lookback = p.pop("endTs", None), p.pop("lookback", None)
        limit = p.pop("limit", None)
        end_at = int(end_ms) * 1_000_000 if end_ms else None
        lookback_ns = int(lookback) * 1_000_000 if lookback else None
        start_at = end_at - lookback_ns if end_at is not None and lookback_ns else None
        return p.pop("serviceName", None), start_at, end_at, int(limit) if limit else None
    values: dict[str, str | None] = {}
    for snake, camel in _V3_CAMEL.items():
        values[snake] = p.pop(snake, None) or p.pop(camel, None)
    limit = values["query.search_depth"]
    t_min, t_max = values["query.start_time_min"], values["query.start_time_max"]
    return (
        values["query.service_name"],
        _parse_rfc3339(t_min) if t_min else None,
        _parse_rfc3339(t_max) if t_max else None,
        int(limit) if limit else None,
    )


def _rfc3339(ns: int) -> str:
    seconds, frac = divmod(ns, 10**9)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def _parse_rfc3339(text: str) -> int:
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        raise ConfigError(f"time {text!r} in the URL is not RFC 3339; write 2024-01-02T03:04:05Z")
    zone = "+00:00" if m[3] == "Z" else m[3]
    seconds = int(datetime.fromisoformat(m[1] + zone).timestamp())
    return seconds * 10**9 + int((m[2] or "0").ljust(9, "0")[:9])


def _clock(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]


def _what(ep: Endpoint) -> str:
    return {V1: "Jaeger", V3: "Jaeger", ZIPKIN: "Zipkin"}.get(str(ep.flavour), "trace backend")
