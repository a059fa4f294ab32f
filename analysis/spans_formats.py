"""Trace documents (Jaeger v1, OTLP-JSON incl. Jaeger v2 /api/v3, Zipkin v2) -> span rows.

One accumulator, `SpanRows`, collects the rows; each format adds spans to it, so a fetch of
many pages builds one frame at the end. Ids are normalised here (lower hex: trace 32 chars,
span 16), times to ns and ms; service, version, status, kind and attributes follow the one
rule of `meshcore.spanrows`, which the embedded trace store's recording follows too.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.frames import SPAN_COLUMNS, from_arrow
from meshcore.errors import BackendError, ConfigError
from meshcore.spanrows import KIND_NAMES, SpanColumns, otlp_tags

_FLUSH_ROWS = 100_000
_HEX = re.compile(r"[0-9a-fA-F]+")
_DEDUP_KEYS = ["trace_id", "span_id", "start_ns", "service", "operation", "kind"]
_STATUS_CODES = {"UNSET": 0, "OK": 1, "ERROR": 2}
_KIND_NUMBERS = {name: kind for kind, name in KIND_NAMES.items()}


class SpanRows:
    """The spans of a read, moved into arrow every `_FLUSH_ROWS` rows: millions of spans
    stay compact while fetching. `notes` (if given) gets a line for spans a backend answered
    twice."""

    def __init__(self, *, notes: list[str] | None = None) -> None:
        self._rows = SpanColumns()
        self._tables: list[pa.Table] = []
        self._flushed = 0
        self._documents: list[int] = []  # the first row of each document read
        self._notes = notes

    def __len__(self) -> int:
        return self._flushed + len(self._rows)

    def begin_document(self) -> None:
        """Mark where one backend answer (or file document) starts."""
        self._documents.append(len(self))

    def _flush(self) -> None:
        if len(self._rows):
            table = self._rows.table()
            self._tables.append(table)
            self._flushed += table.num_rows

    def add(self, **span: Any) -> None:
        """One span, with the keywords of `meshcore.spanrows.SpanColumns.add`."""
        self._rows.add(**span)
        if len(self._rows) >= _FLUSH_ROWS:
            self._flush()

    def frame(self) -> pd.DataFrame:
        """The spans frame; a span that came more than once with the same content, once.

        As Jaeger's query service does (its span-hash dedupe adjuster): a span reported twice,
        or a trace read on two overlapping pages, is one span; spans that share ids but differ
        in content are all kept. Copies inside one document (a store or file that holds a span
        twice) are counted in `notes`; a trace read again on another page is the search's own
        doing and is not.
        """
        self._flush()
        tables = self._tables or [SpanColumns().table()]
        frame = from_arrow(pa.concat_tables(tables), SPAN_COLUMNS)[0]
        same_key = frame.duplicated(subset=_DEDUP_KEYS, keep=False).to_numpy()
        if not same_key.any():  # the usual case, and cheap: no content compared
            return frame
        candidates = frame.loc[same_key]
        repeat = np.zeros(len(frame), dtype=bool)
        repeat[same_key] = candidates.duplicated().to_numpy()
        if self._notes is not None:
            self._note_repeats(candidates, np.flatnonzero(same_key))
        return frame.loc[~repeat].reset_index(drop=True)

    def _note_repeats(self, candidates: pd.DataFrame, rows: np.ndarray) -> None:
        starts = np.asarray(self._documents or [0])
        document = np.searchsorted(starts, rows, side="right") - 1
        content = pd.util.hash_pandas_object(candidates, index=False).to_numpy()
        per_document = pd.DataFrame({"content": content, "document": document})
        copies = per_document.groupby(["content", "document"]).size()
        twice = int((copies.groupby(level="content").max() - 1).sum())
        if twice and self._notes is not None:
            self._notes.append(
                f"{twice} duplicate spans (same trace, span id and content as another span of "
                "the same answer: reported twice) kept once, as Jaeger's query service does"
            )


def parse_document(doc: Any, rows: SpanRows) -> None:
    """Add every span of one decoded JSON document, whatever its format."""
    rows.begin_document()
    _parse(doc, rows)


def _parse(doc: Any, rows: SpanRows) -> None:
    if isinstance(doc, dict):
        if "data" in doc:
            if doc["data"] is None and doc.get("errors"):
                raise BackendError(f"trace backend answered an error: {_jaeger_error(doc)}")
            _parse(doc["data"] or [], rows)
        elif "traceID" in doc and "spans" in doc:
            parse_jaeger_v1([doc], rows)
        elif "result" in doc:
            _parse(doc["result"], rows)
        elif "trace" in doc and isinstance(doc["trace"], dict):
            _parse(doc["trace"], rows)
        elif any(k in doc for k in ("resourceSpans", "resource_spans", "batches")):
            resource_spans = doc.get("resourceSpans") or doc.get("resource_spans")
            parse_otlp(resource_spans or doc.get("batches") or [], rows)
        elif "error" in doc:
            raise BackendError(f"trace backend answered an error: {doc['error']}")
        else:
            raise ConfigError(f"not a trace document (keys {sorted(doc)[:5]}); {FORMATS_HINT}")
    elif isinstance(doc, list):
        if not doc:
            return
        first = doc[0]
        if isinstance(first, list):  # Zipkin /api/v2/traces: a list of traces
            for trace in doc:
                parse_zipkin(trace, rows)
        elif isinstance(first, dict) and "spans" in first:
            parse_jaeger_v1(doc, rows)
        elif isinstance(first, dict) and "id" in first and "traceId" in first:
            parse_zipkin(doc, rows)
        else:
            raise ConfigError(f"not a list of traces or spans; {FORMATS_HINT}")
    else:
        raise ConfigError(f"not a trace document ({type(doc).__name__}); {FORMATS_HINT}")


FORMATS_HINT = "expected Jaeger v1/v2, OTLP-JSON or Zipkin v2 JSON"


def parse_jaeger_v1(traces: Iterable[Mapping[str, Any]], rows: SpanRows) -> None:
    """Jaeger's UI/API model: µs times, tags with types, processes by id."""
    for trace in traces:
        processes = trace.get("processes") or {}
        resources: dict[str, dict[str, Any]] = {}  # a trace's spans share a few processes
        for span in trace.get("spans") or []:
            process = span.get("process") or processes.get(span.get("processID"), {})
            trace_id = _hex_id(span["traceID"], 32)
            tags = _jaeger_tags(span.get("tags"))
            process_id = None if "process" in span else span.get("processID")
            resource = resources.get(process_id) if isinstance(process_id, str) else None
            if resource is None:
                resource = _jaeger_tags(process.get("tags"))
                if isinstance(process_id, str):
                    resources[process_id] = resource
            rows.add(
                trace_id=trace_id,
                span_id=_hex_id(span["spanID"], 16),
                parent_id=_jaeger_parent(span, trace_id),
                service_name=process.get("serviceName"),
                operation=span.get("operationName"),
                kind=tags.get("span.kind"),
                start_ns=int(span["startTime"]) * 1000,
                duration_ms=int(span.get("duration") or 0) / 1000,
                tags=tags,
                resource=resource,
            )


