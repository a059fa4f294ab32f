"""Query-string parsing for both Jaeger APIs, with Jaeger's own parameter names and messages."""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Mapping, Sequence

from meshsim.tracestore.query import QueryError, TraceQuery, parse_go_duration_ns

V1_DEFAULT_LIMIT = 100
V1_DEFAULT_LOOKBACK_NS = 2 * 24 * 3_600_000_000_000  # Jaeger's trace query lookback: 2 days
V3_DEFAULT_SEARCH_DEPTH = 100
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_trace_id(text: str) -> bytes:
    """model.TraceIDFromString: up to 32 hex digits, shorter ids padded with zeros on the left."""
    if len(text) > 32:
        raise QueryError(f"TraceID cannot be longer than 32 hex characters: {text}")
    if not text or not re.fullmatch(r"[0-9a-fA-F]+", text):
        raise QueryError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    return bytes.fromhex(text.rjust(32, "0"))


def _go_int(name: str, text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise QueryError(
            f"unable to parse param '{name}': strconv.ParseInt: parsing \"{text}\": invalid syntax"
        )
    return int(text)


def _duration(name: str, text: str) -> int:
    try:
        return parse_go_duration_ns(text)
    except QueryError as exc:
        raise QueryError(f"unable to parse param '{name}': {exc}") from exc


def _tags(simple: Sequence[str], as_json: Sequence[str], param: str = "tags") -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in simple:
        key, sep, value = item.partition(":")
        if not sep:
            raise QueryError(f"malformed 'tag' parameter, expecting key:value, received: {item}")
        tags[key] = value
    for item in as_json:
        try:
            parsed = json.loads(item)
        except ValueError as exc:
            raise QueryError(
                f"malformed '{param}' parameter, cannot unmarshal JSON: {exc}"
            ) from exc
        if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
            raise QueryError(
                f"malformed '{param}' parameter, cannot unmarshal JSON: "
                "expected an object of string values"
            )
        tags.update(parsed)
    return tags


def v1_search(
    query: Mapping[str, str],
    tag_list: Sequence[str],
    tags_list: Sequence[str],
    now_ns: int | None = None,
) -> TraceQuery:
    """`GET /api/traces` parameters -> TraceQuery (service required, as in Jaeger)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    end_ns = _go_int("end", query["end"]) * 1000 if query.get("end") else now_ns
    if query.get("start"):
        start_ns = _go_int("start", query["start"]) * 1000
    else:
        lookback = query.get("lookback", "")
        lookback_ns = V1_DEFAULT_LOOKBACK_NS
        if lookback and lookback != "custom":
            days = re.fullmatch(r"(\d+)d", lookback)
            lookback_ns = (
                int(days.group(1)) * 86_400_000_000_000 if days else _duration("lookback", lookback)
            )
        start_ns = end_ns - lookback_ns
    tags = _tags(tag_list, tags_list)
    limit = V1_DEFAULT_LIMIT
    if query.get("limit"):
        text = query["limit"]
        if not re.fullmatch(r"[+-]?\d+", text):
            raise QueryError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
        limit = int(text)
    min_ns = _duration("minDuration", query["minDuration"]) if query.get("minDuration") else 0
    max_ns = _duration("maxDuration", query["maxDuration"]) if query.get("maxDuration") else 0
    service = query.get("service", "")
    if not service:
        raise QueryError("parameter 'service' is required")
    if limit <= 0:
        raise QueryError("invalid parameter: limit must be greater than 0")
    if start_ns > end_ns:
        raise QueryError("invalid parameter: start time must be before end time")
    if min_ns and max_ns and max_ns < min_ns:
        raise QueryError("'maxDuration' should be greater than 'minDuration'")
    return TraceQuery(
        service=service,
        operation=query.get("operation") or None,
        tags=tags,
        start_min_ns=start_ns,
        start_max_ns=end_ns,
        duration_min_ns=min_ns or None,
        duration_max_ns=max_ns or None,
        limit=limit,
    )


def parse_rfc3339_ns(name: str, text: str) -> int:
    """Go's time.Parse(time.RFC3339Nano, ...) -> Unix nanoseconds."""
    match = _RFC3339.match(text)
    if match is None:
        raise QueryError(
            f'malformed parameter {name}: parsing time "{text}" as '
            '"2006-01-02T15:04:05.999999999Z07:00": cannot parse'
        )
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    zone = match.group(8)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    fraction = (match.group(7) or "").ljust(9, "0")
    return seconds * 1_000_000_000 + int(fraction)


def _v3(query: Mapping[str, str], canonical: str, deprecated: str) -> tuple[str, str]:
    if query.get(canonical):
        return query[canonical], canonical
    return query.get(deprecated, ""), deprecated


def v3_search(query: Mapping[str, str]) -> TraceQuery:
    """`GET /api/v3/traces` parameters (snake_case, or the newer camelCase) -> TraceQuery."""
    service, _ = _v3(query, "query.serviceName", "query.service_name")
    operation, _ = _v3(query, "query.operationName", "query.operation_name")
    time_min, min_name = _v3(query, "query.startTimeMin", "query.start_time_min")
    time_max, max_name = _v3(query, "query.startTimeMax", "query.start_time_max")
    if not time_min or not time_max:
        raise QueryError("query.start_time_min and query.start_time_max are required")
    start_min_ns = parse_rfc3339_ns(min_name, time_min)
    start_max_ns = parse_rfc3339_ns(max_name, time_max)
    depth_text, depth_name = _v3(query, "query.searchDepth", "query.search_depth")
    if not depth_text and query.get("query.num_traces"):
        depth_text, depth_name = query["query.num_traces"], "query.num_traces"
    depth = V3_DEFAULT_SEARCH_DEPTH
    if depth_text:
        if not depth_text.isdigit():
            raise QueryError(
                f"malformed parameter {depth_name}: strconv.Atoi: parsing "
                f'"{depth_text}": invalid syntax'
            )
        depth = int(depth_text)
    durations: list[int | None] = []
    for canonical, deprecated in (
        ("query.durationMin", "query.duration_min"),
        ("query.durationMax", "query.duration_max"),
    ):
        text, name = _v3(query, canonical, deprecated)
        try:
            durations.append(parse_go_duration_ns(text) if text else None)
        except QueryError as exc:
            raise QueryError(f"malformed parameter {name}: {exc}") from exc
    attrs_text = query.get("query.attributes", "")
    tags = _tags((), [attrs_text], "query.attributes") if attrs_text else {}
    return TraceQuery(
        service=service or None,
        operation=operation or None,
        tags=tags,
        start_min_ns=start_min_ns,
        start_max_ns=start_max_ns,
        duration_min_ns=durations[0],
        duration_max_ns=durations[1],
        limit=depth if depth > 0 else V3_DEFAULT_SEARCH_DEPTH,
    )