def _jaeger_parent(span: Mapping[str, Any], trace_id: str) -> str | None:
    """Jaeger's rule: the first CHILD_OF reference within the same trace is the parent.

    A span with only FOLLOWS_FROM references hangs below the first of those (same trace).
    """
    refs = [
        r for r in span.get("references") or [] if _hex_id(r.get("traceID", ""), 32) == trace_id
    ]
    for wanted in ("CHILD_OF", "FOLLOWS_FROM"):
        for ref in refs:
            if ref.get("refType", "CHILD_OF") == wanted:
                return _hex_id(ref["spanID"], 16)
    parent = span.get("parentSpanID")  # very old Jaeger JSON
    return _hex_id(parent, 16) if parent and int(parent, 16) else None


def _jaeger_tags(tags: Any) -> dict[str, Any]:
    # Nearly every tag is a string: skip the typed conversion for those.
    return {
        t["key"]: t.get("value") if t.get("type", "string") == "string" else _jaeger_value(t)
        for t in tags or ()
    }


def _jaeger_value(tag: Mapping[str, Any]) -> Any:
    value: Any = tag.get("value")
    kind = tag.get("type", "string")
    if kind == "int64":
        return int(value)  # big int64 arrive as strings to survive JavaScript
    if kind == "float64":
        return float(value)
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    return value


def _jaeger_error(doc: Mapping[str, Any]) -> str:
    errors = doc.get("errors") or []
    first = errors[0] if errors else {}
    return str(first.get("msg", first)) if isinstance(first, dict) else str(first)


def parse_otlp(resource_spans: Iterable[Mapping[str, Any]], rows: SpanRows) -> None:
    """OTLP-JSON: ids hex or base64, kinds int or "SPAN_KIND_*", attributes typed or plain."""
    for rs in resource_spans:
        resource = _otlp_attributes((rs.get("resource") or {}).get("attributes"))
        service = resource.get("service.name")
        scopes = _get(rs, "scopeSpans", "scope_spans", "instrumentationLibrarySpans") or []
        for scope_spans in scopes:
            scope = _get(scope_spans, "scope", "instrumentationLibrary") or {}
            for span in scope_spans.get("spans") or []:
                start = int(_get(span, "startTimeUnixNano", "start_time_unix_nano") or 0)
                end = int(_get(span, "endTimeUnixNano", "end_time_unix_nano") or start)
                status = span.get("status") or {}
                kind = _otlp_kind(span.get("kind", 0))
                tags = otlp_tags(
                    _otlp_attributes(span.get("attributes")),
                    kind=kind,
                    status_code=_STATUS_CODES.get(_status_name(status.get("code")), 0),
                    status_message=str(status.get("message") or ""),
                    scope_name=str(scope.get("name") or ""),
                    scope_version=str(scope.get("version") or ""),
                    trace_state=str(_get(span, "traceState", "trace_state") or ""),
                )
                parent = _get(span, "parentSpanId", "parent_span_id")
                parent_id = _otlp_id(parent, 8) if parent else None
                rows.add(
                    trace_id=_otlp_id(_get(span, "traceId", "trace_id"), 16),
                    span_id=_otlp_id(_get(span, "spanId", "span_id"), 8),
                    parent_id=parent_id if parent_id and int(parent_id, 16) else None,
                    service_name=service,
                    operation=span.get("name"),
                    kind=kind,
                    start_ns=start,
                    duration_ms=(end - start) / 1e6,
                    tags=tags,
                    resource=resource,
                )


def _otlp_kind(value: Any) -> int:
    """OTLP's kind number, from a number or a name (`SPAN_KIND_SERVER`, `server`)."""
    if isinstance(value, int):
        return value
    return _KIND_NUMBERS.get(str(value or "").lower().removeprefix("span_kind_"), 0)


def _otlp_attributes(attrs: Any) -> dict[str, Any]:
    if not attrs:
        return {}
    if isinstance(attrs, dict):  # plain {"key": value} from some stores
        return dict(attrs)
    return {a["key"]: _otlp_value(a.get("value")) for a in attrs}


def _otlp_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_otlp_value(v) for v in value["arrayValue"].get("values") or []]
    if "kvlistValue" in value:
        return _otlp_attributes(value["kvlistValue"].get("values"))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def _status_name(code: Any) -> str:
    names = {0: "UNSET", 1: "OK", 2: "ERROR"}
    if isinstance(code, int):
        return names.get(code, "UNSET")
    text = str(code or "UNSET").upper()
    return text.removeprefix("STATUS_CODE_")


def parse_zipkin(spans: Iterable[Mapping[str, Any]], rows: SpanRows) -> None:
    """Zipkin API v2: µs times, string tags, kind absent for local spans."""
    for span in spans:
        tags = dict(span.get("tags") or {})
        parent = span.get("parentId")
        duration = span.get("duration")
        rows.add(
            trace_id=_hex_id(span["traceId"], 32),
            span_id=_hex_id(span["id"], 16),
            parent_id=_hex_id(parent, 16) if parent else None,
            service_name=(span.get("localEndpoint") or {}).get("serviceName"),
            operation=span.get("name"),
            kind=span.get("kind"),
            start_ns=int(span.get("timestamp") or 0) * 1000,
            duration_ms=int(duration) / 1000 if duration is not None else float("nan"),
            tags=tags,
            resource={},
        )


def _get(obj: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in obj:
            return obj[name]
    return None


def _hex_id(value: Any, width: int) -> str:
    return str(value).lower().rjust(width, "0")


def _otlp_id(value: Any, nbytes: int) -> str:
    """OTLP ids are hex in Jaeger's answers but base64 in the protobuf JSON mapping.

    Full-length hex wins; padded base64 always holds a non-hex character, so the two cannot
    be confused; a short all-hex id (leading zeros dropped) is read as hex.
    """
    text = str(value or "")
    is_hex = _HEX.fullmatch(text) is not None
    if is_hex and len(text) == 2 * nbytes:
        return text.lower()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) == nbytes:
        return raw.hex()
    if is_hex and len(text) < 2 * nbytes:
        return text.lower().rjust(2 * nbytes, "0")
    raise ConfigError(f"id {text!r} is neither {nbytes}-byte hex nor base64; fix the trace file")
